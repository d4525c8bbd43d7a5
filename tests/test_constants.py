import numpy as np

from mrcnn_kp import constants as C


def test_keypoint_order_and_flip():
    assert C.KEYPOINT_NAMES[9] == "left_wrist" and C.KEYPOINT_NAMES[10] == "right_wrist"
    assert len(C.KEYPOINT_NAMES) == 17
    for i, j in enumerate(C.FLIP_INDEX):
        a, b = C.KEYPOINT_NAMES[i], C.KEYPOINT_NAMES[j]
        assert a.replace("left", "X").replace("right", "X") == b.replace("left", "X").replace(
            "right", "X")
        assert C.FLIP_INDEX[j] == i


def test_oks_sigmas_match_pycocotools():
    from pycocotools.cocoeval import Params

    np.testing.assert_allclose(C.OKS_SIGMAS, Params(iouType="keypoints").kpt_oks_sigmas)


def test_skeleton_has_19_limbs():
    assert len(C.SKELETON) == 19
    assert all(0 <= a < 17 and 0 <= b < 17 for a, b in C.SKELETON)
