"""The one module of ops/ allowed to import tensorflow or jax: fast paths for ops that
keras.ops expresses slowly on some backend. Each function returns None when the running
backend has no fast path, and the caller then uses its keras.ops version (which is also the
reference the fast paths are tested against). Process set-up (thread pools, dtype policy) is
mrcnn_kp.runtime's.

TensorFlow: NMS runs on the NonMaxSuppressionV4 kernel (greedy, suppresses on IoU > threshold,
ties to the lower index, padded output, has an XLA lowering), per image through tf.map_fn;
gather-heavy ops (pyramid ROIAlign) run as one XLA cluster even when the model is not
compiled with XLA (`fused`). (tf.image.crop_and_resize was measured as a ROIAlign path too:
about 2x slower than the fused gathers on CPU, so it is not used.)
JAX: the keras.ops versions already lower to jax.lax loops and fused gathers, so there is no
fast path; batched NMS maps the one-image loop over images with jax.vmap.
"""
import keras


def backend_name():
    return keras.backend.backend()


def _non_collapsed(boxes):
    """Boxes with x2 < x1 (or y2 < y1) collapsed to zero width, so every kernel sees area 0
    for them, as ops.boxes does (the TF kernel would otherwise swap the corners)."""
    import tensorflow as tf

    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([y1, x1, tf.maximum(y2, y1), tf.maximum(x2, x1)], axis=-1)  # (y1, x1, y2, x2)


def nms(boxes, scores, iou_threshold, max_output):
    """(indices [max_output] int32 padded with -1, count int32) or None.

    boxes [N, 4] (x1, y1, x2, y2) float32, scores [N] float32; boxes scored -inf or NaN are
    never selected.
    """
    if backend_name() != "tensorflow":
        return None
    import tensorflow as tf

    selected, count = tf.raw_ops.NonMaxSuppressionV4(
        boxes=_non_collapsed(boxes), scores=scores, max_output_size=int(max_output),
        iou_threshold=float(iou_threshold), score_threshold=float("-inf"),
        pad_to_max_output_size=True)
    slots = tf.range(int(max_output))
    return tf.where(slots < count, selected, -1), count


def nms_batched(boxes, scores, iou_threshold, max_output, single_image_nms):
    """NMS per image: boxes [B, N, 4], scores [B, N] -> ([B, max_output] int32, [B] int32), or
    None. single_image_nms(boxes, scores) is the one-image version to map over the batch."""
    name = backend_name()
    if name == "jax":  # vmap also works while Keras traces with a symbolic batch size
        import jax

        return jax.vmap(single_image_nms)(boxes, scores)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.map_fn(lambda args: single_image_nms(args[0], args[1]), (boxes, scores),
                         fn_output_signature=(tf.TensorSpec([int(max_output)], tf.int32),
                                              tf.TensorSpec([], tf.int32)))
    return None


def _in_xla_context():
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


_FUSED = {}


def fused(fn):
    """fn compiled on its own with XLA where the surrounding code is not, else fn itself.

    For gather-heavy ops (ROIAlign): TensorFlow without XLA runs every gather, multiply and add
    as a separate pass over memory; one XLA cluster fuses them (about 2.5x faster on CPU).
    JAX and code already under XLA get fn unchanged.
    """
    if backend_name() != "tensorflow" or _in_xla_context():
        return fn
    if fn not in _FUSED:
        import tensorflow as tf

        _FUSED[fn] = tf.function(fn, jit_compile=True, reduce_retracing=True)
    return _FUSED[fn]


def scatter_add_rows(table, index, values):
    """table [T, C] with values [M, C] added at rows index [M] (repeats add up): in place where
    the backend can (TensorFlow's tensor_scatter_nd_add, JAX's .at[].add, both XLA scatters
    that update a loop-carried buffer in place), else table + segment_sum."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.tensor_scatter_nd_add(table, index[:, None], values)
    if name == "jax":
        return table.at[index].add(values)
    from keras import ops

    return table + ops.segment_sum(values, index, num_segments=ops.shape(table)[0])


def loss_per_replica(loss):
    """A model's summed loss as its replica's share: divided by the replicas in sync under a
    tf.distribute strategy, whose all-reduce sums the replicas' gradients (Keras does this for
    compiled losses; a model that overrides compute_loss must do it itself). JAX's
    DataParallel averages over the global batch itself: unchanged there, as outside a strategy."""
    if backend_name() != "tensorflow":
        return loss
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return loss
    return loss / context.num_replicas_in_sync
