"""Training targets computed in numpy, per image: RPN anchor labels and deltas, mini masks.

ROI sampling and the head targets (class, box, mask, keypoint) are computed inside the model
graph from the ground truth these functions and the pipeline produce.

RPN rules are matterport's (build_rpn_targets):
- an anchor whose best IoU with a person is >= RPN_POSITIVE_IOU is positive, and so is each
  person's best anchor (every tied best anchor);
- an anchor whose best IoU is < RPN_NEGATIVE_IOU is negative unless it overlaps a crowd
  region (IoU > 0.001): crowd regions are neither objects nor background;
- positives are subsampled to at most half of RPN_TRAIN_ANCHORS_PER_IMAGE, then negatives to
  the rest, with the caller's seeded generator.
IoU is computed with mrcnn_kp.ops.boxes.box_iou_numpy, only for the anchors that touch a box.
"""
import numpy as np

from mrcnn_kp.ops.anchors import generate_pyramid_anchors
from mrcnn_kp.ops.boxes import box_iou_numpy, encode_deltas_numpy

# Anchors touching a crowd region more than this are never negatives (matterport's value).
CROWD_IOU_THRESHOLD = 0.001


def build_rpn_targets(anchors, gt_class_ids, gt_boxes, config, rng):
    """Anchor labels and regression targets of one image.

    anchors: float32 [A, 4] (x1, y1, x2, y2) molded pixels (generate_pyramid_anchors).
    gt_class_ids: int [N]; > 0 objects, < 0 crowd regions, 0 ignored (padding).
    gt_boxes: float32 [N, 4] (x1, y1, x2, y2) molded pixels.
    rng: numpy Generator used for the balanced subsampling.
    Returns rpn_match int32 [A] (1 positive, -1 negative, 0 neutral) and rpn_bbox float32
    [A, 4]: (dy, dx, log dh, log dw) / RPN_BBOX_STD_DEV for positives, 0 elsewhere.
    """
    anchors = np.asarray(anchors, dtype=np.float32)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    num_anchors = anchors.shape[0]
    rpn_match = np.zeros([num_anchors], dtype=np.int32)  # [A]
    rpn_bbox = np.zeros([num_anchors, 4], dtype=np.float32)  # [A, 4]

    crowd_boxes = gt_boxes[gt_class_ids < 0]  # [C, 4]
    object_boxes = gt_boxes[gt_class_ids > 0]  # [G, 4]
    # IoU is computed only for anchors that touch some box: the others have IoU 0 with all
    # of them, and they are most of the 261,888 anchors at 1024 px.
    no_crowd = np.ones([num_anchors], dtype=bool)  # [A]
    if len(crowd_boxes):
        near = np.flatnonzero(_touching(anchors, crowd_boxes))  # [a]
        if len(near):
            crowd_iou = box_iou_numpy(anchors[near], crowd_boxes)  # [a, C]
            no_crowd[near] = crowd_iou.max(axis=1) < CROWD_IOU_THRESHOLD

    anchor_best_gt = np.zeros([num_anchors], dtype=np.int64)  # [A]
    if len(object_boxes):
        near = np.flatnonzero(_touching(anchors, object_boxes))  # [a]
        overlaps = box_iou_numpy(anchors[near], object_boxes)  # [a, G]
        anchor_best_iou = np.zeros([num_anchors], dtype=np.float32)  # [A]
        if len(near):
            anchor_best_gt[near] = overlaps.argmax(axis=1)
            anchor_best_iou[near] = overlaps.max(axis=1)
        rpn_match[(anchor_best_iou < config.RPN_NEGATIVE_IOU) & no_crowd] = -1
        # Every person's best anchor(s) are positive, whatever their IoU (if any overlap).
        if len(near):
            gt_best_iou = overlaps.max(axis=0)  # [G]
            best_for_some_gt = (overlaps == gt_best_iou[None, :]) & (gt_best_iou[None, :] > 0)
            rpn_match[near[best_for_some_gt.any(axis=1)]] = 1
        rpn_match[anchor_best_iou >= config.RPN_POSITIVE_IOU] = 1
    else:
        rpn_match[no_crowd] = -1

    # Balance: at most half positives, negatives fill the rest. Drawing the few anchors to
    # keep (not the many to drop) is the same uniform subset, and 1000x cheaper at 1024 px.
    budget = int(config.RPN_TRAIN_ANCHORS_PER_IMAGE)
    positive = np.flatnonzero(rpn_match == 1)
    if len(positive) > budget // 2:
        rpn_match[positive] = 0
        rpn_match[rng.choice(positive, budget // 2, replace=False)] = 1
    num_positive = min(len(positive), budget // 2)
    negative = np.flatnonzero(rpn_match == -1)
    if len(negative) > budget - num_positive:
        rpn_match[negative] = 0
        rpn_match[rng.choice(negative, budget - num_positive, replace=False)] = -1

    positive = np.flatnonzero(rpn_match == 1)
    if len(positive):
        rpn_bbox[positive] = encode_deltas_numpy(object_boxes[anchor_best_gt[positive]],
                                                 anchors[positive], config.RPN_BBOX_STD_DEV)
    return rpn_match, rpn_bbox


def _touching(anchors, boxes):
    """bool [A]: the anchor's interior intersects at least one of boxes [N, 4]."""
    hit = np.zeros([anchors.shape[0]], dtype=bool)
    x1, y1, x2, y2 = (anchors[:, i] for i in range(4))
    for bx1, by1, bx2, by2 in boxes:
        hit |= (x1 < bx2) & (x2 > bx1) & (y1 < by2) & (y2 > by1)
    return hit


def rpn_targets_for_config(gt_class_ids, gt_boxes, config, rng):
    """build_rpn_targets with the config's anchors (cached by mrcnn_kp.ops.anchors)."""
    return build_rpn_targets(generate_pyramid_anchors(config), gt_class_ids, gt_boxes, config,
                             rng)


# ------------------------------------------------------------------ mini masks
def _bilinear_grid(mask, xs, ys):
    """Sample a 2-D mask (bool or float) at continuous points xs [W'] x ys [H'] (pixel
    centres at i + 0.5), bilinear, edge values clamped -> float32 [H', W']."""
    height, width = mask.shape
    fx = np.clip(xs - 0.5, 0.0, width - 1.0)  # pixel-index coordinates [W']
    fy = np.clip(ys - 0.5, 0.0, height - 1.0)  # [H']
    x0 = np.floor(fx).astype(np.int64)
    y0 = np.floor(fy).astype(np.int64)
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    wx = (fx - x0).astype(np.float32)[None, :]  # [1, W']
    wy = (fy - y0).astype(np.float32)[:, None]  # [H', 1]
    top = mask[np.ix_(y0, x0)] * (1 - wx) + mask[np.ix_(y0, x1)] * wx  # [H', W']
    bottom = mask[np.ix_(y1, x0)] * (1 - wx) + mask[np.ix_(y1, x1)] * wx
    return top * (1 - wy) + bottom * wy


def minimize_masks(masks, boxes, mini_shape):
    """Crop each mask to its box and resize to mini_shape: bilinear, threshold 0.5.

    masks: bool [H, W, N]; boxes: [N, 4] (x1, y1, x2, y2) in the masks' pixels (continuous,
    may be fractional); mini_shape: (h, w). Returns float32 [N, h, w] of 0/1: cell (i, j) is
    the mask at the box point x1 + (j + 0.5) / w * (x2 - x1), y1 + (i + 0.5) / h * (y2 - y1).
    """
    mini_h, mini_w = int(mini_shape[0]), int(mini_shape[1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((boxes.shape[0], mini_h, mini_w), dtype=np.float32)
    cells_x = (np.arange(mini_w) + 0.5) / mini_w  # [w] fractions of the box width
    cells_y = (np.arange(mini_h) + 0.5) / mini_h  # [h]
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        xs = x1 + cells_x * (x2 - x1)
        ys = y1 + cells_y * (y2 - y1)
        sampled = _bilinear_grid(masks[:, :, i], xs, ys)  # [h, w], only h * w * 4 reads
        out[i] = sampled >= 0.5
    return out


def expand_mini_masks(mini_masks, boxes, image_shape):
    """Inverse of minimize_masks (for inspection): mini masks [N, h, w] placed back into
    full-size bool masks [H, W, N] at their boxes [N, 4] (x1, y1, x2, y2)."""
    height, width = int(image_shape[0]), int(image_shape[1])
    mini_masks = np.asarray(mini_masks, dtype=np.float32)
    count, mini_h, mini_w = mini_masks.shape
    out = np.zeros((height, width, count), dtype=bool)
    centres_x = np.arange(width) + 0.5  # [W] pixel centres
    centres_y = np.arange(height) + 0.5  # [H]
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        if x2 <= x1 or y2 <= y1:
            continue
        cols = np.flatnonzero((centres_x >= x1) & (centres_x < x2))
        rows = np.flatnonzero((centres_y >= y1) & (centres_y < y2))
        if not cols.size or not rows.size:
            continue
        # Positions of the pixel centres on the mini grid (cell centres at k + 0.5).
        gx = (centres_x[cols] - x1) / (x2 - x1) * mini_w
        gy = (centres_y[rows] - y1) / (y2 - y1) * mini_h
        sampled = _bilinear_grid(mini_masks[i], gx, gy)  # [rows, cols]
        out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1, i] = sampled >= 0.5
    return out
