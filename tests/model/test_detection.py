"""DetectionLayer on hand-set head outputs, and the mask / keypoint post-processing layers."""
import numpy as np
import pytest
from keras import ops

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.model.detection import (DetectionLayer, DetectionMasks, KeypointDecoder,
                                      window_from_meta)
from mrcnn_kp.ops.keypoints import decode_heatmaps

import matterport_reference as ref
from model_batches import image_meta


def numpy_outputs(outputs):
    return [np.asarray(ops.convert_to_numpy(x)) for x in outputs]


def head_outputs(config, rows):
    """rows: (roi, valid, class probs, class deltas) per ROI, for one image."""
    n, c = config.POST_NMS_ROIS_INFERENCE, config.NUM_CLASSES
    rois = np.zeros((1, n, 4), np.float32)
    valid = np.zeros((1, n), bool)
    probs = np.zeros((1, n, c), np.float32)
    probs[..., 0] = 1.0
    deltas = np.zeros((1, n, c, 4), np.float32)
    for i, (roi, ok, p, d) in enumerate(rows):
        rois[0, i], valid[0, i], probs[0, i], deltas[0, i] = roi, ok, p, d
    return rois, valid, probs, deltas


def test_window_from_meta_is_x1y1x2y2():
    meta = image_meta(TinyConfig(), window=(0, 16, 128, 112))[None]
    np.testing.assert_array_equal(np.asarray(window_from_meta(meta)), [[16, 0, 112, 128]])


def test_refine_threshold_clip_nms_and_pad():
    config = TinyConfig(DETECTION_MIN_CONFIDENCE=0.55, DETECTION_NMS_THRESHOLD=0.3)
    no_delta = np.zeros((2, 4))
    right = np.array([[0, 0, 0, 0], [0, 1.0, 0, 0]])  # class 1: dx * 0.1 * width = +4 px
    rows = [
        ([20, 20, 60, 60], True, [0.1, 0.9], no_delta),  # kept as is
        ([22, 20, 62, 60], True, [0.2, 0.8], no_delta),  # IoU 0.9 with the first: suppressed
        ([70, 70, 110, 110], True, [0.4, 0.6], right),  # moved right, clipped to the window
        ([0, 0, 10, 10], True, [0.0, 1.0], no_delta),  # left of the window: empty after clip
        ([30, 80, 50, 100], True, [0.5, 0.5], no_delta),  # below DETECTION_MIN_CONFIDENCE
        ([30, 30, 50, 50], False, [0.0, 1.0], no_delta),  # padding row
    ]
    meta = image_meta(config, window=(0, 16, 128, 112))[None]  # (y1, x1, y2, x2)
    boxes, class_ids, scores, count = numpy_outputs(
        DetectionLayer(config)(*head_outputs(config, rows), meta))
    assert boxes.shape == (1, 8, 4) and class_ids.shape == (1, 8) and count.tolist() == [2]
    np.testing.assert_allclose(boxes[0, :2], [[20, 20, 60, 60], [74, 70, 112, 110]], atol=1e-4)
    np.testing.assert_allclose(scores[0, :2], [0.9, 0.6], rtol=1e-6)
    assert class_ids[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert np.all(boxes[0, 2:] == 0) and np.all(scores[0, 2:] == 0)


def test_nms_is_per_class_and_background_is_skipped():
    config = TinyConfig(NUM_CLASSES=3)
    rows = [
        ([20, 20, 60, 60], True, [0.1, 0.1, 0.8], np.zeros((3, 4))),
        ([21, 20, 61, 60], True, [0.1, 0.7, 0.2], np.zeros((3, 4))),  # same place, class 1
        ([60, 60, 90, 90], True, [0.6, 0.3, 0.1], np.zeros((3, 4))),  # background wins, but
    ]  # its best foreground class (1, 0.3) still counts at DETECTION_MIN_CONFIDENCE = 0
    boxes, class_ids, scores, count = numpy_outputs(
        DetectionLayer(config)(*head_outputs(config, rows), image_meta(config)[None]))
    assert count.tolist() == [3]
    assert class_ids[0, :3].tolist() == [2, 1, 1]
    np.testing.assert_allclose(scores[0, :3], [0.8, 0.7, 0.3], rtol=1e-6)


def test_detection_masks_pick_the_class_channel():
    logits = np.zeros((1, 2, 4, 4, 3), np.float32)
    logits[0, 0, :, :, 2] = 2.0
    logits[0, 1, :, :, 1] = -2.0
    probs = np.asarray(DetectionMasks()(logits, np.array([[2, 0]], np.int32)))
    assert probs.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(probs[0, 0], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    assert np.all(probs[0, 1] == 0)  # empty slot


def test_keypoint_decoder_decodes_person_slots_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 2, 56, 56, 17)).astype(np.float32)
    boxes = np.array([[[10, 20, 50, 90], [0, 0, 30, 30]]], np.float32)
    out = np.asarray(KeypointDecoder()(logits, boxes, np.array([[1, 0]], np.int32)))
    assert out.shape == (1, 2, 17, 3)
    expected = np.asarray(decode_heatmaps(logits[0, :1], boxes[0, :1]))[0]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)
    assert np.all(out[0, 1] == 0)
    assert KeypointDecoder.from_config(KeypointDecoder().get_config()).person_class_id == 1


def test_keypoint_decoder_exact_mode_and_its_config():
    """decoder "exact" (the torchvision layout's) is decode_heatmaps_exact; it survives
    get_config, and needs max_pixels."""
    from mrcnn_kp.config import Config, ConfigError, TorchvisionKeypointConfig
    from mrcnn_kp.ops.keypoints import decode_heatmaps_exact

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 2, 56, 56, 3)).astype(np.float32)
    boxes = np.array([[[10, 20, 50, 90], [0, 0, 63, 30]]], np.float32)
    layer = KeypointDecoder(decoder="exact", max_pixels=64)
    out = np.asarray(layer(logits, boxes, np.array([[1, 1]], np.int32)))
    expected = np.asarray(decode_heatmaps_exact(logits[0], boxes[0], 64))
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    again = KeypointDecoder.from_config(layer.get_config())
    assert (again.decoder, again.max_pixels) == ("exact", 64)
    with pytest.raises(ValueError, match="needs max_pixels"):
        KeypointDecoder(decoder="exact")
    with pytest.raises(ValueError, match="unknown keypoint decoder 'nearest'"):
        KeypointDecoder(decoder="nearest")
    assert Config().KEYPOINT_DECODER == "window"
    assert TorchvisionKeypointConfig().KEYPOINT_DECODER == "exact"
    with pytest.raises(ConfigError, match="unknown KEYPOINT_DECODER 'nearest'"):
        Config(KEYPOINT_DECODER="nearest")


# ------------------------------------------------------------------ matterport's DetectionLayer
def test_matterport_mode_equals_matterports_refine_detections():
    from mrcnn_kp.config import MatterportConfig

    config = MatterportConfig(IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=256, NUM_CLASSES=3,
                              IMAGES_PER_GPU=2)
    n, c, side = config.POST_NMS_ROIS_INFERENCE, 3, 256
    rng = np.random.default_rng(0)
    yx = rng.uniform(0, 0.8, (2, n, 2))
    rois_n = np.concatenate([yx, yx + rng.uniform(0.02, 0.3, (2, n, 2))], -1).astype(np.float32)
    rois_n[:, -100:] = 0.0  # matterport's zero padding goes through the heads too
    logits = rng.normal(0, 3, (2, n, c)).astype(np.float32)
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    probs[0, -1] = [0.0, 0.99, 0.01]  # a padding row detected: kept, as matterport keeps it
    deltas = rng.normal(0, 1, (2, n, c, 4)).astype(np.float32)
    window = (0, 32, 256, 224)  # (y1, x1, y2, x2) pixels: a 256 x 192 picture
    meta = np.stack([image_meta(config, window=window)] * 2)
    window_n = ref.norm_window_graph(window, side)

    valid = np.ones((2, n), bool)  # matterport has no validity flag
    boxes, class_ids, scores, count = numpy_outputs(
        DetectionLayer(config)(rois_n, valid, probs, deltas, meta))
    for b in range(2):
        want = ref.refine_detections(rois_n[b], probs[b], deltas[b], window_n, config)
        m = int((want[:, 4] > 0).sum())
        assert 20 < m and count[b] == m
        np.testing.assert_array_equal(class_ids[b], want[:, 4].astype(int))
        np.testing.assert_allclose(scores[b], want[:, 5], rtol=0, atol=0)
        diff = np.abs(boxes[b] - want[:, :4]).max()  # normalised (y1, x1, y2, x2), 0 padded
        print("max |ours - matterport| detection box, normalised:", diff)
        assert diff <= 1e-6, diff
    assert class_ids[0].tolist().count(1) > 0 and class_ids[0].tolist().count(2) > 0
    corner = np.array([0, 32 / 255, 0, 32 / 255], np.float32)  # the window's top-left corner
    hit = np.all(np.abs(boxes[0, :int(count[0])] - corner) < 1e-6, axis=-1)
    assert hit.sum() >= 1  # detected padding rows: zero-size boxes clipped to the corner


def test_torchvision_layout_filters_like_torchvision():
    """LAYOUT "torchvision": score strictly above DETECTION_MIN_CONFIDENCE, sides >= 1e-2."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig(IMAGE_MAX_DIM=128, IMAGE_MIN_DIM=128,
                                       IMAGE_RESIZE_MAX_SIDE=128, POST_NMS_ROIS_INFERENCE=8,
                                       DETECTION_MAX_INSTANCES=4, DETECTION_MIN_CONFIDENCE=0.5)
    no_delta = np.zeros((2, 4))
    rows = [
        ([20, 20, 60, 60], True, [0.4, 0.6], no_delta),  # kept
        ([70, 20, 90, 60], True, [0.5, 0.5], no_delta),  # score == threshold: dropped
        ([20, 70, 20.005, 90], True, [0.1, 0.9], no_delta),  # 0.005 px wide: dropped
        ([20, 100, 20.02, 120], True, [0.2, 0.8], no_delta),  # 0.02 px wide: kept
    ]
    meta = image_meta(config, window=(0, 0, 128, 128))[None]
    boxes, class_ids, scores, count = numpy_outputs(
        DetectionLayer(config)(*head_outputs(config, rows), meta))
    assert count.tolist() == [2]
    np.testing.assert_allclose(scores[0, :2], [0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(boxes[0, 0], [20, 100, 20.02, 120], atol=1e-4)
