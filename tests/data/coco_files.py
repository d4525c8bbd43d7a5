"""Builders of small COCO files for the data tests: person records, plausible skeletons,
images of a chosen mode, and the json itself, all written into pytest's temp folders."""
import json

import numpy as np
from PIL import Image

from mrcnn_kp import constants


def person_annotation(ann_id, image_id, box, keypoints=None, iscrowd=0, segmentation="box"):
    """A COCO person record; box (x, y, w, h); keypoints a [17, 3] list or a raw flat list."""
    x, y, w, h = box
    if segmentation == "box":
        segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    if keypoints is None:
        flat = [0] * (3 * constants.NUM_KEYPOINTS)
    elif np.ndim(keypoints) == 2:
        flat = [float(v) for v in np.asarray(keypoints).reshape(-1)]
    else:
        flat = list(keypoints)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd,
            "bbox": [x, y, w, h], "area": float(w * h), "segmentation": segmentation,
            "keypoints": flat, "num_keypoints": int(sum(1 for v in flat[2::3] if v > 0))}


def standing_keypoints(x, y, scale=1.0):
    """A plausible [17, 3] skeleton with every joint visible, top-left near (x, y)."""
    offsets = np.array([[20, 5], [23, 3], [17, 3], [26, 5], [14, 5], [30, 15], [10, 15],
                        [33, 28], [7, 28], [35, 40], [5, 40], [26, 42], [14, 42], [27, 58],
                        [13, 58], [28, 74], [12, 74]], np.float32) * scale
    kps = np.zeros((constants.NUM_KEYPOINTS, 3), np.float32)
    kps[:, 0] = x + offsets[:, 0]
    kps[:, 1] = y + offsets[:, 1]
    kps[:, 2] = 2
    return kps


def write_image(path, array):
    """Save an array with Pillow (uint8 [H, W] gray, [H, W, 3] RGB, [H, W, 4] RGBA, uint16)."""
    Image.fromarray(array).save(path)


def write_coco(folder, images, annotations):
    """Write person_keypoints.json in folder; returns its path."""
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person",
                            "keypoints": list(constants.KEYPOINT_NAMES)}]}
    path = folder / "person_keypoints.json"
    path.write_text(json.dumps(data))
    return path
