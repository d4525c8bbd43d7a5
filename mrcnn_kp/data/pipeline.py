"""Training batches: a keras.utils.PyDataset of padded, static-shape numpy dicts.

    train = DataGenerator(dataset, config, shuffle=True, augment=True, seed=0, workers=2)
    model.fit(train, epochs=..., shuffle=False)   # the generator shuffles, seeded, itself

Each batch is the dict of docs/DESIGN.md ("A training batch"): input_image,
input_image_meta, input_rpn_match, input_rpn_bbox, input_gt_class_ids, input_gt_boxes,
input_gt_masks, input_gt_keypoints (inputs only, no targets: the losses are model outputs).

Everything is numpy, and every random choice (order, flip, scale jitter, RPN subsampling) comes
from a generator seeded by (seed, epoch, batch index, slot), so a batch depends only on those
numbers: the same on the TensorFlow and JAX backends, with or without worker threads, in any
order of requests. Pass `shuffle=False` to `fit`: Keras' own shuffle of batch indices is
unseeded.
"""
import math
from collections import Counter

import keras
import numpy as np

from mrcnn_kp.data import targets, transforms
from mrcnn_kp.data.dataset import ImageReadError
from mrcnn_kp.image_meta import compose_image_meta
from mrcnn_kp.utils import get_logger

# How many following images are tried when one cannot be loaded.
MAX_SUBSTITUTES = 10
# Ranking used when an image has more instances than MAX_GT_INSTANCES (lower is kept first).
_KEEP_PERSON_WITH_KEYPOINTS, _KEEP_PERSON, _KEEP_CROWD = 0, 1, 2


def _rng(*words):
    return np.random.default_rng([int(w) for w in words])


def load_image_gt(dataset, config, image_id, augment=False, rng=None, resize_method="pil"):
    """One image molded for training, with its instances in molded pixels.

    augment: random horizontal flip (config.AUGMENT_FLIP) and scale jitter
    (config.AUGMENT_SCALE_RANGE), drawn from rng.
    Returns a dict: image uint8 [H, W, 3] (the canvas, IMAGE_SHAPE), image_meta float32
    [12 + NUM_CLASSES], class_ids int32 [N], boxes float32 [N, 4], masks float32 [N, M, M]
    (mini masks, or [N, H, W] full masks when USE_MINI_MASK is False), keypoints float32
    [N, K, 3]. Instances whose box left the image (scale-jitter crop) are dropped; joints that
    left it get v = 0.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    image = dataset.load_image(image_id)  # [H, W, 3] uint8
    instances = dataset.load_instances(image_id)
    height, width = image.shape[:2]
    class_ids = instances["class_ids"]  # [N]
    boxes = instances["boxes"]  # [N, 4] original pixels
    masks = instances["masks"]  # [H, W, N] bool
    keypoints = instances["keypoints"]  # [N, K, 3]
    if masks.shape[:2] != (height, width):
        raise ValueError(f"{dataset.image_reference(image_id)}: masks are {masks.shape[:2]} but "
                         f"the image is {(height, width)}")

    canvas = transforms.config_canvas(config)  # (height, width)
    scale = transforms.compute_scale(height, width, config)
    if augment:
        if config.AUGMENT_FLIP and rng.random() < 0.5:
            image, boxes, masks, keypoints = transforms.flip_horizontal(image, boxes, masks,
                                                                        keypoints)
        scale *= transforms.random_scale_factor(config, rng)
    new_h, new_w = int(round(height * scale)), int(round(width * scale))
    if augment:
        padding = transforms.jitter_padding(new_h, new_w, canvas, rng)
    else:
        padding = transforms.centred_padding(new_h, new_w, canvas)
    window = transforms.window_from_padding(new_h, new_w, padding, canvas)
    molded = transforms.place_image(image, scale, padding, canvas, resize_method)  # [H, W, 3]

    molded_boxes = transforms.resize_boxes(boxes, scale, padding, window)  # [N, 4]
    molded_keypoints = transforms.resize_keypoints(keypoints, scale, padding, window)
    keep = ((molded_boxes[:, 2] - molded_boxes[:, 0]) >= 1.0) & \
           ((molded_boxes[:, 3] - molded_boxes[:, 1]) >= 1.0)  # [N]
    if config.USE_MINI_MASK:
        left, top = padding[1][0], padding[0][0]
        # The (clipped) molded box seen in original pixels: crop the mask there.
        source_boxes = (molded_boxes - np.array([left, top, left, top], np.float32)) / scale
        molded_masks = targets.minimize_masks(masks[:, :, keep], source_boxes[keep],
                                              config.MINI_MASK_SHAPE)  # [n, m, m]
    else:
        full = transforms.resize_masks(masks[:, :, keep], scale, padding, canvas)  # [H, W, n]
        molded_masks = np.transpose(full, (2, 0, 1)).astype(np.float32)  # [n, H, W]

    meta = compose_image_meta(image_id, (height, width, 3), molded.shape, window, scale,
                              dataset.active_class_ids(image_id))
    return {"image": molded, "image_meta": meta, "class_ids": class_ids[keep].astype(np.int32),
            "boxes": molded_boxes[keep], "masks": molded_masks,
            "keypoints": molded_keypoints[keep]}


def select_instances(class_ids, keypoints, limit):
    """Indices of at most `limit` instances, original order kept: persons with keypoints
    first, then persons without, then crowd regions."""
    if len(class_ids) <= limit:
        return np.arange(len(class_ids))
    has_keypoints = (keypoints[..., 2] > 0).any(axis=-1)  # [N]
    rank = np.where(class_ids < 0, _KEEP_CROWD,
                    np.where(has_keypoints, _KEEP_PERSON_WITH_KEYPOINTS, _KEEP_PERSON))
    chosen = np.argsort(rank, kind="stable")[:limit]
    return np.sort(chosen)


class DataGenerator(keras.utils.PyDataset):
    """Batches of config.BATCH_SIZE images for the training model (inputs only).

    dataset: a prepared mrcnn_kp.data.dataset.Dataset.
    shuffle: a new seeded image order every epoch (epoch counted by on_epoch_end / set_epoch).
    augment: flip and scale jitter per config.
    workers, use_multiprocessing, max_queue_size: keras.utils.PyDataset's.
    len() is the number of batches per epoch, ceil(num_images / BATCH_SIZE); the last batch
    is filled by wrapping around to the start of the order. An image that cannot be read is
    logged, counted in `failures`, and replaced by the next one in the order.
    num_shards, shard_index: data-parallel workers. The epoch's order (the same on every
    worker) is cut into global batches of BATCH_SIZE x num_shards images and this worker takes
    slot block shard_index of each: every image of an epoch is read by exactly one worker, and
    N workers x BATCH_SIZE see the images (and augmentations) of 1 worker x N*BATCH_SIZE.
    """

    def __init__(self, dataset, config, shuffle=True, augment=False, seed=0, workers=1,
                 use_multiprocessing=False, max_queue_size=10, resize_method="pil", num_shards=1,
                 shard_index=0):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        if dataset.num_images == 0:
            raise ValueError("the dataset has no images: nothing to train on (see its load "
                             "summary for what was skipped)")
        if not 0 <= int(shard_index) < int(num_shards):
            raise ValueError(f"shard_index {shard_index} is not in 0..{int(num_shards) - 1}")
        self.dataset = dataset
        self.config = config
        self.num_shards = int(num_shards)
        self.shard_index = int(shard_index)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.resize_method = resize_method
        self.epoch = 0
        self.failures = Counter()
        self._logger = get_logger("mrcnn_kp.data.pipeline")
        repeats = len(self) * self.global_batch_size - dataset.num_images
        if repeats and self.num_shards > 1:
            self._logger.info("%d images in global batches of %d: the last batch of each epoch "
                              "repeats %d images from the start of its order", dataset.num_images,
                              self.global_batch_size, repeats)

    @property
    def global_batch_size(self):
        """Images per step over all shards (BATCH_SIZE x num_shards)."""
        return self.config.BATCH_SIZE * self.num_shards

    def __len__(self):
        return int(math.ceil(self.dataset.num_images / self.global_batch_size))

    def on_epoch_end(self):
        self.epoch += 1

    def set_epoch(self, epoch):
        """Jump to an epoch (e.g. when resuming training)."""
        self.epoch = int(epoch)

    def image_order(self, epoch=None):
        """Dataset image ids this shard reads in an epoch, in batch order (len(self) *
        BATCH_SIZE of them)."""
        epoch = self.epoch if epoch is None else epoch
        count = self.dataset.num_images
        order = np.arange(count)
        if self.shuffle:
            order = _rng(self.seed, epoch).permutation(count)
        size = self.config.BATCH_SIZE
        order = np.resize(order, len(self) * self.global_batch_size)  # wraps to fill the last
        # [batches, shards, BATCH_SIZE]: this shard's block of every global batch
        return order.reshape(len(self), self.num_shards, size)[:, self.shard_index].ravel()

    def __getitem__(self, index):
        return self.get_batch(index, self.epoch)

    def get_batch(self, index, epoch):
        """Batch `index` of epoch `epoch`, without touching self.epoch: worker threads that
        ask for batches of two epochs at once each get their own."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        config = self.config
        epoch = int(epoch)
        order = self.image_order(epoch)
        size = config.BATCH_SIZE
        samples, rngs = [], []
        for slot in range(size):
            # this image's augmentation and sampling, by its slot in the global batch
            rng = _rng(self.seed, epoch, index, self.shard_index * size + slot)
            samples.append(self._load_with_substitutes(order, index * size + slot, rng))
            rngs.append(rng)
        return self.assemble(samples, rngs)

    def _load_with_substitutes(self, order, position, rng):
        for attempt in range(MAX_SUBSTITUTES + 1):
            image_id = int(order[(position + attempt) % len(order)])
            try:
                return load_image_gt(self.dataset, self.config, image_id, self.augment, rng,
                                     self.resize_method)
            except (ImageReadError, OSError, ValueError) as err:
                self.failures[self.dataset.image_reference(image_id)] += 1
                self._logger.warning("skipping image %s in this batch: %s",
                                     self.dataset.image_reference(image_id), err)
        raise RuntimeError(f"{MAX_SUBSTITUTES + 1} images in a row could not be loaded; "
                           f"last problem: see the warnings above")

    def assemble(self, samples, rngs):
        """Per-image dicts of load_image_gt -> the padded batch dict, with RPN targets.

        rngs: one numpy Generator per sample, for the RPN anchor subsampling.
        """
        config = self.config
        batch = len(samples)
        limit = config.MAX_GT_INSTANCES
        mask_shape = tuple(config.MINI_MASK_SHAPE) if config.USE_MINI_MASK \
            else transforms.config_canvas(config)
        k = config.NUM_KEYPOINTS
        out = {
            "input_image": np.zeros((batch,) + tuple(config.IMAGE_SHAPE), np.float32),
            "input_image_meta": np.zeros((batch, config.IMAGE_META_SIZE), np.float32),
            "input_rpn_match": np.zeros((batch, config.NUM_ANCHORS), np.int32),
            "input_rpn_bbox": np.zeros((batch, config.NUM_ANCHORS, 4), np.float32),
            "input_gt_class_ids": np.zeros((batch, limit), np.int32),
            "input_gt_boxes": np.zeros((batch, limit, 4), np.float32),
            "input_gt_masks": np.zeros((batch, limit) + mask_shape, np.float32),
            "input_gt_keypoints": np.zeros((batch, limit, k, 3), np.float32),
        }
        for b, sample in enumerate(samples):
            keep = select_instances(sample["class_ids"], sample["keypoints"], limit)
            n = len(keep)
            class_ids = sample["class_ids"][keep]
            boxes = sample["boxes"][keep]
            out["input_image"][b] = sample["image"]
            out["input_image_meta"][b] = sample["image_meta"]
            out["input_gt_class_ids"][b, :n] = class_ids
            out["input_gt_boxes"][b, :n] = boxes
            out["input_gt_masks"][b, :n] = sample["masks"][keep]
            out["input_gt_keypoints"][b, :n] = sample["keypoints"][keep]
            match, deltas = targets.rpn_targets_for_config(class_ids, boxes, config, rngs[b])
            out["input_rpn_match"][b] = match
            out["input_rpn_bbox"][b] = deltas
        return out
