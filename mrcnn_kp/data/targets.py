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
IoU is computed with mrcnn_kp.ops.boxes.box_iou_numpy, only for the anchors that touch a box
and whose area allows an IoU >= RPN_NEGATIVE_IOU (AnchorIndex); the result is the same as
computing every anchor's IoU.
"""
import numpy as np

from mrcnn_kp.ops.anchors import generate_pyramid_anchors
from mrcnn_kp.ops.boxes import box_iou_numpy, encode_deltas_numpy

# Anchors touching a crowd region more than this are never negatives (matterport's value).
CROWD_IOU_THRESHOLD = 0.001


class AnchorIndex:
    """Anchors sorted by area, so the anchors that can reach a given IoU with a box are found
    by two binary searches instead of a scan of every anchor.

    IoU(a, b) <= min(area a, area b) / max(area a, area b), so an anchor can only reach IoU t
    with a box if its area lies in [t * area, area / t].
    """

    def __init__(self, anchors):
        self.anchors = np.asarray(anchors, dtype=np.float32)  # [A, 4]
        areas = ((self.anchors[:, 2] - self.anchors[:, 0])
                 * (self.anchors[:, 3] - self.anchors[:, 1]))  # [A]
        self.order = np.argsort(areas, kind="stable")  # [A]
        self.sorted_areas = areas[self.order]  # [A]

    def __len__(self):
        return self.anchors.shape[0]

    def candidates(self, boxes, min_iou):
        """Sorted indices of the anchors that touch some box [N, 4] and could reach min_iou
        with it (every touching anchor when min_iou is 0)."""
        picked = []
        for box in np.asarray(boxes, dtype=np.float32).reshape(-1, 4):
            area = float((box[2] - box[0]) * (box[3] - box[1]))
            if min_iou > 0:
                lo = np.searchsorted(self.sorted_areas, area * min_iou, side="left")
                hi = np.searchsorted(self.sorted_areas, area / min_iou, side="right")
                index = self.order[lo:hi]
            else:
                index = self.order
            picked.append(index[_touching(self.anchors[index], box[None])])
        if not picked:
            return np.zeros((0,), dtype=np.int64)
        return np.unique(np.concatenate(picked))


def build_rpn_targets(anchors, gt_class_ids, gt_boxes, config, rng):
    """Anchor labels and regression targets of one image.

    anchors: float32 [A, 4] (x1, y1, x2, y2) molded pixels (generate_pyramid_anchors), or an
        AnchorIndex of them (faster when reused: rpn_targets_for_config caches one).
    gt_class_ids: int [N]; > 0 objects, < 0 crowd regions, 0 ignored (padding).
    gt_boxes: float32 [N, 4] (x1, y1, x2, y2) molded pixels.
    rng: numpy Generator used for the balanced subsampling.
    Returns rpn_match int32 [A] (1 positive, -1 negative, 0 neutral) and rpn_bbox float32
    [A, 4]: (dy, dx, log dh, log dw) / RPN_BBOX_STD_DEV for positives, 0 elsewhere.
    """
    index = anchors if isinstance(anchors, AnchorIndex) else AnchorIndex(anchors)
    anchors = index.anchors
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    num_anchors = len(index)
    rpn_match = np.zeros([num_anchors], dtype=np.int32)  # [A]
    rpn_bbox = np.zeros([num_anchors, 4], dtype=np.float32)  # [A, 4]

    crowd_boxes = gt_boxes[gt_class_ids < 0]  # [C, 4]
    object_boxes = gt_boxes[gt_class_ids > 0]  # [G, 4]
    no_crowd = np.ones([num_anchors], dtype=bool)  # [A]
    if len(crowd_boxes):
        near = index.candidates(crowd_boxes, 0.0)  # [a] every anchor touching a crowd
        if len(near):
            crowd_iou = box_iou_numpy(anchors[near], crowd_boxes)  # [a, C]
            no_crowd[near] = crowd_iou.max(axis=1) < CROWD_IOU_THRESHOLD

    anchor_best_gt = np.zeros([num_anchors], dtype=np.int64)  # [A]
    if len(object_boxes):
        # Only these anchors can have IoU >= RPN_NEGATIVE_IOU; all others are below it.
        threshold = float(config.RPN_NEGATIVE_IOU)
        near = index.candidates(object_boxes, threshold)  # [a]
        overlaps = box_iou_numpy(anchors[near], object_boxes)  # [a, G]
        anchor_best_iou = np.zeros([num_anchors], dtype=np.float32)  # [A]
        gt_best_iou = np.zeros([len(object_boxes)], dtype=np.float32)  # [G]
        if len(near):
            anchor_best_gt[near] = overlaps.argmax(axis=1)
            anchor_best_iou[near] = overlaps.max(axis=1)
            gt_best_iou = overlaps.max(axis=0)
        rpn_match[(anchor_best_iou < config.RPN_NEGATIVE_IOU) & no_crowd] = -1
        # Every person's best anchor(s) are positive, whatever their IoU (if any overlap). A
        # best IoU >= threshold found among `near` is the best of all anchors.
        found = gt_best_iou >= threshold  # [G]
        if len(near):
            best_for_some_gt = ((overlaps == gt_best_iou[None, :]) & (gt_best_iou[None, :] > 0)
                                & found[None, :])  # [a, G]
            rpn_match[near[best_for_some_gt.any(axis=1)]] = 1
        for g in np.flatnonzero(~found):
            # No anchor reaches the threshold with this person (tiny, or a rare shape): its
            # best anchors can be anywhere, so search every anchor touching it.
            touching = index.candidates(object_boxes[g:g + 1], 0.0)  # [t]
            if not len(touching):
                continue
            iou = box_iou_numpy(anchors[touching], object_boxes[g:g + 1])[:, 0]  # [t]
            if iou.max() <= 0:
                continue
            best = touching[iou == iou.max()]
            rpn_match[best] = 1
            anchor_best_gt[best] = box_iou_numpy(anchors[best], object_boxes).argmax(axis=1)
        rpn_match[anchor_best_iou >= config.RPN_POSITIVE_IOU] = 1
    else:
        rpn_match[no_crowd] = -1

    # Balance: at most half positives, negatives fill the rest. Drawing the few anchors to
    # keep (not the many to drop) is the same uniform subset, and far cheaper at 1024 px.
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


_ANCHOR_INDEX_CACHE = {}


def anchor_index_for_config(config):
    """The AnchorIndex of config's anchors, built once per anchor layout."""
    anchors = generate_pyramid_anchors(config)  # cached, read-only
    key = (id(anchors), anchors.shape)
    if key not in _ANCHOR_INDEX_CACHE:
        _ANCHOR_INDEX_CACHE.clear()  # one layout at a time is the normal case
        _ANCHOR_INDEX_CACHE[key] = (anchors, AnchorIndex(anchors))  # keeps anchors alive
    return _ANCHOR_INDEX_CACHE[key][1]


def rpn_targets_for_config(gt_class_ids, gt_boxes, config, rng):
    """build_rpn_targets with the config's anchors (index cached)."""
    return build_rpn_targets(anchor_index_for_config(config), gt_class_ids, gt_boxes, config,
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
