"""Non-maximum suppression for TFLite graphs that selects what TensorFlow's kernel selects.

The model's NMS (ops.backend.nms) runs TensorFlow's NonMaxSuppressionV4 kernel: greedy, boxes
visited by decreasing score with ties to the lower index, a box suppressed when its IoU with a
selected box is > the threshold, zero-area boxes (IoU 0 with everything) never suppressed and
never suppressing. The TFLite converter maps it to TFLite's NON_MAX_SUPPRESSION_V4, which
differs in three ways:

1. it puts every selected box back in its queue and counts on the box's IoU of 1 with itself
   to drop it on the next pop; a zero-area box has IoU 0 with itself, so once one is selected
   it is selected again in every remaining slot. The RPN's proposals clipped to the image
   border are such boxes: from there on, every proposal slot repeats one empty box, the
   heads see the wrong ROIs and the detections change (boxes off by tens of pixels, scores
   by up to 0.9, detections lost);
2. tied scores leave its priority queue in no defined order (saturated RPN scores tie);
3. it suppresses at IoU >= the threshold.

`tflite_nms` has the same contract as ops.backend.nms and gives TFLite's kernel inputs on which
it agrees with TensorFlow's: the boxes sorted by score (top_k: ties to the lower index, in
TensorFlow and TFLite alike) and scored by rank, so no two scores tie; zero-area boxes kept out
of the kernel and merged back in rank order (they cannot change what else is selected); the
threshold raised by one float32 step, so >= acts as >. export_tflite.export_tflite traces the
model with it (export_graph.portable_ops).
"""
import numpy as np


def tflite_nms(boxes, scores, iou_threshold, max_output):
    """boxes [N, 4] (x1, y1, x2, y2) float32, scores [N] float32 -> (indices [max_output]
    int32 padded with -1, count int32): ops.backend.nms's selection, in TFLite builtins.
    Boxes scored -inf or NaN are never selected."""
    import tensorflow as tf

    from mrcnn_kp.ops import backend

    max_output = int(max_output)
    n = tf.shape(scores)[0]
    ranked, order = tf.math.top_k(scores, n, sorted=True)  # [N], ties to the lower index
    corners = backend._non_collapsed(tf.gather(boxes, order))  # [N, 4] (y1, x1, y2, x2)
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])  # as the kernels
    alive = ranked > float("-inf")  # [N] False for -inf and NaN
    flat = area <= 0.0  # [N] zero-area: IoU 0 with every box
    rank = tf.cast(n - tf.range(n), tf.float32)  # [N] N..1, distinct (exact below 2**24)
    no_score = tf.fill([n], float("-inf"))
    threshold = float(np.nextafter(np.float32(iou_threshold), np.float32(np.inf)))
    picked, picked_count = tf.raw_ops.NonMaxSuppressionV4(
        boxes=corners, scores=tf.where(alive & ~flat, rank, no_score),
        max_output_size=max_output, iou_threshold=threshold, score_threshold=float("-inf"),
        pad_to_max_output_size=True)  # [max_output] positions in the sorted order
    slots = tf.range(max_output)
    picked = tf.where(slots < picked_count, picked, -1)
    selected = tf.reduce_any(tf.equal(picked[:, None], tf.range(n)[None, :]), axis=0)  # [N]
    selected = selected | (alive & flat)
    # The first max_output selected positions, in order (position order is TF's order).
    final = tf.concat([tf.where(selected, rank, no_score),
                       tf.fill([max_output], float("-inf"))], axis=0)  # >= max_output long
    top, positions = tf.math.top_k(final, max_output, sorted=True)
    valid = top > float("-inf")
    indices = tf.where(valid, tf.gather(order, tf.minimum(positions, n - 1)), -1)
    return tf.cast(indices, tf.int32), tf.reduce_sum(tf.cast(valid, tf.int32))
