"""torchvision's Keypoint R-CNN converted to Keras gives torchvision's detections on real photos
at torchvision's default sizes: min side 800, max side 1333, 1000 proposals per level before
NMS, 1000 after, 100 detections per image, score threshold 0.

Three photos of skimage.data (a motorcycle 444 x 640, the rocket 426 x 640, the astronaut 500
x 461: landscape and portrait, no side a multiple of 32), each resized by the model (to
800 x 1153, 800 x 1201, 867 x 800) and padded by torchvision to 800 x 1184, 800 x 1216 and
896 x 800. torchvision runs keypointrcnn_resnet50_fpn with seeded random weights in the
peers venv (tests/torchvision_reference.py): its own initialisation with the batch-norm
statistics and the RPN / predictor layers re-drawn, the predictor weights spread (--spread 5)
so that scores rarely tie and the best boxes lie all over the image, many of them thin
slivers on the bottom and right edges (legacy ROIAlign widens those past the image), and
batch-norm epsilon 0, as torchvision runs its published COCO_V1 weights. Our side converts the
.pth with `mrcnn-kp convert --from torchvision` and runs it:
- through `mrcnn-kp predict` (TensorFlow, this process),
- through `MaskRCNN.detect` on JAX (tests/keras_side.py in a process of its own),
- through `MaskRCNN.detect` in mixed_bfloat16 (TensorFlow, its own process), to a looser bound.

A detection of torchvision's is matched when one of ours (one to one) has every box
coordinate within 0.5 px (original pixels) and the score within 1 % of torchvision's. Pass:
at least 98 % of all detections matched, the top 20 of every image matched, every joint of a
matched detection within 1 px. The unmatched rest are near-ties: two proposals of adjacent
anchors whose scores differ by ~1e-7, where float rounding (ours and torch's differ at that
level) decides which one NMS keeps.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrcnn_kp import cli
from mrcnn_kp.config import TorchvisionKeypointConfig
from mrcnn_kp.utils import get_logger
from torchvision_venv import torchvision_python

HERE = Path(__file__).resolve().parent
get_logger()  # bind the package logger's handler to the real stderr now (see that module)

SEED, SPREAD, DETECTIONS = 2, 5.0, 100
MIN_MATCHED, TOP = 0.98, 20
BOX_PX, SCORE_RTOL, KEYPOINT_PX = 0.5, 0.01, 1.0
# mixed_bfloat16: bf16 activations (8-bit mantissa) move the thin edge boxes of these weights
# by pixels and reorder their near-equal scores (the best 20 of a photo span 0.05-0.15), so the
# bound is on sets, not one-to-one partners: of each photo's best BF16_TOP detections at least
# BF16_MIN_FOUND have a detection of ours with IoU >= BF16_MIN_IOU and a score within
# BF16_SCORE_ATOL. Keypoints are not compared in bf16: on random weights the 56 x 56 maps are
# flat and their argmax jumps with the smallest change.
BF16_TOP, BF16_MIN_FOUND, BF16_MIN_IOU, BF16_SCORE_ATOL = 20, 0.85, 0.5, 0.02

pytestmark = [pytest.mark.slow, pytest.mark.tf_only]


def photos():
    """The three photos: uint8 RGB crops of skimage.data images, sides not multiples of 32."""
    from skimage import data

    return [np.ascontiguousarray(data.stereo_motorcycle()[0][20:464, 50:690]),  # 444 x 640
            np.ascontiguousarray(data.rocket()[1:427]),  # 426 x 640
            np.ascontiguousarray(data.astronaut()[6:506, 30:491])]  # 500 x 461


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    python = torchvision_python()
    folder = tmp_path_factory.mktemp("torchvision_photos")
    images = photos()
    np.savez(folder / "photos.npz", **{f"image{i}": im for i, im in enumerate(images)})
    proc = subprocess.run(
        [python, str(HERE / "torchvision_reference.py"), str(folder), "--images",
         str(folder / "photos.npz"), "--min-size", "800", "--max-size", "1333",
         "--pre-nms", "1000", "--post-nms", "1000", "--detections", str(DETECTIONS),
         "--score-thresh", "0", "--seed", str(SEED), "--spread", str(SPREAD), "--bn-eps", "0",
         "--no-pyramid"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(folder / "reference.npz") as z:
        ref = {k: z[k] for k in z.files}
    ref.update(folder=folder, images=images)
    return ref


@pytest.fixture(scope="module")
def converted(reference):
    """`mrcnn-kp convert --from torchvision` at the default preset, score threshold 0 and the
    published weights' batch-norm epsilon."""
    folder = reference["folder"]
    TorchvisionKeypointConfig(DETECTION_MIN_CONFIDENCE=0.0, BACKBONE_BN_EPSILON=0.0).to_json(
        folder / "config.json")
    out = folder / "tv.weights.h5"
    assert cli.main(["convert", "--from", "torchvision", str(folder / "model.pth"), str(out),
                     "--config", str(folder / "config.json"), "--strict"]) == 0
    return out


def reference_detections(reference, i):
    n = int(reference["num_detections"][i])
    return (reference["boxes"][i, :n], reference["scores"][i, :n],
            reference["keypoints"][i, :n, :, :2])


def match(ref_boxes, ref_scores, boxes, scores, box_px=BOX_PX, score_rtol=SCORE_RTOL,
          score_atol=0.0):
    """Each reference detection's partner among ours (-1: none): the closest unused box with
    every coordinate within box_px and the score within score_rtol (relative) + score_atol."""
    partner = np.full(len(ref_boxes), -1)
    used = np.zeros(len(boxes), bool)
    for r, (box, score) in enumerate(zip(ref_boxes, ref_scores)):
        distance = np.abs(boxes - box).max(-1)
        fits = (distance <= box_px) & (np.abs(scores - score) <= score_rtol * abs(score)
                                       + score_atol) & ~used
        if fits.any():
            partner[r] = int(np.argmin(np.where(fits, distance, np.inf)))
            used[partner[r]] = True
    return partner


def check_equivalence(reference, ours):
    """ours: per image (boxes [N, 4] x1 y1 x2 y2, scores [N], keypoints [N, 17, 2]), original
    pixels. Asserts the module's pass criterion; returns the matched fraction."""
    matched = total = 0
    for i, (boxes, scores, keypoints) in enumerate(ours):
        ref_boxes, ref_scores, ref_keypoints = reference_detections(reference, i)
        assert len(ref_boxes) == DETECTIONS and len(boxes) == DETECTIONS, (i, len(boxes))
        partner = match(ref_boxes, ref_scores, boxes, scores)
        found = partner >= 0
        joint_error = np.abs(keypoints[partner[found]] - ref_keypoints[found]).max()
        resized = tuple(int(v) for v in reference[f"image_size_{i}"])
        print(f"photo {i} {reference['images'][i].shape[:2]} -> {resized}: "
              f"{found.sum()} of {len(found)} matched, "
              f"top {TOP} {found[:TOP].sum()}, joints within {joint_error:.2e} px")
        assert found[:TOP].all(), np.flatnonzero(~found[:TOP])
        assert joint_error <= KEYPOINT_PX
        matched, total = matched + found.sum(), total + len(found)
    assert matched >= MIN_MATCHED * total, (matched, total)
    return matched / total


def test_photos_need_resizing_and_reach_the_image_border(reference):
    """The inputs are what the module says: resized, padded, and among the best detections a
    box thinner than one P2 feature pixel (4 resized pixels) on the bottom or right edge,
    which legacy ROIAlign samples past the image's border."""
    assert [tuple(reference[f"image_size_{i}"]) for i in range(3)] == [
        (800, 1153), (800, 1201), (867, 800)]
    assert [tuple(reference[f"batch_shape_{i}"][2:]) for i in range(3)] == [
        (800, 1184), (800, 1216), (896, 800)]
    assert reference["num_detections"].tolist() == [DETECTIONS] * 3
    on_edge = thin_on_edge = 0
    for i, image in enumerate(reference["images"]):
        boxes = reference_detections(reference, i)[0][:TOP]
        height, width = image.shape[:2]
        ratio_y, ratio_x = (reference[f"image_size_{i}"] / np.array([height, width]))
        edge = (boxes[:, 2] >= width - 0.5) | (boxes[:, 3] >= height - 0.5)
        thin = ((boxes[:, 2] - boxes[:, 0]) * ratio_x < 4) | \
            ((boxes[:, 3] - boxes[:, 1]) * ratio_y < 4)
        on_edge += int(edge.sum())
        thin_on_edge += int((edge & thin).sum())
    assert on_edge >= 3 and thin_on_edge >= 1, (on_edge, thin_on_edge)


def test_predict_command_gives_torchvisions_detections(reference, converted, tmp_path):
    """`mrcnn-kp predict photo*.png --weights converted.weights.h5`: predictions.json in image
    pixels (COCO boxes x, y, w, h; keypoints (x, y) - KEYPOINT_OFFSET)."""
    from PIL import Image

    from mrcnn_kp.inference.coco_eval import KEYPOINT_OFFSET

    paths = []
    for i, image in enumerate(reference["images"]):
        paths.append(tmp_path / f"photo{i}.png")
        Image.fromarray(image).save(paths[-1])
    out = tmp_path / "predictions"
    assert cli.main(["predict", *map(str, paths), "--weights", str(converted), "--output",
                     str(out), "--no-pictures"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    names = {im["id"]: im["file_name"] for im in
             json.loads((out / "images.json").read_text())}
    ours = []
    for i in range(3):
        mine = [r for r in records if names[r["image_id"]] == f"photo{i}.png"]
        x, y, w, h = np.array([r["bbox"] for r in mine], np.float64).T
        keypoints = np.array([r["keypoints"] for r in mine], np.float64).reshape(len(mine), -1, 3)
        ours.append((np.stack([x, y, x + w, y + h], -1), np.array([r["score"] for r in mine]),
                     keypoints[..., :2] + KEYPOINT_OFFSET))
    check_equivalence(reference, ours)


def run_keras_side(reference, converted, backend, precision="float32"):
    folder = reference["folder"]
    out = folder / f"ours_{backend}_{precision}.npz"
    env = dict(os.environ, KERAS_BACKEND=backend)
    if backend == "jax":
        env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, str(HERE / "keras_side.py"), str(converted),
                           str(folder / "photos.npz"), str(out), "--precision", precision],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as z:
        return [(z[f"rois_{i}"], z[f"scores_{i}"], z[f"keypoints_{i}"][..., :2])
                for i in range(3)]


def test_maskrcnn_detect_on_jax_gives_torchvisions_detections(reference, converted):
    pytest.importorskip("jax", reason="jax is part of the test extra: pip install -e '.[test]'")
    check_equivalence(reference, run_keras_side(reference, converted, "jax"))


def box_iou(a, b):
    """IoU of boxes a [N, 4] and b [M, 4] (x1, y1, x2, y2) -> [N, M]."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    area_a, area_b = (np.prod(x[:, 2:] - x[:, :2], axis=-1) for x in (a, b))
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def test_mixed_bfloat16_stays_close_to_torchvision(reference, converted):
    """bf16 on TensorFlow (oneDNN), float32 torchvision: the bound of BF16_* above."""
    ours = run_keras_side(reference, converted, "tensorflow", "mixed_bfloat16")
    for i, (boxes, scores, _) in enumerate(ours):
        ref_boxes, ref_scores, _ = (a[:BF16_TOP] for a in reference_detections(reference, i))
        close = (box_iou(ref_boxes, boxes) >= BF16_MIN_IOU) & \
            (np.abs(scores[None, :] - ref_scores[:, None]) <= BF16_SCORE_ATOL)  # [T, N]
        found = close.any(axis=1)
        print(f"photo {i} bf16: {found.sum()} of torchvision's best {BF16_TOP} found (IoU >= "
              f"{BF16_MIN_IOU}, score within {BF16_SCORE_ATOL})")
        assert found.mean() >= BF16_MIN_FOUND, np.flatnonzero(~found)
