"""The built-in dataset: stick-figure people on cluttered backgrounds, as COCO keypoints.

    json_path, image_dir = generate_synthetic_coco(num_images=300, split="train")
    dataset = CocoKeypointDataset(json_path, image_dir)      # same loader, pipeline, COCOeval
    # or in one step:
    dataset = synthetic_dataset("train", num_images=300)

Each image holds 0-4 people with 17 joints in COCO order, drawn by data.synthetic_people
(stick figures in varied poses on cluttered backgrounds); the instance mask is the visible
part of the drawn body (RLE), joints covered by a person in front or hidden behind the body
get v = 1, joints outside the image are (0, 0, 0).

Images and json are written once into a cache folder keyed by the generation parameters
(~/.cache/mrcnn_kp/synthetic/<hash>/<split>/, or $MRCNN_KP_CACHE/synthetic/...); a later call
with the same parameters reuses them. Every image depends only on (seed, split, index): the set
is deterministic, and "train" and "val" never share an image.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn_kp import constants
from mrcnn_kp.data.synthetic_people import PEOPLE_PER_IMAGE_PROBS, render_image
from mrcnn_kp.utils import atomic_write_text, get_logger

# Bump when the drawing (data.synthetic_people) changes, so old caches are not reused.
GENERATOR_VERSION = 1
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 300, "val": 50, "test": 50}


# ------------------------------------------------------------------ one image's records
def _annotation(person, image_id, annotation_id):
    mask = person["mask"]
    area = int(mask.sum())
    if area == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    bbox = [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]),
            float(rows[-1] + 1 - rows[0])]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    keypoints = person["keypoints"]
    flat = []
    for x, y, v in keypoints:
        flat.extend([round(float(x), 2), round(float(y), 2), int(v)])
    return {"id": annotation_id, "image_id": image_id, "category_id":
            constants.PERSON_CATEGORY_ID, "iscrowd": 0, "area": area, "bbox": bbox,
            "segmentation": rle, "keypoints": flat,
            "num_keypoints": int((keypoints[:, 2] > 0).sum())}


# ------------------------------------------------------------------ the dataset on disk
def cache_root():
    """$MRCNN_KP_CACHE or ~/.cache/mrcnn_kp."""
    return Path(os.environ.get("MRCNN_KP_CACHE", Path.home() / ".cache" / "mrcnn_kp"))


def params_hash(**params):
    text = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def generate_synthetic_coco(out_dir=None, num_images=None, image_size=256, seed=0,
                            split="train", image_format="jpg", max_people=4):
    """Write (or reuse) one split of the synthetic set -> (json_path, image_dir).

    out_dir: root folder; default cache_root()/synthetic/<hash of the parameters>. The split
        goes to <out_dir>/<split>/person_keypoints_<split>.json and <out_dir>/<split>/images/.
    num_images: default DEFAULT_SIZES[split]. image_format: "jpg" (quality 95) or "png".
    Image i of a split depends only on (seed, split, i).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if not 0 <= max_people < len(PEOPLE_PER_IMAGE_PROBS):
        raise ValueError(f"max_people must be in 0..{len(PEOPLE_PER_IMAGE_PROBS) - 1}")
    num_images = DEFAULT_SIZES[split] if num_images is None else int(num_images)
    if out_dir is None:
        out_dir = cache_root() / "synthetic" / params_hash(
            image_size=int(image_size), seed=int(seed), image_format=image_format,
            max_people=int(max_people))
    split_dir = Path(out_dir) / split
    image_dir = split_dir / "images"
    json_path = split_dir / f"person_keypoints_{split}.json"
    # The json names its image count and is written last: present and matching = complete.
    if json_path.is_file():
        try:
            with open(json_path, encoding="utf-8") as f:
                info = json.load(f).get("info", {})
            if info.get("num_images") == num_images and info.get("version") == GENERATOR_VERSION:
                return str(json_path), str(image_dir)
        except (json.JSONDecodeError, OSError):
            pass
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([int(seed), SPLITS[split], index])
        pixels, people = render_image(rng, image_size, max_people)
        image_id = index + 1
        file_name = f"{split}_{index:06d}.{image_format}"
        pil = Image.fromarray(pixels)
        if image_format == "jpg":
            pil.save(image_dir / file_name, quality=95)
        else:
            pil.save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": int(image_size),
                       "width": int(image_size)})
        for person in people:
            ann = _annotation(person, image_id, len(annotations) + 1)
            if ann is not None:
                annotations.append(ann)
    data = {
        "info": {"description": "mrcnn_kp synthetic stick-figure people", "split": split,
                 "seed": int(seed), "num_images": num_images, "image_size": int(image_size),
                 "version": GENERATOR_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": constants.PERSON_CATEGORY_ID, "name": "person",
                        "supercategory": "person",
                        "keypoints": list(constants.KEYPOINT_NAMES),
                        "skeleton": [[a + 1, b + 1] for a, b in constants.SKELETON]}],
    }
    atomic_write_text(json_path, json.dumps(data))
    get_logger("mrcnn_kp.data.synthetic").info(
        "synthetic %s set: %d images, %d people written to %s", split, num_images,
        len(annotations), split_dir)
    return str(json_path), str(image_dir)


def synthetic_dataset(split="train", num_images=None, image_size=256, seed=0, out_dir=None,
                      **dataset_kwargs):
    """generate_synthetic_coco + CocoKeypointDataset in one call."""
    from mrcnn_kp.data.coco import CocoKeypointDataset

    json_path, image_dir = generate_synthetic_coco(out_dir, num_images, image_size, seed, split)
    dataset_kwargs.setdefault("name", f"synthetic-{split}")
    return CocoKeypointDataset(json_path, image_dir, **dataset_kwargs)
