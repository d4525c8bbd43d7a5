"""targets: matterport's RPN anchor rules (crowd-aware, balanced, seeded), mini masks, and the
keypoint targets of real COCO persons (one-hot cell, decoded back within one cell)."""
import keras
import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.data import targets
from mrcnn_kp.data.pipeline import DataGenerator
from mrcnn_kp.ops.anchors import generate_pyramid_anchors
from mrcnn_kp.ops.boxes import box_iou_numpy, decode_deltas_numpy, encode_deltas_numpy
from mrcnn_kp.ops.keypoints import decode_heatmaps, encode_keypoints_numpy

GT = np.array([10, 10, 50, 50], np.float32)
ANCHORS = np.array([
    [10, 10, 50, 50],  # 0: IoU 1 -> positive
    [12, 12, 52, 52],  # 1: IoU 0.82 -> positive
    [30, 10, 70, 50],  # 2: IoU 0.33 -> neutral
    [100, 100, 140, 140],  # 3: IoU 0 -> negative
    [200, 200, 240, 240],  # 4: inside the crowd region -> neutral, not negative
    [300, 300, 330, 330],  # 5: the second person's best anchor (IoU 0.36) -> positive
    [150, 150, 190, 190],  # 6: IoU 0 -> negative
], np.float32)


def rpn(class_ids, boxes, anchors=ANCHORS, budget=256, seed=0):
    config = TinyConfig(RPN_TRAIN_ANCHORS_PER_IMAGE=budget)
    return targets.build_rpn_targets(anchors, class_ids, boxes, config,
                                     np.random.default_rng(seed))


# ------------------------------------------------------------------ RPN
def test_rpn_matches_follow_matterport_rules():
    boxes = np.array([GT, [190, 190, 250, 250], [300, 300, 350, 350]], np.float32)
    match, deltas = rpn([1, -1, 1], boxes)
    assert match.dtype == np.int32 and deltas.shape == (7, 4) and deltas.dtype == np.float32
    assert match.tolist() == [1, 1, 0, -1, 0, 1, -1]
    # deltas decode back onto each positive's person
    config = TinyConfig()
    decoded = decode_deltas_numpy(deltas[[0, 1, 5]], ANCHORS[[0, 1, 5]], config.RPN_BBOX_STD_DEV)
    np.testing.assert_allclose(decoded, boxes[[0, 0, 2]], atol=1e-3)
    assert (deltas[match != 1] == 0).all()


def test_rpn_without_persons_gives_only_negatives_away_from_crowds():
    match, deltas = rpn(np.zeros((0,), np.int32), np.zeros((0, 4), np.float32))
    assert match.tolist() == [-1] * 7 and not deltas.any()
    match, _ = rpn([-1], np.array([[190, 190, 250, 250]], np.float32))
    assert match.tolist() == [-1, -1, -1, -1, 0, -1, -1]
    match, _ = rpn([0, 0], np.array([GT, GT]))  # padding rows are ignored
    assert (match == -1).all()


def test_rpn_sampling_is_balanced_and_seeded():
    config = TinyConfig()
    anchors = generate_pyramid_anchors(config)
    boxes = np.array([[20, 20, 60, 100], [64, 30, 120, 120], [5, 60, 40, 90]], np.float32)
    budget = config.RPN_TRAIN_ANCHORS_PER_IMAGE  # 64
    match, _ = targets.build_rpn_targets(anchors, [1, 1, 1], boxes, config,
                                         np.random.default_rng(0))
    positives, negatives = (match == 1).sum(), (match == -1).sum()
    assert 3 <= positives <= budget // 2
    assert positives + negatives == budget
    again, _ = targets.build_rpn_targets(anchors, [1, 1, 1], boxes, config,
                                         np.random.default_rng(0))
    other, _ = targets.build_rpn_targets(anchors, [1, 1, 1], boxes, config,
                                         np.random.default_rng(1))
    np.testing.assert_array_equal(match, again)
    assert (match != other).any()
    # many positives are cut to half the budget
    big = TinyConfig(RPN_POSITIVE_IOU=0.3)
    match, _ = targets.build_rpn_targets(anchors, [1, 1, 1], boxes, big, np.random.default_rng(0))
    assert (match == 1).sum() == budget // 2 and (match == -1).sum() == budget // 2


def reference_rpn_match(anchors, class_ids, boxes, config):
    """matterport's build_rpn_targets before subsampling: every anchor's IoU, brute force."""
    class_ids, boxes = np.asarray(class_ids), np.asarray(boxes, np.float32)
    match = np.zeros(len(anchors), np.int32)
    no_crowd = np.ones(len(anchors), bool)
    if (class_ids < 0).any():
        no_crowd = box_iou_numpy(anchors, boxes[class_ids < 0]).max(axis=1) < 0.001
    objects = boxes[class_ids > 0]
    if not len(objects):
        match[no_crowd] = -1
        return match, np.zeros(len(anchors), np.int64)
    overlaps = box_iou_numpy(anchors, objects)  # [A, G]
    best_gt, best_iou = overlaps.argmax(axis=1), overlaps.max(axis=1)
    match[(best_iou < config.RPN_NEGATIVE_IOU) & no_crowd] = -1
    gt_best = overlaps.max(axis=0)
    match[((overlaps == gt_best) & (gt_best > 0)).any(axis=1)] = 1
    match[best_iou >= config.RPN_POSITIVE_IOU] = 1
    return match, best_gt


@pytest.mark.parametrize("seed", range(4))
def test_rpn_matches_equal_a_brute_force_reference(seed):
    """The anchor pruning (AnchorIndex) changes nothing: random persons from 3 px to the whole
    image, crowd regions, with sampling off (a budget larger than the anchors)."""
    config = TinyConfig(RPN_TRAIN_ANCHORS_PER_IMAGE=10 ** 6)
    anchors = generate_pyramid_anchors(config)
    rng = np.random.default_rng(seed)
    n = 8
    size = np.exp(rng.uniform(np.log(3), np.log(128), (n, 2)))  # [n, 2] w, h
    corner = rng.uniform(-10, 128, (n, 2))
    boxes = np.concatenate([corner, corner + size], axis=1).clip(0, 128).astype(np.float32)
    class_ids = np.where(rng.random(n) < 0.2, -1, 1)
    match, deltas = targets.build_rpn_targets(anchors, class_ids, boxes, config, rng)
    want, best_gt = reference_rpn_match(anchors, class_ids, boxes, config)
    np.testing.assert_array_equal(match, want)
    positive = want == 1
    objects = boxes[class_ids > 0]
    expected = encode_deltas_numpy(objects[best_gt[positive]], anchors[positive],
                                   config.RPN_BBOX_STD_DEV)
    np.testing.assert_allclose(deltas[positive], expected, atol=1e-6)


# ------------------------------------------------------------------ mini masks
def test_minimize_masks_crops_to_the_box_and_thresholds():
    masks = np.zeros((40, 60, 2), bool)
    masks[10:30, 20:50, 0] = True  # a rectangle that is exactly its box
    masks[10:30, 20:35, 1] = True  # the left half of the same box
    boxes = np.array([[20, 10, 50, 30], [20, 10, 50, 30]], np.float32)
    mini = targets.minimize_masks(masks, boxes, (28, 28))
    assert mini.shape == (2, 28, 28) and mini.dtype == np.float32
    assert mini[0].min() == 1.0
    assert mini[1][:, :14].min() == 1.0 and mini[1][:, 14:].max() == 0.0


def test_expand_mini_masks_restores_the_shape():
    yy, xx = np.mgrid[0:80, 0:100]
    ellipse = ((xx - 50.0) / 30) ** 2 + ((yy - 40.0) / 20) ** 2 <= 1.0  # [80, 100]
    box = np.array([[20, 20, 80, 60]], np.float32)
    mini = targets.minimize_masks(ellipse[:, :, None], box, (56, 56))
    back = targets.expand_mini_masks(mini, box, (80, 100))[:, :, 0]
    iou = (back & ellipse).sum() / (back | ellipse).sum()
    assert iou > 0.95


# ------------------------------------------------------------------ keypoint targets on COCO
def test_every_visible_joint_lands_on_its_cell_and_decodes_back(coco_dataset):
    """Ground-truth boxes as ROIs: each labelled joint inside its box gets the one-hot cell
    that contains it, and decoding a one-hot heatmap returns it within one cell."""
    config = TinyConfig(IMAGES_PER_GPU=4, MAX_GT_INSTANCES=20)
    subset = [coco_dataset.image_index(i) for i in coco_dataset.coco_image_ids[:12]]
    generator = DataGenerator(coco_dataset, config, shuffle=False)
    generator.image_order = lambda epoch=None: np.array(subset)
    size = config.KEYPOINT_MASK_SHAPE
    checked = 0
    for b in range(3):
        batch = generator[b]
        person = batch["input_gt_class_ids"] > 0  # [B, G]
        keypoints = batch["input_gt_keypoints"][person]  # [N, 17, 3]
        rois = batch["input_gt_boxes"][person]  # [N, 4]
        cells, valid = encode_keypoints_numpy(keypoints, rois, size)  # [N, 17]
        x, y, v = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2]
        x1, y1, x2, y2 = (rois[:, i:i + 1] for i in range(4))
        inside = (v > 0) & (x >= x1) & (x <= x2) & (y >= y1) & (y <= y2)
        np.testing.assert_array_equal(valid, inside & (x2 > x1) & (y2 > y1))
        cell_w, cell_h = (x2 - x1) / size, (y2 - y1) / size  # [N, 1]
        cx, cy = cells % size, cells // size
        tol = 1e-3
        ok = ((x1 + cx * cell_w <= x + tol) & (x <= x1 + (cx + 1) * cell_w + tol)
              & (y1 + cy * cell_h <= y + tol) & (y <= y1 + (cy + 1) * cell_h + tol))
        assert ok[valid].all()
        # A peaked heatmap on the target cell (a one-hot would vanish when a small roi
        # shrinks the 56x56 map), decoded the model's way.
        grid = np.arange(size, dtype=np.float32)
        gx = (grid[None, None, None, :] - cx[..., None, None]) ** 2  # [N, 17, 1, S]
        gy = (grid[None, None, :, None] - cy[..., None, None]) ** 2  # [N, 17, S, 1]
        logits = (-(gx + gy) / (2 * 1.5 ** 2)).transpose(0, 2, 3, 1)  # [N, S, S, 17]
        decoded = keras.ops.convert_to_numpy(decode_heatmaps(logits, rois))  # [N, 17, 3]
        # within one cell, or one pixel for rois under 56 px
        tol_x = np.broadcast_to(np.maximum(cell_w, 1.0), x.shape)
        tol_y = np.broadcast_to(np.maximum(cell_h, 1.0), y.shape)
        assert (np.abs(decoded[..., 0] - x)[valid] <= tol_x[valid]).all()
        assert (np.abs(decoded[..., 1] - y)[valid] <= tol_y[valid]).all()
        checked += int(valid.sum())
        assert valid.sum() >= 0.9 * (v > 0).sum()  # COCO joints lie (almost) inside boxes
    assert checked > 100


@pytest.mark.parametrize("mini", [True, False])
def test_mask_targets_cover_the_person(coco_dataset, mini):
    config = TinyConfig(USE_MINI_MASK=mini)
    generator = DataGenerator(coco_dataset, config, shuffle=False)
    batch = generator[0]
    side = config.MINI_MASK_SHAPE[0] if mini else config.IMAGE_MAX_DIM
    assert batch["input_gt_masks"].shape == (2, config.MAX_GT_INSTANCES, side, side)
    person = batch["input_gt_class_ids"] > 0
    masks, boxes = batch["input_gt_masks"][person], batch["input_gt_boxes"][person]
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert batch["input_gt_masks"][~person].max() == 0.0
    if mini:  # a person fills a good part of its own box
        assert (masks.mean(axis=(1, 2)) > 0.2).all()
        return
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        inside = mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].sum()
        assert inside == mask.sum() and inside > 0.2 * (x2 - x1) * (y2 - y1)
