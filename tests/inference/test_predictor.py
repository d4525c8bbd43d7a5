"""Predictor: molded-pixel model outputs come back in original pixels, exactly.

The stand-in models are numpy objects with the keras `predict_on_batch` the Predictor calls, so
these tests run the same on every backend. FixedModel returns fixed outputs per batch slot
(known people), written here by hand in molded pixels from the resize geometry of TinyConfig
(128 x 128 canvas), so the test checks the predictor's molding and un-molding against
independently computed numbers.
"""
import io

import numpy as np
import pytest
from PIL import Image

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.inference import predictor as predictor_lib
import matterport_reference as ref
from mrcnn_kp.inference.predictor import (ImageReadError, Predictor, paste_mask, read_image,
                                          to_rgb_uint8)

K = 17


class FixedModel:
    """Stand-in inference model: the same outputs for every batch (slot i -> values[i]); it
    records the inputs of every call."""

    def __init__(self, values):
        self.values = {k: np.asarray(v) for k, v in values.items()}
        self.calls = []

    def predict_on_batch(self, inputs):
        self.calls.append((inputs["input_image"].shape, inputs["input_image_meta"].copy(),
                           inputs["input_image"].copy()))
        return {k: v.copy() for k, v in self.values.items()}


def slot_values(config):
    """Two batch slots, D = DETECTION_MAX_INSTANCES rows each, molded pixels.

    Slot 0 is written for a 200 (h) x 100 (w) image: scale 128/200 = 0.64, content 128 x 64
    centred, so x gets +32, y +0. Slot 1 for a 90 x 160 image: scale 128/160 = 0.8, content
    72 x 128, so y gets +28 ((128 - 72) // 2), x +0.
    """
    d = config.DETECTION_MAX_INSTANCES
    boxes = np.zeros((2, d, 4), np.float32)
    class_ids = np.zeros((2, d), np.int32)
    scores = np.zeros((2, d), np.float32)
    masks = np.zeros((2, d, 28, 28), np.float32)
    keypoints = np.zeros((2, d, K, 3), np.float32)
    # slot 0, person 0: original box (10, 20, 60, 180), nose (35, 50), left ankle (12, 170)
    boxes[0, 0] = [10 * .64 + 32, 20 * .64, 60 * .64 + 32, 180 * .64]
    keypoints[0, 0, 0] = [35 * .64 + 32, 50 * .64, 0.9]
    keypoints[0, 0, 15] = [12 * .64 + 32, 170 * .64, 0.25]
    masks[0, 0] = 1.0
    class_ids[0, 0], scores[0, 0] = 1, 0.95
    # slot 0, person 1: original box (50, 100, 100, 200) (touches the image corner);
    # mask probability rising left to right: only the right half passes 0.5
    boxes[0, 1] = [50 * .64 + 32, 100 * .64, 100 * .64 + 32, 200 * .64]
    masks[0, 1] = np.tile(np.arange(28, dtype=np.float32) / 27.0, (28, 1))
    class_ids[0, 1], scores[0, 1] = 1, 0.6
    # slot 0, row 2: a person beyond num_detections; row 3: an empty slot (class 0)
    boxes[0, 2] = [40, 40, 60, 60]
    class_ids[0, 2], scores[0, 2] = 1, 0.5
    boxes[0, 3] = [40, 40, 60, 60]
    # slot 1, person 0: original box (16, 9, 96, 81) in the 90 x 160 image
    boxes[1, 0] = [16 * .8, 9 * .8 + 28, 96 * .8, 81 * .8 + 28]
    keypoints[1, 0, 5] = [40 * .8, 30 * .8 + 28, 3.5]
    masks[1, 0] = 1.0
    class_ids[1, 0], scores[1, 0] = 1, 0.8
    return {"boxes": boxes, "class_ids": class_ids, "scores": scores, "masks": masks,
            "keypoints": keypoints, "num_detections": np.array([2, 1], np.int32)}


@pytest.fixture(scope="module")
def config():
    return TinyConfig()


@pytest.fixture
def model(config):
    return FixedModel(slot_values(config))


def test_detect_maps_boxes_keypoints_masks_back_to_original_pixels(config, model):
    counting = model
    tall = np.full((200, 100, 3), 90, np.uint8)  # slot 0
    wide = np.full((90, 160, 3), 90, np.uint8)  # slot 1
    results = Predictor(counting, config).detect([tall, wide])
    assert len(results) == 2 and len(counting.calls) == 1

    r = results[0]
    np.testing.assert_allclose(r["rois"], [[10, 20, 60, 180], [50, 100, 100, 200]], atol=1e-4)
    assert r["rois"].dtype == np.float32
    np.testing.assert_array_equal(r["class_ids"], [1, 1])
    np.testing.assert_allclose(r["scores"], [0.95, 0.6])
    assert r["keypoints"].shape == (2, K, 3)
    np.testing.assert_allclose(r["keypoints"][0, 0], [35, 50, 0.9], atol=1e-4)
    np.testing.assert_allclose(r["keypoints"][0, 15], [12, 170, 0.25], atol=1e-4)
    assert r["masks"].shape == (200, 100, 2) and r["masks"].dtype == bool
    # every pixel whose centre is inside (10, 20, 60, 180): 50 columns x 160 rows
    assert r["masks"][:, :, 0].sum() == 50 * 160
    assert r["masks"][20:180, 10:60, 0].all()
    # right half of (50, 100, 100, 200): columns 75..99, rows 100..199
    assert r["masks"][:, :, 1].sum() == 25 * 100
    assert r["masks"][100:200, 75:100, 1].all()

    r = results[1]
    np.testing.assert_allclose(r["rois"], [[16, 9, 96, 81]], atol=1e-4)
    np.testing.assert_allclose(r["keypoints"][0, 5], [40, 30, 3.5], atol=1e-4)
    assert r["masks"].shape == (90, 160, 1) and r["masks"][:, :, 0].sum() == 80 * 72


def test_detect_pads_the_last_batch_and_keeps_the_order(config, model):
    counting = model
    images = [np.zeros((200, 100, 3), np.uint8), np.zeros((90, 160, 3), np.uint8),
              np.zeros((200, 100, 3), np.uint8)]
    results = Predictor(counting, config).detect(images)
    assert [c[0] for c in counting.calls] == [(2, 128, 128, 3)] * 2
    assert [len(r["rois"]) for r in results] == [2, 1, 2]
    # the padding image of the last batch is blank
    assert counting.calls[1][2][1].max() == 0


def test_detect_other_shape_in_the_same_slot_is_unmolded_with_its_own_window(config, model):
    # A 64 x 64 image in slot 0: scale 2, no padding, so molded (x, y) -> (x / 2, y / 2).
    result = Predictor(model, config).detect([np.zeros((64, 64, 3), np.uint8)])[0]
    expected = np.array([10 * .64 + 32, 20 * .64, 60 * .64 + 32, 180 * .64]) / 2
    np.testing.assert_allclose(result["rois"][0], expected, atol=1e-4)


def test_detect_on_a_non_square_canvas_unmolds_with_its_window(config):
    """IMAGE_CANVAS_SHAPE (64, 128): a 100 x 160 image would be 80 x 128 by the square rule
    (long side to 128); the canvas height caps the scale at 64 / 100 = 0.64: 64 x 102, centred
    at (top 0, left 13). A molded box and joint come back in original pixels."""
    wide = TinyConfig(IMAGE_MIN_DIM=64, IMAGE_CANVAS_SHAPE=(64, 128))
    values = slot_values(wide)
    s, top, left = 0.64, 0, 13
    values["boxes"][0, 0] = [16 * s + left, 9 * s + top, 96 * s + left, 81 * s + top]
    values["keypoints"][0, 0, 5] = [40 * s + left, 30 * s + top, 3.5]
    values["num_detections"] = np.array([1, 1], np.int32)
    stand_in = FixedModel(values)
    result = Predictor(stand_in, wide).detect([np.full((100, 160, 3), 90, np.uint8)])[0]
    assert stand_in.calls[0][0] == (2, 64, 128, 3)
    meta = stand_in.calls[0][1][0]
    assert tuple(meta[4:7]) == (64, 128, 3) and tuple(meta[7:11]) == (0, 13, 64, 115)
    np.testing.assert_allclose(result["rois"], [[16, 9, 96, 81]], atol=1e-4)
    np.testing.assert_allclose(result["keypoints"][0, 5], [40, 30, 3.5], atol=1e-4)
    assert result["masks"].shape == (100, 160, 1)


def test_mold_inputs_puts_the_converted_image_in_the_window(config, model):
    predictor = Predictor(model, config)
    gray = np.full((90, 160), 100, np.uint8)
    molded, metas, windows, scales = predictor.mold_inputs([to_rgb_uint8(gray)])
    assert molded.shape == (2, 128, 128, 3) and molded.dtype == np.float32
    assert windows[0] == (28, 0, 100, 128) and scales[0] == pytest.approx(0.8)
    np.testing.assert_array_equal(molded[0, 28:100], 100.0)
    assert molded[0, :28].max() == 0 and molded[0, 100:].max() == 0
    np.testing.assert_allclose(metas[0, :12], [0, 90, 160, 3, 128, 128, 3, 28, 0, 100, 128, .8])


@pytest.mark.parametrize("image", [
    np.full((90, 160), 100, np.uint8),  # grayscale
    np.full((90, 160, 1), 100, np.uint8),
    np.dstack([np.full((90, 160, 3), 100, np.uint8), np.full((90, 160), 7, np.uint8)]),  # RGBA
    np.full((90, 160, 3), 100 / 255.0, np.float32),  # float in [0, 1]
    np.full((90, 160, 3), 100 * 257, np.uint16),
])
def test_to_rgb_uint8_converts_gray_rgba_float_uint16(image):
    out = to_rgb_uint8(image)
    assert out.shape == (90, 160, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 100)


def test_to_rgb_uint8_rejects_bad_shapes():
    with pytest.raises(ValueError, match="channels, got 5"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="H, W > 0"):
        to_rgb_uint8(np.zeros((0, 4, 3), np.uint8))


def test_detect_refuses_a_bare_image(config, model):
    with pytest.raises(ValueError, match="wrap a single image"):
        Predictor(model, config).detect(np.zeros((64, 64, 3), np.uint8))


def test_predict_stream_is_lazy_and_keeps_keys(config, model):
    pulled = []

    def items():
        for k, shape in enumerate([(200, 100, 3), (90, 160, 3), (200, 100, 3)]):
            pulled.append(k)
            yield f"img{k}", np.zeros(shape, np.uint8)

    stream = Predictor(model, config).predict_stream(items())
    key, result = next(stream)
    assert key == "img0" and pulled == [0, 1]  # one batch read, not the whole iterable
    rest = list(stream)
    assert [k for k, _ in rest] == ["img1", "img2"]
    assert [len(r["rois"]) for _, r in rest] == [1, 2]


def test_paste_mask_counts_pixel_centres_inside_a_fractional_box():
    # x in [2.4, 7.6]: centres 2.5..7.5 -> 6 columns; y in [1.0, 3.0]: centres 1.5, 2.5 -> 2 rows
    full = paste_mask(np.ones((28, 28)), (2.4, 1.0, 7.6, 3.0), (10, 10))
    assert full.sum() == 12 and full[1:3, 2:8].all()
    assert paste_mask(np.ones((28, 28)), (5, 5, 5, 9), (10, 10)).sum() == 0  # empty box
    assert paste_mask(np.ones((28, 28)), (-5, -5, 3, 2), (10, 10)).sum() == 6  # clipped


def test_read_image_messages(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 30, 4), 200, np.uint8)).save(good)
    assert read_image(good).shape == (20, 30, 3)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(text)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, format="JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buffer.getvalue()[:400])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(truncated)
    with pytest.raises(ImageReadError,
                       match=r"30x20 \(600 pixels\) is more than the limit of 100 pixels"):
        read_image(good, max_pixels=100)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    assert predictor_lib.DEFAULT_MAX_PIXELS >= 40_000_000


class EchoMoldedTruth:
    """Stand-in model whose outputs are the known people of one image, molded by the data
    pipeline's forward transforms (transforms.resize_boxes / resize_keypoints), with the
    instance masks cropped to their boxes as 28x28 probabilities."""

    def __init__(self, config, boxes, keypoints, masks):
        self.config, self.boxes, self.keypoints, self.masks = config, boxes, keypoints, masks

    def predict_on_batch(self, inputs):
        from mrcnn_kp.data import transforms
        from mrcnn_kp.image_meta import parse_image_meta

        meta = parse_image_meta(inputs["input_image_meta"][0])
        (top, left), scale = meta["window"][:2], float(meta["scale"])
        padding = [(int(top), 0), (int(left), 0), (0, 0)]
        b, d, n = self.config.BATCH_SIZE, self.config.DETECTION_MAX_INSTANCES, len(self.boxes)
        out = {"boxes": np.zeros((b, d, 4), np.float32), "class_ids": np.zeros((b, d), np.int32),
               "scores": np.zeros((b, d), np.float32),
               "masks": np.zeros((b, d, 28, 28), np.float32),
               "keypoints": np.zeros((b, d, K, 3), np.float32),
               "num_detections": np.full(b, n, np.int32)}
        out["boxes"][0, :n] = transforms.resize_boxes(self.boxes, scale, padding)
        out["keypoints"][0, :n] = transforms.resize_keypoints(self.keypoints, scale, padding)
        out["class_ids"][0, :n], out["scores"][0, :n] = 1, 0.9
        for i, (x1, y1, x2, y2) in enumerate(np.round(self.boxes).astype(int)):
            crop = Image.fromarray(self.masks[y1:y2, x1:x2, i].astype(np.float32))
            out["masks"][0, i] = np.asarray(crop.resize((28, 28), Image.BOX))  # cell means
        return out


def test_detect_returns_known_synthetic_people_in_original_pixels():
    from mrcnn_kp.data import dataset, synthetic_people

    config = TinyConfig()
    rng = np.random.default_rng(3)
    image, people = synthetic_people.render_image(rng, image_size=256)
    while len(people) < 2:
        image, people = synthetic_people.render_image(rng, image_size=256)
    image = image[:, 40:216]  # 256 high x 176 wide: not square, padded left and right
    masks = np.stack([p["mask"][:, 40:216] for p in people], axis=-1)  # [H, W, n]
    keep = masks.reshape(-1, masks.shape[-1]).sum(0) > 400
    masks = masks[:, :, keep]
    keypoints = np.stack([p["keypoints"] for p in people])[keep]
    keypoints[..., 0] -= 40
    inside = (keypoints[..., 2] > 0) & (keypoints[..., 0] >= 0) & (keypoints[..., 0] < 176)
    keypoints[~inside] = 0.0
    boxes = dataset.boxes_from_masks(masks)  # [n, 4] original pixels
    model = EchoMoldedTruth(config, boxes, keypoints, masks)
    result = Predictor(model, config).detect([image])[0]
    np.testing.assert_allclose(result["rois"], boxes, atol=1e-3)
    labelled = keypoints[..., 2] > 0
    np.testing.assert_allclose(result["keypoints"][..., :2][labelled],
                               keypoints[..., :2][labelled], atol=1e-3)
    assert result["masks"].shape == masks.shape
    for i in range(masks.shape[-1]):
        inter = (result["masks"][:, :, i] & masks[:, :, i]).sum()
        union = (result["masks"][:, :, i] | masks[:, :, i]).sum()
        assert inter / union > 0.9  # a 28x28 round trip of thin limbs loses a little


# ------------------------------------------------------------------ matterport's mold / unmold
def test_matterport_mold_inputs_are_its_resize_pad_and_image_meta():
    from mrcnn_kp.config import MatterportConfig

    config = MatterportConfig(IMAGE_MIN_DIM=512, IMAGE_MAX_DIM=512, NUM_CLASSES=2)
    image = np.random.default_rng(0).integers(0, 256, (256, 192, 3)).astype(np.uint8)
    molded, metas, windows, scales = Predictor(None, config).mold_inputs([image])
    want, window, scale = ref.resize_image(image, 512)
    np.testing.assert_array_equal(molded[0], want.astype(np.float32))  # skimage, bit for bit
    # matterport's image_meta for a 256 x 192 image
    np.testing.assert_array_equal(metas[0], [0, 256, 192, 3, 512, 512, 3, 0, 64, 512, 448, 2,
                                             0, 0])
    assert tuple(windows[0]) == window == (0, 64, 512, 448) and scales[0] == scale == 2
    pil = Predictor(None, MatterportConfig(IMAGE_MIN_DIM=512, IMAGE_MAX_DIM=512, NUM_CLASSES=2,
                                           IMAGE_RESIZE_METHOD="pil")).mold_inputs([image])[0]
    assert not np.array_equal(pil[0], molded[0])  # Pillow's bilinear is another resize


def test_matterport_unmold_detections_equals_matterports():
    rng = np.random.default_rng(0)
    d, side, original, window = 20, 128, (80, 100, 3), (13, 0, 115, 128)  # scale 1.28
    wn = (np.array(window, np.float64) - [0, 0, 1, 1]) / (side - 1)
    y1x1 = rng.uniform(wn[:2], wn[2:] - 0.05, (d, 2))
    det = np.zeros((d, 6), np.float32)
    det[:, :2] = y1x1
    det[:, 2:4] = np.minimum(y1x1 + rng.uniform(0.0, 0.4, (d, 2)), wn[2:])
    det[3, 2] = det[3, 0]  # zero height normalised: 1 px high (the far edge's +1), kept
    det[5, 3] = det[5, 1] - 0.05  # inverted: area <= 0 in pixels, dropped
    det[:, 4] = rng.integers(1, 3, d)
    det[:, 5] = np.sort(rng.uniform(0.7, 1.0, d))[::-1]
    det[16:] = 0.0  # padding: the detections end at the first class 0
    probs = rng.uniform(0, 1, (d, 28, 28)).astype(np.float32)
    y1, x1, y2, x2 = np.moveaxis(det[:, :4], -1, 0)  # the model's pixel boxes (unrounded)
    outputs = {"boxes": np.stack([x1 * 127, y1 * 127, x2 * 127 + 1, y2 * 127 + 1], -1),
               "class_ids": det[:, 4].astype(np.int32), "scores": det[:, 5], "masks": probs,
               "num_detections": np.int32(16)}
    boxes, class_ids, scores, masks = ref.unmold_detections(det, probs, original, window, side)
    assert len(boxes) == 15 and masks.sum() > 0
    for given in ({"normalized_boxes": det[:, :4]}, {}):  # the model's, or from the pixels
        got = predictor_lib.unmold_detections_matterport(dict(outputs, **given), original,
                                                         window, (side, side, 3), 1.28)
        assert got["rois"].shape == (15, 4)
        np.testing.assert_array_equal(got["rois"], boxes[:, [1, 0, 3, 2]])  # (x1, y1, x2, y2)
        np.testing.assert_array_equal(got["class_ids"], class_ids)
        np.testing.assert_array_equal(got["scores"], scores)
        np.testing.assert_array_equal(got["masks"], masks)


def test_load_predictor_applies_the_configs_mixed_precision():
    """MIXED_PRECISION "mixed_bfloat16" (bf16 convolutions on a CPU): the predictor's model
    computes in bfloat16 and still returns float32 boxes in original pixels."""
    import keras

    from mrcnn_kp.inference.predictor import load_predictor

    before = keras.mixed_precision.dtype_policy()
    try:
        config = TinyConfig(IMAGES_PER_GPU=1, MIXED_PRECISION="mixed_bfloat16",
                            DETECTION_MIN_CONFIDENCE=0.0)
        predictor, _ = load_predictor(config)
        assert predictor.model.get_layer("fpn_p2").dtype_policy.name == "mixed_bfloat16"
        result = predictor.detect([np.full((100, 160, 3), 90, np.uint8)])[0]
        assert result["rois"].dtype == np.float32 and len(result["rois"]) > 0
        assert np.all(result["rois"][:, 2] <= 160) and np.all(result["rois"][:, 3] <= 100)
    finally:
        keras.mixed_precision.set_global_policy(before)
