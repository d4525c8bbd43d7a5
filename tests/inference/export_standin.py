"""A small stand-in inference model for the export tests, with the output contract of
docs/DESIGN.md, and the comparisons against the Predictor (a plain module: conftest is not
importable by name when several test folders have one).

The serving function must do what Predictor does (mold with data.transforms, run, unmold with
predictor.unmold_detections), so each test compares against the Predictor on the same image.
The stand-in keeps the format tests fast; tests/inference/test_exported.py compares every
format on the real TinyConfig model.

Tolerances: SavedModel runs the same TF kernels as Keras: boxes and keypoints within 1e-3 px,
scores within 1e-5. TFLite (XNNPACK) and ONNX Runtime use other float32 kernels: boxes and
keypoints within 0.05 px, scores and mask probabilities within 1e-4.
"""
import keras
import numpy as np
from keras import layers as KL
from keras import ops

from mrcnn_kp.inference.predictor import Predictor


# ----------------------------------------------------------------------------- stand-in model
class StandinDetections(KL.Layer):
    """Features [B, F] -> the inference output dict (boxes in molded pixels, 28x28 masks)."""

    def __init__(self, detections, side, num_keypoints, **kwargs):
        super().__init__(**kwargs)
        self.detections, self.side, self.num_keypoints = detections, side, num_keypoints

    def call(self, features):
        d, s, k = self.detections, float(self.side), self.num_keypoints
        b = ops.shape(features)[0]
        corner = ops.sigmoid(ops.reshape(features[:, :d * 2], (b, d, 2))) * s * 0.9 - 0.05 * s
        size = ops.sigmoid(ops.reshape(features[:, d * 2:d * 4], (b, d, 2))) * s * 0.5 + 1.0
        boxes = ops.concatenate([corner, corner + size], axis=-1)  # [B, D, 4] x1 y1 x2 y2
        scores = ops.sigmoid(features[:, d * 4:d * 5] * 4.0)  # [B, D]
        class_ids = ops.cast(scores > 0.3, "int32")  # [B, D]
        start = d * 5
        keypoints = ops.sigmoid(ops.reshape(features[:, start:start + d * k * 3],
                                            (b, d, k, 3))) * s  # [B, D, K, 3]
        start += d * k * 3
        masks = ops.sigmoid(ops.reshape(features[:, start:start + d * 28 * 28],
                                        (b, d, 28, 28)) * 3.0)  # [B, D, 28, 28]
        return {"boxes": boxes, "class_ids": class_ids, "scores": scores, "masks": masks,
                "keypoints": keypoints,
                "num_detections": ops.sum(class_ids, axis=1) - 1}  # one valid row left out

    def compute_output_spec(self, features):
        b, d, k = features.shape[0], self.detections, self.num_keypoints
        spec = keras.KerasTensor
        return {"boxes": spec((b, d, 4)), "class_ids": spec((b, d), "int32"),
                "scores": spec((b, d)), "masks": spec((b, d, 28, 28)),
                "keypoints": spec((b, d, k, 3)), "num_detections": spec((b,), "int32")}


def standin_inference_model(config):
    keras.utils.set_random_seed(0)
    side, d, k = config.IMAGE_MAX_DIM, config.DETECTION_MAX_INSTANCES, config.NUM_KEYPOINTS
    image = keras.Input((side, side, 3), name="input_image")
    meta = keras.Input((config.IMAGE_META_SIZE,), name="input_image_meta")
    x = KL.Conv2D(4, 4, strides=4, activation="relu", name="conv1")(
        KL.Rescaling(1 / 255.0)(image))
    x = KL.GlobalAveragePooling2D()(x)
    x = KL.Concatenate()([x, KL.Rescaling(1 / 128.0)(meta)])
    x = KL.Dense(d * (5 + k * 3 + 28 * 28), name="mrcnn_standin_head")(x)
    outputs = StandinDetections(d, side, k)(x)
    return keras.Model({"input_image": image, "input_image_meta": meta}, outputs)


def image_of(height, width, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3)).astype(np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:height, :width]  # blocky, like photos


SIZES = [(100, 64), (37, 200), (128, 128), (300, 260), (64, 48)]


def predictor_result(model, config, image):
    return Predictor(model, config).detect([image])[0]


def assert_matches_predictor(out, ref, box_atol, score_atol):
    n = len(ref["class_ids"])
    assert int(out["num_detections"]) == n and n >= 2
    np.testing.assert_array_equal(out["class_ids"][:n], ref["class_ids"])
    np.testing.assert_allclose(out["boxes"][:n], ref["rois"], atol=box_atol)
    np.testing.assert_allclose(out["scores"][:n], ref["scores"], atol=score_atol)
    np.testing.assert_allclose(out["keypoints"][:n], ref["keypoints"], atol=box_atol)
    assert not out["boxes"][n:].any()
