"""DetectionTargetLayer: sample the training ROIs of every image and build their targets.

Training graph only. Vectorised over the batch with keras.ops, static shapes, on both backends
(the random choice uses keras.random with the layer's SeedGenerator, so JAX gets fresh samples
at every step too). Per image:

1. Candidates are the valid proposals plus, when ROI_ADD_GT_BOXES, the ground-truth person
   boxes (so every person has at least one positive ROI from the first step on).
2. IoU of every candidate with every person box (class id > 0; padding ignored). Positives
   have max IoU >= ROI_POSITIVE_IOU; negatives have max IoU < ROI_POSITIVE_IOU and overlap no
   crowd region (class id -1) by more than 0.001 IoU: crowds are never background.
3. Slots: R = TRAIN_ROIS_PER_IMAGE, of which the first P = int(R * ROI_POSITIVE_RATIO) hold
   positives drawn at random (random scores + top-k), the other R - P negatives drawn the same
   way. Unfilled slots are zero boxes with valid = False. (matterport caps the negatives at
   P / ratio - P; the fixed layout keeps every shape static and trains the classifier on
   negatives even in an image without people.)
4. Targets: class ids (the matched person's class in valid positive slots, 0 elsewhere), box
   deltas (ops.boxes.encode_deltas with BBOX_STD_DEV, positives only), mask targets (the
   matched mini mask resampled by ROIAlign at the ROI expressed in the gt box's frame, to
   MASK_SHAPE, thresholded at 0.5) and keypoint targets (ops.keypoints.encode_keypoints of
   the matched person's joints in the ROI) for the positive slots.

The mask and keypoint heads run on the P positive slots only (the first
KEYPOINT_ROIS_PER_IMAGE of them for keypoints, when that is set), which saves most of their cost.

Outputs (a tuple, in this order):
    rois [B, R, 4], roi_valid [B, R] bool, target_class_ids [B, R] int32,
    target_deltas [B, R, 4], target_masks [B, P, 28, 28], target_keypoints [B, Pk, K] int32,
    keypoint_weights [B, Pk, K] bool
"""
import keras
from keras import ops

from mrcnn_kp.model.proposals import config_from, gather_rows
from mrcnn_kp.ops import boxes as box_ops
from mrcnn_kp.ops import keypoints as keypoint_ops
from mrcnn_kp.ops import roi_align as roi_align_ops

CROWD_IOU_THRESHOLD = 0.001  # matterport: a proposal this close to a crowd is never negative


def positive_slots(config):
    """P: slots for positive ROIs at the front of each image's R training ROIs."""
    return int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)


def keypoint_slots(config):
    """Pk: positive slots whose keypoints are trained (KEYPOINT_ROIS_PER_IMAGE, 0 = all P)."""
    limit = int(config.KEYPOINT_ROIS_PER_IMAGE)
    p = positive_slots(config)
    return min(limit, p) if limit > 0 else p


def _random_pick(keys, count):
    """Indices [B, count] of the largest keys and whether each key was >= 0 (a real pick)."""
    picked, index = ops.top_k(keys, count, sorted=True)  # [B, count]
    return index, ops.greater_equal(picked, 0.0)


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class DetectionTargetLayer(keras.layers.Layer):
    """Inputs: proposals [B, N, 4], proposal_valid [B, N], gt_class_ids [B, G],
    gt_boxes [B, G, 4], gt_masks [B, G, M, M], gt_keypoints [B, G, K, 3]. See the module doc."""

    def __init__(self, config, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.config = config_from(config)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        config = self.config
        self.num_rois = int(config.TRAIN_ROIS_PER_IMAGE)
        self.num_positive = positive_slots(config)
        self.num_keypoint = keypoint_slots(config)
        candidates = config.POST_NMS_ROIS_TRAINING + (
            config.MAX_GT_INSTANCES if config.ROI_ADD_GT_BOXES else 0)
        if candidates < max(self.num_positive, self.num_rois - self.num_positive):
            raise ValueError(f"{candidates} candidate ROIs per image cannot fill "
                             f"TRAIN_ROIS_PER_IMAGE={self.num_rois} slots; raise "
                             f"POST_NMS_ROIS_TRAINING")

    # ------------------------------------------------------------------ sampling
    def _sample(self, proposals, proposal_valid, gt_class_ids, gt_boxes):
        """Random positive and negative slots -> (index, valid, matched gt) per slot."""
        config = self.config
        person = ops.greater(gt_class_ids, 0)  # [B, G]
        crowd = ops.less(gt_class_ids, 0)  # [B, G]
        boxes, valid = proposals, ops.cast(proposal_valid, "bool")
        if config.ROI_ADD_GT_BOXES:
            boxes = ops.concatenate([proposals, gt_boxes], axis=1)  # [B, C, 4]
            valid = ops.concatenate([valid, person], axis=1)  # [B, C]
        valid = ops.logical_and(valid, ops.greater(box_ops.box_area(boxes), 0.0))

        iou = box_ops.box_iou(boxes, gt_boxes)  # [B, C, G]
        person_iou = ops.where(person[:, None, :], iou, -1.0)
        best_iou = ops.max(person_iou, axis=2)  # [B, C]; -1 when the image has no person
        matched = ops.cast(ops.argmax(person_iou, axis=2), "int32")  # [B, C]
        crowd_iou = ops.max(ops.where(crowd[:, None, :], iou, 0.0), axis=2)  # [B, C]

        positive = ops.logical_and(valid, best_iou >= config.ROI_POSITIVE_IOU)
        negative = ops.logical_and(ops.logical_and(valid, best_iou < config.ROI_POSITIVE_IOU),
                                   crowd_iou <= CROWD_IOU_THRESHOLD)
        noise = keras.random.uniform(ops.shape(best_iou), seed=self.seed_generator)  # [B, C]
        pos_index, pos_valid = _random_pick(ops.where(positive, noise, -1.0), self.num_positive)
        neg_index, neg_valid = _random_pick(ops.where(negative, noise, -1.0),
                                            self.num_rois - self.num_positive)
        index = ops.concatenate([pos_index, neg_index], axis=1)  # [B, R]
        slot_valid = ops.concatenate([pos_valid, neg_valid], axis=1)  # [B, R]
        return boxes, index, slot_valid, pos_valid, ops.take_along_axis(matched, pos_index, 1)

    # ------------------------------------------------------------------ targets
    def _mask_targets(self, rois, gt_boxes, masks):
        """ROIs [B, P, 4], their gt boxes [B, P, 4] and masks [B, P, M, M] -> [B, P, 28, 28]."""
        config = self.config
        size = ops.shape(masks)[-1]
        if config.USE_MINI_MASK:
            # The mini mask spans the gt box: express the ROI in that frame, in mask pixels.
            gx1, gy1 = gt_boxes[..., 0], gt_boxes[..., 1]
            gw = ops.maximum(gt_boxes[..., 2] - gx1, 1e-3)
            gh = ops.maximum(gt_boxes[..., 3] - gy1, 1e-3)
            sx = ops.cast(size, "float32") / gw
            sy = ops.cast(ops.shape(masks)[-2], "float32") / gh
            rois = ops.stack([(rois[..., 0] - gx1) * sx, (rois[..., 1] - gy1) * sy,
                              (rois[..., 2] - gx1) * sx, (rois[..., 3] - gy1) * sy], axis=-1)
        mask_images = ops.reshape(masks, (-1,) + tuple(ops.shape(masks)[2:]) + (1,))  # [BP,M,M,1]
        flat_rois = ops.reshape(rois, (-1, 4))  # [BP, 4], roi i reads mask image i
        resampled = roi_align_ops.roi_align(
            mask_images, flat_rois, ops.arange(ops.shape(flat_rois)[0], dtype="int32"),
            output_size=tuple(config.MASK_SHAPE), spatial_scale=1.0,
            sampling_ratio=config.ROI_ALIGN_SAMPLING_RATIO,
            aligned=config.ROI_ALIGN_ALIGNED)  # [BP, 28, 28, 1]
        resampled = ops.reshape(resampled, ops.shape(rois)[:2] + tuple(config.MASK_SHAPE))
        return ops.cast(resampled >= 0.5, "float32")  # [B, P, 28, 28]

    def call(self, proposals, proposal_valid, gt_class_ids, gt_boxes, gt_masks, gt_keypoints):
        config = self.config
        gt_class_ids = ops.cast(gt_class_ids, "int32")
        boxes, index, slot_valid, pos_valid, matched = self._sample(
            proposals, proposal_valid, gt_class_ids, gt_boxes)
        p = self.num_positive
        rois = ops.where(slot_valid[..., None], gather_rows(boxes, index), 0.0)  # [B, R, 4]

        pos_rois = rois[:, :p]  # [B, P, 4]
        pos_gt_boxes = gather_rows(gt_boxes, matched)  # [B, P, 4]
        pos_class = ops.where(pos_valid, ops.take_along_axis(gt_class_ids, matched, 1), 0)
        neg_class = ops.zeros_like(index[:, p:])
        target_class_ids = ops.concatenate([pos_class, neg_class], axis=1)  # [B, R]

        deltas = box_ops.encode_deltas(pos_gt_boxes, pos_rois, config.BBOX_STD_DEV)  # [B, P, 4]
        deltas = ops.where(pos_valid[..., None], deltas, 0.0)
        target_deltas = ops.concatenate(
            [deltas, ops.zeros_like(rois[:, p:])], axis=1)  # [B, R, 4]

        masks = self._mask_targets(pos_rois, pos_gt_boxes, gather_rows(gt_masks, matched))
        masks = ops.where(pos_valid[:, :, None, None], masks, 0.0)  # [B, P, 28, 28]

        pk = self.num_keypoint
        keypoints = gather_rows(gt_keypoints, matched[:, :pk])  # [B, Pk, K, 3]
        kp_targets, kp_valid = keypoint_ops.encode_keypoints(
            keypoints, pos_rois[:, :pk], config.KEYPOINT_MASK_SHAPE)  # [B, Pk, K]
        kp_valid = ops.logical_and(kp_valid, pos_valid[:, :pk, None])
        kp_targets = ops.where(kp_valid, kp_targets, 0)

        # Inputs are constants (the proposals are stop_gradient'ed), so are the targets.
        return rois, slot_valid, target_class_ids, target_deltas, masks, kp_targets, kp_valid

    def compute_output_spec(self, proposals, proposal_valid, gt_class_ids, gt_boxes, gt_masks,
                            gt_keypoints):
        config = self.config
        b, r, p, pk = proposals.shape[0], self.num_rois, self.num_positive, self.num_keypoint
        k = config.NUM_KEYPOINTS
        return (keras.KerasTensor((b, r, 4), "float32"), keras.KerasTensor((b, r), "bool"),
                keras.KerasTensor((b, r), "int32"), keras.KerasTensor((b, r, 4), "float32"),
                keras.KerasTensor((b, p) + tuple(config.MASK_SHAPE), "float32"),
                keras.KerasTensor((b, pk, k), "int32"), keras.KerasTensor((b, pk, k), "bool"))

    def get_config(self):
        base = super().get_config()
        base.update(config=self.config.to_dict(), seed=self.seed)
        return base
