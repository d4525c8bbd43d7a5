"""COCO person-keypoint facts: joint names, skeleton, flip pairs and OKS sigmas.

All indices are 0-based and in COCO order (docs/DESIGN.md, "Fixed facts").
"""
import numpy as np

KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)  # 17

# Left/right joint pairs swapped by a horizontal flip.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def _flip_index():
    index = list(range(NUM_KEYPOINTS))
    for left, right in FLIP_PAIRS:
        index[left], index[right] = right, left
    return tuple(index)


# keypoints_flipped = keypoints[FLIP_INDEX] after mirroring x.
FLIP_INDEX = _flip_index()

# The 19 limbs of the COCO skeleton, 0-based (COCO's json lists them 1-based).
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# Per-joint OKS sigmas, as used by pycocotools' COCOeval for iouType="keypoints".
OKS_SIGMAS = np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89],
    dtype=np.float64,
) / 10.0

PERSON_CATEGORY_ID = 1
