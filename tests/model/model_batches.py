"""A random but valid training batch for the model tests (docs/DESIGN.md's batch dict).

People are boxes with a filled ellipse-ish mini mask and 17 joints inside the box; RPN targets
come from mrcnn_kp.data.targets, so the RPN losses see real positives and negatives.
"""
import numpy as np

from mrcnn_kp.data.targets import rpn_targets_for_config

BATCH_KEYS = ("input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
              "input_gt_class_ids", "input_gt_boxes", "input_gt_masks", "input_gt_keypoints")


def image_meta(config, window=None):
    """matterport image_meta of an image that fills the molded canvas (or `window`)."""
    height, width = config.IMAGE_SHAPE[:2]
    y1, x1, y2, x2 = window if window is not None else (0, 0, height, width)
    return np.array([0, y2 - y1, x2 - x1, 3, height, width, 3, y1, x1, y2, x2, 1.0]
                    + [1.0] * config.NUM_CLASSES, np.float32)


def make_batch(config, seed=0, people=(2, 3), crowd=False):
    """Batch dict of numpy arrays; image b holds people[b % len(people)] persons."""
    rng = np.random.default_rng(seed)
    (height, width), g, k = config.IMAGE_SHAPE[:2], config.MAX_GT_INSTANCES, config.NUM_KEYPOINTS
    s = min(height, width)  # person sizes
    mask_shape = tuple(config.MINI_MASK_SHAPE) if config.USE_MINI_MASK else (height, width)
    m_h, m_w = mask_shape
    columns = {key: [] for key in BATCH_KEYS}
    for b in range(config.BATCH_SIZE):
        ids = np.zeros(g, np.int32)
        boxes = np.zeros((g, 4), np.float32)
        keypoints = np.zeros((g, k, 3), np.float32)
        masks = np.zeros((g,) + mask_shape, np.float32)
        for i in range(people[b % len(people)]):
            w, h = rng.uniform(0.2 * s, 0.5 * s, 2)
            x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            boxes[i] = [x1, y1, x1 + w, y1 + h]
            ids[i] = 1
            keypoints[i, :, 0] = rng.uniform(x1, x1 + w, k)
            keypoints[i, :, 1] = rng.uniform(y1, y1 + h, k)
            keypoints[i, :, 2] = rng.choice([0, 1, 2], k)
            masks[i, m_h // 8: 7 * m_h // 8, m_w // 4: 3 * m_w // 4] = 1.0
        if crowd:
            n = people[b % len(people)]
            boxes[n] = [0, 0, s / 4, s / 4]
            ids[n] = -1
        rpn_match, rpn_bbox = rpn_targets_for_config(ids, boxes, config, rng)
        image = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
        for key, value in zip(BATCH_KEYS, (image, image_meta(config), rpn_match, rpn_bbox, ids,
                                           boxes, masks, keypoints)):
            columns[key].append(value)
    return {key: np.stack(values) for key, values in columns.items()}
