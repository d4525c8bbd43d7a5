"""inference.tflite_nms: TFLite's NMS kernel fed so that it selects what TensorFlow's selects,
on boxes with tied scores, zero-area boxes and -inf scores (the cases where the plain kernel
differs: it re-selects a selected zero-area box in every later slot)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from mrcnn_kp.inference.tflite_nms import tflite_nms  # noqa: E402
from mrcnn_kp.ops import backend  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="TFLite graphs need the TensorFlow backend")
N, MAX_OUTPUT, IOU = 120, 40, 0.5


def hard_case(seed):
    """Boxes (x1, y1, x2, y2) with scores rounded to one decimal (many ties), a tenth of them
    flat (zero width, or x2 < x1), a tenth scored -inf."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 100, (N, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(1, 40, (N, 2))], 1).astype(np.float32)
    flat = rng.random(N) < 0.1
    boxes[flat, 2] = boxes[flat, 0] - rng.uniform(0, 2, flat.sum()).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, N), 1).astype(np.float32)
    scores[rng.random(N) < 0.1] = -np.inf
    return boxes, scores


def converted(nms):
    spec = [tf.TensorSpec([N, 4], tf.float32), tf.TensorSpec([N], tf.float32)]
    fn = tf.function(lambda b, s: dict(zip(("a_indices", "b_count"),
                                           nms(b, s, IOU, MAX_OUTPUT))), input_signature=spec)
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], fn).convert()
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()

    def run(boxes, scores):
        for detail, value in zip(interpreter.get_input_details(), (boxes, scores)):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        outputs = sorted(interpreter.get_output_details(), key=lambda d: d["name"])
        return [np.asarray(interpreter.get_tensor(d["index"])) for d in outputs]

    return run


def test_tflite_nms_selects_what_tensorflow_selects_in_tensorflow_and_in_tflite():
    run = converted(tflite_nms)
    plain = converted(backend.nms)
    plain_differs = 0
    for seed in range(12):
        boxes, scores = hard_case(seed)
        want, want_count = (np.asarray(v) for v in backend.nms(boxes, scores, IOU, MAX_OUTPUT))
        assert want_count > 10
        ours, ours_count = (np.asarray(v) for v in tflite_nms(boxes, scores, IOU, MAX_OUTPUT))
        np.testing.assert_array_equal(ours, want)
        assert ours_count == want_count
        indices, count = run(boxes, scores)
        np.testing.assert_array_equal(indices, want)
        assert int(count) == want_count
        plain_differs += not np.array_equal(plain(boxes, scores)[0], want)
    assert plain_differs >= 10  # the cases do reach what the plain kernel gets wrong


def test_tflite_nms_with_fewer_boxes_than_slots():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 20, 30], [30, 30, 40, 40]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.95, -np.inf], np.float32)
    indices, count = (np.asarray(v) for v in tflite_nms(boxes, scores, 0.5, 6))
    np.testing.assert_array_equal(indices, [2, 0, -1, -1, -1, -1])  # 1 suppressed by 0
    assert count == 2
