"""mrcnn_kp.weights.torchvision and the LAYOUT "torchvision" model, against torchvision itself.

The equivalence tests run torchvision's keypointrcnn_resnet50_fpn with seeded random weights
(weights=None, weights_backbone=None, batch-norm and predictor layers re-drawn) in a
torchvision venv of its own (.ci/run builds it), through a subprocess
(tests/torchvision_reference.py) that exchanges a .pth and .npz files: torchvision never runs
in this process, so the package and its test extra stay TensorFlow-only. The venv's python is
$PEERS_TV_PYTHON, else <tmp>/peers/tv/bin/python, else this python when it has torchvision (the
`torchvision` extra); without one these tests skip, and fail under CI=true (.ci/run builds the
venv). The .pth goes through `mrcnn-kp convert --from torchvision`, then our model runs on the
same two images, 224 x 320 and 300 x 224 (min size 224, max size 320: no resizing; torchvision
runs each on its own, padded to 224 x 320 and 320 x 224, where its P6 anchors are 56 px apart
along the 224 side; ours places them at the top-left of its 320 x 320 canvas), with the same
limits (500 pre-NMS per level, 300 proposals, 8 detections).
TensorFlow only
(ResNet-50 twice is the budget); the layout's pieces also run on JAX in tests/ops/test_anchors.py
and tests/model/test_{resnet,torchvision_layout,rpn,proposals,detection}.py.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from torchvision_venv import torchvision_python

from mrcnn_kp import cli
from mrcnn_kp.config import Config, TorchvisionKeypointConfig
from mrcnn_kp.weights.torchvision import (TorchvisionWeightsError, normalize_keys, to_keras,
                                          torchvision_weight_map)
from mrcnn_kp.utils import get_logger

TESTS = Path(__file__).resolve().parents[1]
# The package logger's handler binds sys.stderr when first made: make it now, not inside a
# fixture whose captured stream pytest closes afterwards.
get_logger()
SHAPES, MIN_SIZE, SIZE = ((224, 320), (300, 224)), 224, 320  # SIZE: max side and our canvas
IMAGES, PRE_NMS, POST_NMS, DETECTIONS = len(SHAPES), 500, 300, 8


def small_config(**overrides):
    values = dict(IMAGES_PER_GPU=IMAGES, IMAGE_MIN_DIM=MIN_SIZE, IMAGE_MAX_DIM=SIZE,
                  IMAGE_RESIZE_MAX_SIDE=SIZE, PRE_NMS_LIMIT=PRE_NMS,
                  POST_NMS_ROIS_INFERENCE=POST_NMS, DETECTION_MAX_INSTANCES=DETECTIONS)
    values.update(overrides)
    return TorchvisionKeypointConfig(**values)


# ------------------------------------------------------------------------ no torchvision needed
def test_weight_map_needs_the_torchvision_layout():
    with pytest.raises(TorchvisionWeightsError, match="LAYOUT 'torchvision'"):
        torchvision_weight_map(Config())
    rows = torchvision_weight_map(TorchvisionKeypointConfig())
    assert len(rows) == 313  # every tensor of keypointrcnn_resnet50_fpn but 53 BN counters
    assert len({r.key for r in rows}) == 313
    resnet101 = torchvision_weight_map(TorchvisionKeypointConfig(BACKBONE="resnet101"))
    assert len(resnet101) == 313 + 17 * 15  # 17 more blocks of 3 convs + 3 BNs x 4


def test_fc6_becomes_a_7x7_conv_kernel_with_torch_flatten_order():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(5, 3 * 7 * 7)).astype(np.float32)  # Linear(C*H*W -> 5)
    x = rng.normal(size=(7, 7, 3)).astype(np.float32)  # one pooled ROI, channels last
    torch_out = weight @ x.transpose(2, 0, 1).reshape(-1)  # torch flattens (C, H, W)
    kernel = to_keras(weight, "fc_conv", (7, 7, 3, 5))
    np.testing.assert_allclose(np.einsum("hwc,hwco->o", x, kernel), torch_out, rtol=1e-5)


def test_delta_rows_move_to_our_order():
    dense = to_keras(np.arange(8 * 2, dtype=np.float32).reshape(8, 2), "dense_delta", (2, 8))
    assert dense[0].tolist() == [2, 0, 6, 4, 10, 8, 14, 12]  # (dy, dx, dh, dw) per class
    bias = to_keras(np.arange(8, dtype=np.float32), "bias_delta", (8,))
    assert bias.tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
    conv = to_keras(np.arange(12, dtype=np.float32).reshape(12, 1, 1, 1), "conv_delta",
                    (1, 1, 1, 12))
    assert conv[0, 0, 0].tolist() == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10]
    deconv = to_keras(np.zeros((512, 17, 4, 4), np.float32), "deconv", (4, 4, 17, 512))
    assert deconv.shape == (4, 4, 17, 512)


def test_old_torchvision_key_names_are_read_under_todays():
    state = normalize_keys({"backbone.fpn.inner_blocks.0.weight": 1, "rpn.head.conv.bias": 2,
                            "backbone.fpn.layer_blocks.3.0.bias": 3})
    assert list(state) == ["backbone.fpn.inner_blocks.0.0.weight", "rpn.head.conv.0.0.bias",
                           "backbone.fpn.layer_blocks.3.0.bias"]


def test_the_published_coco_v1_file_gets_torchvisions_batch_norm_epsilon(tmp_path,
                                                                          monkeypatch):
    """torchvision runs COCO_V1 with batch-norm epsilon 0 (overwrite_eps); the converter
    recognises the file by its sha256 (here a stand-in file's) and says so in the config,
    unless the config sets an epsilon itself."""
    import hashlib

    from mrcnn_kp.weights import torchvision as tv_weights

    published, other = tmp_path / "published.pth", tmp_path / "other.pth"
    published.write_bytes(b"published weights")
    other.write_bytes(b"fine-tuned weights")
    monkeypatch.setattr(tv_weights, "TORCHVISION_COCO_V1_SHA256",
                        hashlib.sha256(b"published weights").hexdigest())
    config = TorchvisionKeypointConfig()
    assert config.BACKBONE_BN_EPSILON is None
    assert tv_weights.config_for_source(config, published).BACKBONE_BN_EPSILON == 0.0
    assert tv_weights.config_for_source(config, other) is config
    own = config.copy(BACKBONE_BN_EPSILON=1e-5)
    assert tv_weights.config_for_source(own, published) is own


def test_pickled_code_is_refused(tmp_path, capsys):
    torch = pytest.importorskip("torch")

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"conv1.weight": torch.zeros(1), "payload": Payload()}, tmp_path / "evil.pth")
    assert cli.main(["convert", "--from", "torchvision", str(tmp_path / "evil.pth"),
                     str(tmp_path / "out.weights.h5")]) == 1
    assert "evil.pth" in capsys.readouterr().err
    assert not (tmp_path / "out.weights.h5").exists()


# ------------------------------------------------------------------------ against torchvision
def test_exact_decoder_equals_heatmaps_to_keypoints(tmp_path):
    """ops.keypoints.decode_heatmaps_exact against torchvision's heatmaps_to_keypoints itself
    (tests/torchvision_reference.py --decode), on flat random maps (an untrained head's) and
    noisy peaks, for roi sides from 1 to ~800 px."""
    from keras import ops

    from mrcnn_kp.ops.keypoints import decode_heatmaps_exact

    rng = np.random.default_rng(0)
    sides = np.array([1.0, 1.3, 2.5, 7.0, 55.2, 56.0, 57.9, 113.0, 250.4, 512.0, 799.6] * 2)
    xy = rng.uniform(0, 50, (len(sides), 2))
    rois = np.concatenate([xy, xy + np.stack([sides, rng.permutation(sides)], -1)],
                          axis=1).astype(np.float32)
    flat = rng.normal(size=(len(sides) // 2, 56, 56, 4))
    yy, xx = np.mgrid[0:56, 0:56]
    centres = rng.uniform(2, 53, (len(sides) // 2, 4, 2))
    d2 = (xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2
    peaks = 8.0 * np.exp(-d2 / (2 * rng.uniform(0.3, 3.0, (len(sides) // 2, 4, 1, 1)) ** 2))
    peaks = peaks.transpose(0, 2, 3, 1) + 0.01 * rng.normal(size=flat.shape)
    maps = np.concatenate([flat, peaks]).astype(np.float32)
    np.savez(tmp_path / "in.npz", logits=maps, boxes=rois)
    proc = subprocess.run([torchvision_python(), str(TESTS / "torchvision_reference.py"),
                           "--decode", str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as z:
        want, want_scores = z["keypoints"], z["scores"]
    got = ops.convert_to_numpy(decode_heatmaps_exact(maps, rois, max_pixels=800))
    error = np.abs(got[..., :2] - want[..., :2]).max()
    print(f"{got.shape[0] * got.shape[1]} joints: max error {error:.2e} px, max score error "
          f"{np.abs(got[..., 2] - want_scores).max():.2e}")
    assert error <= 1e-3  # the same pixel as torchvision's, every joint
    np.testing.assert_allclose(got[..., 2], want_scores, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    python = torchvision_python()
    folder = tmp_path_factory.mktemp("torchvision")
    proc = subprocess.run(
        [python, str(TESTS / "torchvision_reference.py"), str(folder),
         "--shapes", ",".join(f"{h}x{w}" for h, w in SHAPES), "--min-size", str(MIN_SIZE),
         "--max-size", str(SIZE), "--pre-nms", str(PRE_NMS), "--post-nms", str(POST_NMS),
         "--detections", str(DETECTIONS), "--seed", "0"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(folder / "reference.npz") as z:
        ref = {k: z[k] for k in z.files}
    with np.load(folder / "images.npz") as z:
        ref["images"] = [z[f"image{i}"] for i in range(IMAGES)]
    ref["pth"] = folder / "model.pth"
    ref["folder"] = folder
    ref["python"] = python
    return ref


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    """`mrcnn-kp convert --from torchvision` on the reference .pth, with the test's config."""
    folder = tmp_path_factory.mktemp("converted")
    small_config().to_json(folder / "config.json")
    out = folder / "tv.weights.h5"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["convert", "--from", "torchvision", str(reference["pth"]), str(out),
                           "--config", str(folder / "config.json"), "--strict"])
    assert status == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def ours(reference, converted):
    from mrcnn_kp.data.transforms import resize_image
    from mrcnn_kp.image_meta import compose_image_meta
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.weights import load_weights, read_config

    config = read_config(converted[0])
    model = build_inference_model(config, debug=True)
    load_weights(model, converted[0])
    molded, metas = [], []
    for i, image in enumerate(reference["images"]):  # as the predictor molds them
        canvas, window, scale, _ = resize_image(image, config)
        assert scale == 1.0 and window == (0, 0) + image.shape[:2]
        molded.append(canvas.astype(np.float32))
        metas.append(compose_image_meta(i, image.shape, canvas.shape, window, scale,
                                        np.ones(config.NUM_CLASSES)))
    outputs = model.predict_on_batch({"input_image": np.stack(molded),
                                      "input_image_meta": np.stack(metas).astype(np.float32)})
    return {"model": model, "config": config,
            **{k: np.asarray(v) for k, v in outputs.items()}}


def _match(ref_boxes, our_boxes):
    """Index into our_boxes of the closest box to each reference box, and that distance
    (max coordinate difference, pixels)."""
    distance = np.abs(ref_boxes[:, None, :] - our_boxes[None, :, :]).max(-1)  # [R, O]
    return distance.argmin(1), distance.min(1)


@pytest.mark.tf_only
def test_convert_reports_every_tensor(converted):
    printed = converted[1]
    assert "313 tensors loaded into 130 layers; 53 num_batches_tracked ignored; 0 tensors " \
           "not used" in printed
    assert "layers left at their initial values" not in printed


@pytest.mark.tf_only
def test_pyramid_equals_torchvisions(reference, ours):
    """torchvision's maps cover each image padded to a multiple of 32; ours, the canvas: the
    same numbers where both exist (ours are zero beyond)."""
    assert [tuple(reference[f"batch_shape_{i}"]) for i in range(IMAGES)] == [
        (1, 3, 224, 320), (1, 3, 320, 224)]
    for i in range(IMAGES):
        for level in range(2, 7):
            want = reference[f"P{level}_{i}"]
            got = ours[f"P{level}"][i, :want.shape[0], :want.shape[1]]
            relative = np.abs(got - want).max() / np.abs(want).max()
            print(f"image {i} P{level} {want.shape[:2]}: max relative error {relative:.2e}")
            assert relative <= 1e-4, (i, level)


@pytest.mark.tf_only
def test_anchors_equal_torchvisions(reference, ours):
    """torchvision's anchors of each image are ours whose cell exists in its maps, placed
    every padded size // map size pixels (P6 of a 224 side: 4 cells, 56 px apart)."""
    from mrcnn_kp.model.proposals import torchvision_image_anchors
    from mrcnn_kp.ops.anchors import generate_pyramid_anchors

    anchors = generate_pyramid_anchors(ours["config"])
    padded = np.array([[320, 224], [224, 320]], np.float32)  # (x, y) of each image
    moved, inside = [np.asarray(t) for t in torchvision_image_anchors(ours["config"], anchors,
                                                                       padded)]
    for i in range(IMAGES):
        np.testing.assert_allclose(moved[i][inside[i]], reference[f"anchors_{i}"], atol=1e-4)
    p6 = reference["anchors_0"][-12:]  # the last 4 cells (row 3) of image 0's 4 x 5 P6 map
    assert sorted({float(v) for v in (p6[:, 1] + p6[:, 3]) / 2}) == [168.0]  # 3 x 56, not 192


@pytest.mark.tf_only
def test_proposals_equal_torchvisions(reference, ours):
    for b in range(IMAGES):
        count = int(reference["num_proposals"][b])
        got = ours["rpn_rois"][b][ours["rpn_valid"][b]]
        assert len(got) == count
        index, distance = _match(reference["proposals"][b, :count], got)
        print(f"image {b}: {count} proposals, max distance {distance.max():.2e} px")
        assert len(set(index.tolist())) == count  # one to one
        assert distance.max() <= 0.01


def _matched_detections(reference, ours):
    """Per image: (reference slots, our slots) of the same detections, checked one to one."""
    pairs = []
    for b in range(IMAGES):
        count = int(reference["num_detections"][b])
        assert int(ours["num_detections"][b]) == count
        index, distance = _match(reference["boxes"][b, :count], ours["boxes"][b, :count])
        assert len(set(index.tolist())) == count
        assert distance.max() <= 0.5, distance
        pairs.append((np.arange(count), index))
    return pairs


@pytest.mark.tf_only
def test_detections_equal_torchvisions(reference, ours):
    assert reference["num_detections"].tolist() == [DETECTIONS] * IMAGES  # non-trivial
    for b, (theirs, mine) in enumerate(_matched_detections(reference, ours)):
        box_error = np.abs(reference["boxes"][b, theirs] - ours["boxes"][b, mine]).max()
        score_error = np.abs(reference["scores"][b, theirs] - ours["scores"][b, mine]).max()
        print(f"image {b}: boxes within {box_error:.2e} px, scores within {score_error:.2e}")
        assert box_error <= 0.5 and score_error <= 1e-4
        assert (ours["class_ids"][b, mine] == reference["labels"][b, theirs]).all()


@pytest.mark.tf_only
def test_keypoints_equal_torchvisions(reference, ours):
    """The keypoint logits equal torchvision's, and our decoded keypoints (the layout's
    KEYPOINT_DECODER "exact": each map resized in full, global argmax) are its keypoints
    within 1 px, every joint, with its scores (the resized logit there). Untrained heads give
    flat maps with distant near-equal peaks, where a window decoder misses ~20 %."""
    assert ours["config"].KEYPOINT_DECODER == "exact"
    pairs = _matched_detections(reference, ours)
    logits = np.concatenate([ours["keypoint_logits"][b, mine] for b, (_, mine) in
                             enumerate(pairs)])  # [N, 56, 56, K] in the reference's order
    mine_kp = np.concatenate([ours["keypoints"][b, mine] for b, (_, mine) in enumerate(pairs)])
    want_kp = np.concatenate([reference["keypoints"][b, t] for b, (t, _) in enumerate(pairs)])
    want_scores = np.concatenate([reference["keypoints_scores"][b, t]
                                  for b, (t, _) in enumerate(pairs)])
    relative = np.abs(logits - reference["keypoint_logits"]).max() / \
        np.abs(reference["keypoint_logits"]).max()
    print(f"keypoint logits max relative error {relative:.2e}")
    assert relative <= 1e-4

    error = np.abs(mine_kp[..., :2] - want_kp[..., :2]).max(-1)  # [N, K]
    score_error = np.abs(mine_kp[..., 2] - want_scores).max()
    print(f"{error.size} joints: max keypoint error {error.max():.2e} px, max score error "
          f"{score_error:.2e} (scores up to {np.abs(want_scores).max():.2e})")
    assert error.max() <= 1.0
    assert score_error <= 1e-4 * np.abs(want_scores).max()


@pytest.mark.tf_only
def test_predict_command_with_converted_weights_gives_torchvisions_detections(
        reference, converted, tmp_path):
    """`mrcnn-kp predict --weights converted.weights.h5` (the config travels in the file; its
    IMAGE_RESIZE_MODE is torchvision's): the same people and keypoints as torchvision, in
    image pixels."""
    from PIL import Image

    from mrcnn_kp.inference.coco_eval import KEYPOINT_OFFSET

    paths = []
    for i, image in enumerate(reference["images"]):
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(image).save(paths[-1])
    out = tmp_path / "predictions"
    assert cli.main(["predict", *map(str, paths), "--weights", str(converted[0]), "--output",
                     str(out), "--no-pictures"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    for b in range(IMAGES):
        mine = [r for r in records if r["image_id"] == b + 1]
        count = int(reference["num_detections"][b])
        assert len(mine) == count
        x, y, w, h = np.array([r["bbox"] for r in mine], np.float32).T
        boxes = np.stack([x, y, x + w, y + h], -1)
        index, distance = _match(reference["boxes"][b, :count], boxes)
        assert distance.max() <= 0.5
        scores = np.array([r["score"] for r in mine])[index]
        np.testing.assert_allclose(scores, reference["scores"][b, :count], atol=1e-4)
        # COCO keypoints: (x, y) - KEYPOINT_OFFSET, torchvision's within 1 px
        xy = np.array([r["keypoints"] for r in mine], np.float32).reshape(count, -1, 3)
        xy = xy[index, :, :2] + KEYPOINT_OFFSET
        assert np.abs(xy - reference["keypoints"][b, :count, :, :2]).max() <= 1.0
