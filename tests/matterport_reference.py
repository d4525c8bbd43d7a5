"""matterport's inference pre- and post-processing, written out from docs/MATTERPORT.md
step by step with numpy, TensorFlow's own ops (tf.nn.top_k, tf.image.non_max_suppression,
tf.image.crop_and_resize, the ops matterport's graph uses) and skimage (its resize), for the
tests of the matterport preset. Independent of the package: nothing here imports mrcnn_kp.

Boxes are matterport's: normalised (y1, x1, y2, x2), (box - [0, 0, 1, 1]) / (side - 1).
"""
import numpy as np


_GRAPH = {}


def apply_deltas_and_clip(boxes, deltas, std, window):
    """matterport's apply_box_deltas_graph then clip_boxes_graph, TF ops in its order, run as
    a graph as Keras 2 ran it (TensorFlow's graph optimiser rewrites this arithmetic: eager
    results, or numpy's, can be 1 float32 ulp apart, which is enough to move the last
    tf.image.crop_and_resize sample of a box ending on the far edge past H - 1).
    boxes, deltas [N, 4] (multiplied by std [4] in the graph, as matterport does), window [4]
    -> [N, 4]."""
    import tensorflow as tf

    key = tuple(float(v) for v in std)
    if key not in _GRAPH:
        def graph(boxes, deltas, window):
            deltas = deltas * np.array(key, np.float32)  # a constant of the graph
            height = boxes[:, 2] - boxes[:, 0]
            width = boxes[:, 3] - boxes[:, 1]
            center_y = boxes[:, 0] + 0.5 * height
            center_x = boxes[:, 1] + 0.5 * width
            center_y += deltas[:, 0] * height
            center_x += deltas[:, 1] * width
            height *= tf.exp(deltas[:, 2])
            width *= tf.exp(deltas[:, 3])
            y1 = center_y - 0.5 * height
            x1 = center_x - 0.5 * width
            y2 = y1 + height  # from y1, not from the centre
            x2 = x1 + width
            wy1, wx1, wy2, wx2 = tf.split(window, 4)
            y1 = tf.maximum(tf.minimum(y1, wy2), wy1)
            x1 = tf.maximum(tf.minimum(x1, wx2), wx1)
            y2 = tf.maximum(tf.minimum(y2, wy2), wy1)
            x2 = tf.maximum(tf.minimum(x2, wx2), wx1)
            return tf.stack([y1, x1, y2, x2], axis=1)

        _GRAPH[key] = tf.function(graph)
    return _GRAPH[key](np.asarray(boxes, np.float32), np.asarray(deltas, np.float32),
                       np.asarray(window, np.float32)).numpy()


def anchors(scales, ratios, shapes, strides, image_side):
    """matterport utils.generate_pyramid_anchors + norm_boxes, as docs/MATTERPORT.md states it:
    centres (y * stride, x * stride), h = s / sqrt(r), w = s * sqrt(r); row, column, ratio."""
    out = []
    for scale, (rows, cols), stride in zip(scales, shapes, strides):
        for y in range(rows):
            for x in range(cols):
                for r in ratios:
                    h, w = scale / np.sqrt(r), scale * np.sqrt(r)
                    cy, cx = y * stride, x * stride
                    out.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
    pixels = np.array(out, np.float64)
    return ((pixels - [0, 0, 1, 1]) / (image_side - 1)).astype(np.float32)


def proposals(probs, deltas, anchors, pre_nms_limit, count, threshold, std):
    """matterport's ProposalLayer, step by step as docs/MATTERPORT.md states it, on
    normalised (y1, x1, y2, x2) anchors -> ([B, count, 4] normalised, zero padded, [B] kept)."""
    import tensorflow as tf

    out, kept = [], []
    for b in range(len(probs)):
        k = min(pre_nms_limit, len(anchors))
        ix = tf.nn.top_k(probs[b, :, 1], k, sorted=True).indices.numpy()  # ties: lower index
        scores = probs[b, ix, 1]
        boxes = apply_deltas_and_clip(anchors[ix], deltas[b, ix], std, [0, 0, 1, 1])
        keep = tf.image.non_max_suppression(boxes, scores, count, threshold).numpy()
        padded = np.zeros((count, 4), np.float32)
        padded[:len(keep)] = boxes[keep]
        out.append(padded)
        kept.append(len(keep))
    return np.stack(out), np.array(kept)


def norm_window_graph(window, side):
    """matterport's DetectionLayer window: norm_boxes_graph(window, image_shape), in float32
    (utils.norm_boxes, used by unmold_detections, divides in float64 instead)."""
    shift = np.array([0, 0, 1, 1], np.float32)
    return (np.asarray(window, np.float32) - shift) / np.float32(side - 1)


def to_pixels(normalized, side):
    """matterport's pixel <-> normalised rule, unrounded: (y1, x1, y2, x2) -> (x1, y1, x2, y2)."""
    y1, x1, y2, x2 = np.moveaxis(normalized, -1, 0)
    s = side - 1.0
    return np.stack([x1 * s, y1 * s, x2 * s + 1, y2 * s + 1], axis=-1)


def refine_detections(rois, probs, deltas, window, config):
    """matterport's refine_detections for one image, step by step as
    docs/MATTERPORT.md states it: normalised (y1, x1, y2, x2) ROIs and window ->
    [D, 6] rows (y1, x1, y2, x2, class_id, score), zero padded."""
    import tensorflow as tf

    n = len(rois)
    class_ids = np.argmax(probs, axis=1)  # background included
    scores = probs[np.arange(n), class_ids]
    boxes = apply_deltas_and_clip(rois, deltas[np.arange(n), class_ids], config.BBOX_STD_DEV,
                                  window)
    keep = np.flatnonzero(class_ids > 0)
    if config.DETECTION_MIN_CONFIDENCE:
        keep = np.intersect1d(keep, np.flatnonzero(scores >= config.DETECTION_MIN_CONFIDENCE))
    nms_keep = []
    for class_id in np.unique(class_ids[keep]):
        ixs = keep[class_ids[keep] == class_id]
        kept = tf.image.non_max_suppression(boxes[ixs], scores[ixs],
                                            config.DETECTION_MAX_INSTANCES,
                                            config.DETECTION_NMS_THRESHOLD).numpy()
        nms_keep.extend(ixs[kept])
    keep = np.intersect1d(keep, nms_keep)  # sorted ascending
    top = tf.nn.top_k(scores[keep], min(len(keep), config.DETECTION_MAX_INSTANCES),
                      sorted=True).indices.numpy()
    keep = keep[top]
    rows = np.zeros((config.DETECTION_MAX_INSTANCES, 6), np.float32)
    rows[:len(keep)] = np.concatenate([boxes[keep], class_ids[keep, None], scores[keep, None]], 1)
    return rows


def resize_image(image, side):
    """matterport resize_image, mode "square", min_dim = max_dim = side, per
    docs/MATTERPORT.md -> (uint8 [side, side, 3], window, scale)."""
    import skimage.transform

    h, w = image.shape[:2]
    scale = max(1, side / min(h, w))
    if round(max(h, w) * scale) > side:
        scale = side / max(h, w)
    if scale != 1:
        image = skimage.transform.resize(
            image, (round(h * scale), round(w * scale)), order=1, mode="constant", cval=0,
            clip=True, preserve_range=True, anti_aliasing=False).astype(np.uint8)
    h, w = image.shape[:2]
    top, left = (side - h) // 2, (side - w) // 2
    out = np.zeros((side, side, 3), np.uint8)
    out[top:top + h, left:left + w] = image
    return out, (top, left, top + h, left + w), scale


def unmold_detections(detections, masks, original_shape, window, molded_side):
    """matterport unmold_detections + utils.unmold_mask as docs/MATTERPORT.md states them.

    detections [D, 6] (normalised y1, x1, y2, x2, class_id, score); masks [D, 28, 28] of each
    detection's class -> (int32 boxes (y1, x1, y2, x2), class_ids, scores, bool [H, W, n])."""
    import skimage.transform

    zero = np.flatnonzero(detections[:, 4] == 0)
    n = zero[0] if len(zero) else len(detections)
    boxes, class_ids = detections[:n, :4], detections[:n, 4].astype(np.int32)
    scores, masks = detections[:n, 5], masks[:n]
    s = molded_side - 1
    wy1, wx1, wy2, wx2 = ((np.array(window) - [0, 0, 1, 1]) / [s, s, s, s]).astype(np.float32)
    shift = np.array([wy1, wx1, wy1, wx1])
    wh, ww = wy2 - wy1, wx2 - wx1
    boxes = np.divide(boxes - shift, np.array([wh, ww, wh, ww]))
    h, w = original_shape[:2]
    boxes = np.around(boxes * np.array([h - 1, w - 1, h - 1, w - 1]) + [0, 0, 1, 1]).astype(
        np.int32)
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]
    full = np.zeros((h, w, len(boxes)), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        m = skimage.transform.resize(masks[i], (y2 - y1, x2 - x1), order=1, mode="constant",
                                     cval=0, clip=True, preserve_range=False,
                                     anti_aliasing=False)
        full[y1:y2, x1:x2, i] = m >= 0.5
    return boxes, class_ids, scores, full


def pyramid_roi_align(boxes, feature_maps, pool_size, image_shape):
    """matterport PyramidROIAlign for one image: boxes [N, 4] normalised, feature_maps
    [P2, P3, P4, P5] each [H, W, C] -> [N, pool, pool, C] in the input order. Level
    clip(4 + round(log2(sqrt(h w) / (224 / sqrt(image area)))), 2, 5) (tf.round: half to even),
    then tf.image.crop_and_resize, bilinear, extrapolation 0."""
    import tensorflow as tf

    boxes = tf.constant(np.asarray(boxes, np.float32))
    y1, x1, y2, x2 = tf.split(boxes, 4, axis=1)
    h, w = y2 - y1, x2 - x1
    area = tf.cast(image_shape[0] * image_shape[1], tf.float32)
    level = tf.math.log(tf.sqrt(h * w) / (224.0 / tf.sqrt(area))) / tf.math.log(2.0)
    level = tf.minimum(5, tf.maximum(2, 4 + tf.cast(tf.round(level), tf.int32)))[:, 0].numpy()
    out = np.zeros((len(level), pool_size, pool_size, feature_maps[0].shape[-1]), np.float32)
    for lvl, fmap in enumerate(feature_maps, start=2):
        ix = np.flatnonzero(level == lvl)
        if len(ix):
            out[ix] = tf.image.crop_and_resize(
                np.asarray(fmap, np.float32)[None], tf.gather(boxes, ix),
                tf.zeros(len(ix), tf.int32), (pool_size, pool_size), method="bilinear",
                extrapolation_value=0).numpy()
    return out
