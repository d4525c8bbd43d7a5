"""transforms: matterport's square resize, flip with the joint swap, scale
jitter, and the unmold helpers the predictor uses."""
import numpy as np
import pytest
import skimage.transform

from mrcnn_kp import constants
from mrcnn_kp.config import Config, TinyConfig
from mrcnn_kp.data import transforms
from mrcnn_kp.data.pipeline import load_image_gt
from mrcnn_kp.image_meta import compose_image_meta, parse_image_meta

LEFT_WRIST, RIGHT_WRIST = constants.KEYPOINT_NAMES.index("left_wrist"), \
    constants.KEYPOINT_NAMES.index("right_wrist")


def config_512(**overrides):
    return Config(IMAGE_MIN_DIM=512, IMAGE_MAX_DIM=512, **overrides)


# ------------------------------------------------------------------ resize
@pytest.mark.parametrize("shape, window, scale", [
    ((512, 512, 3), (0, 0, 512, 512), 1.0),
    ((256, 192, 3), (0, 64, 512, 448), 2.0),  # matterport's resize of a square and a portrait image
    ((426, 640, 3), (85, 0, 426, 512), 0.8),  # a COCO landscape image, shrunk
])
def test_resize_image_follows_matterport_square_mode(shape, window, scale):
    config = config_512()
    image = np.full(shape, 200, np.uint8)
    molded, got_window, got_scale, padding = transforms.resize_image(image, config)
    assert molded.shape == (512, 512, 3) and molded.dtype == np.uint8
    assert tuple(got_window) == window and got_scale == pytest.approx(scale)
    y1, x1, y2, x2 = window
    assert padding[0][0] == y1 and padding[1][0] == x1
    assert (molded[y1:y2, x1:x2] == 200).all()
    assert molded.sum() == 200 * 3 * (y2 - y1) * (x2 - x1)  # zeros outside the window


def test_matterport_method_reproduces_skimage_exactly():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    molded, window, scale, _ = transforms.resize_image(image, TinyConfig(), method="matterport")
    want = skimage.transform.resize(image, (128, 85), order=1, mode="constant", cval=0,
                                    clip=True, preserve_range=True,
                                    anti_aliasing=False).astype(np.uint8)
    y1, x1, y2, x2 = window
    assert (y1, x1, y2, x2) == (0, 21, 128, 106) and scale == pytest.approx(128 / 30)
    np.testing.assert_array_equal(molded[y1:y2, x1:x2], want)
    fast, _, _, _ = transforms.resize_image(image, TinyConfig())  # Pillow, the default
    assert np.abs(fast[8:-8, 29:-29].astype(int) - molded[8:-8, 29:-29]).mean() < 2.0


def test_boxes_and_keypoints_unmold_back_to_original_pixels():
    config = config_512()
    _, window, scale, padding = transforms.resize_image(np.zeros((300, 200, 3), np.uint8), config)
    boxes = np.array([[10.5, 20.0, 150.0, 290.0]], np.float32)
    keypoints = np.array([[[10.0, 20.0, 2], [199.0, 299.0, 1], [0.0, 0.0, 0]]], np.float32)
    molded_boxes = transforms.resize_boxes(boxes, scale, padding, window)
    molded_kps = transforms.resize_keypoints(keypoints, scale, padding, window)
    np.testing.assert_allclose(molded_boxes[0, :2], [10.5 * scale + window[1],
                                                     20 * scale + window[0]], rtol=1e-6)
    np.testing.assert_allclose(transforms.unmold_boxes(molded_boxes, window, scale), boxes,
                               atol=1e-3)
    assert molded_kps[0, 2].tolist() == [0, 0, 0]  # unlabelled stays (0, 0, 0)
    back = transforms.unmold_keypoints(molded_kps, window, scale)
    np.testing.assert_allclose(back[0, :2], keypoints[0, :2], atol=1e-3)
    assert back[0, :2, 2].tolist() == [2, 1]  # the third column (v or score) is kept


def test_joints_outside_the_window_get_v_zero():
    keypoints = np.array([[[5.0, 5.0, 2], [-1.0, 5.0, 2], [5.0, 5.0, 0]]], np.float32)
    out = transforms.resize_keypoints(keypoints, 2.0, [(0, 0), (0, 0), (0, 0)],
                                      window=(0, 0, 64, 64))
    assert out[0].tolist() == [[10, 10, 2], [0, 0, 0], [0, 0, 0]]


# ------------------------------------------------------------------ flip
def test_flip_swaps_left_and_right_joints_on_real_coco(coco_dataset):
    gt = coco_dataset.coco
    ann = next(a for a in gt.loadAnns(gt.getAnnIds(iscrowd=False))
               if min(a["keypoints"][3 * j + 2] for j in (0, LEFT_WRIST, RIGHT_WRIST)) > 0)
    index = coco_dataset.image_index(ann["image_id"])
    image = coco_dataset.load_image(index)
    inst = coco_dataset.load_instances(index)
    i = [r["ann_id"] for r in coco_dataset.image_info[index]["annotations"]].index(ann["id"])
    width = image.shape[1]
    flipped, boxes, masks, keypoints = transforms.flip_horizontal(
        image, inst["boxes"], inst["masks"], inst["keypoints"])
    right = inst["keypoints"][i, RIGHT_WRIST]
    assert keypoints[i, LEFT_WRIST].tolist() == [width - right[0], right[1], right[2]]
    left = inst["keypoints"][i, LEFT_WRIST]
    assert keypoints[i, RIGHT_WRIST].tolist() == [width - left[0], left[1], left[2]]
    assert keypoints[i, 0, 0] == width - inst["keypoints"][i, 0, 0]  # nose stays the nose
    x1, y1, x2, y2 = inst["boxes"][i]
    assert boxes[i].tolist() == [width - x2, y1, width - x1, y2]
    np.testing.assert_array_equal(flipped[:, width - 1 - 37], image[:, 37])
    np.testing.assert_array_equal(masks[:, width - 1 - 37], inst["masks"][:, 37])


def test_flip_in_the_pipeline_mirrors_image_keypoints_and_mini_masks(coco_dataset):
    gt = coco_dataset.coco
    ann = next(a for a in gt.loadAnns(gt.getAnnIds(iscrowd=False)) if a["num_keypoints"] >= 12)
    index = coco_dataset.image_index(ann["image_id"])
    config = TinyConfig(AUGMENT_FLIP=True)
    seed = next(s for s in range(100) if np.random.default_rng(s).random() < 0.5)  # flips
    plain = load_image_gt(coco_dataset, config, index, augment=False)
    flipped = load_image_gt(coco_dataset, config, index, augment=True,
                            rng=np.random.default_rng(seed))
    meta = parse_image_meta(plain["image_meta"])
    y1, x1, y2, x2 = meta["window"]
    width = plain["image_meta"][2]
    scale = meta["scale"]
    mirror = width * scale + 2 * x1  # x -> mirror - x inside the canvas
    i = [r["ann_id"] for r in coco_dataset.image_info[index]["annotations"]].index(ann["id"])
    want = plain["keypoints"][i][list(constants.FLIP_INDEX)]
    got = flipped["keypoints"][i]
    labelled = want[:, 2] > 0
    np.testing.assert_allclose(got[labelled, 0], mirror - want[labelled, 0], atol=1e-3)
    np.testing.assert_array_equal(got[:, 2], want[:, 2])
    np.testing.assert_allclose(flipped["boxes"][i, [2, 0]], mirror - plain["boxes"][i, [0, 2]],
                               atol=1e-3)
    same = (flipped["masks"][i] == plain["masks"][i][:, ::-1]).mean()
    assert same > 0.99
    inner = slice(int(y1) + 2, int(y2) - 2), slice(int(x1) + 2, int(x2) - 2)
    diff = np.abs(flipped["image"][inner].astype(int) - plain["image"][:, ::-1][
        slice(int(y1) + 2, int(y2) - 2), slice(128 - int(x2) + 2, 128 - int(x1) - 2)])
    assert diff.mean() < 3.0  # the same picture, mirrored (up to a pixel of padding offset)


# ------------------------------------------------------------------ non-square canvas
@pytest.mark.parametrize("shape, window, scale", [
    ((426, 640, 3), (0, 95, 384, 672), 384 / 426),  # landscape: shrunk to the canvas height
    ((640, 426, 3), (0, 256, 384, 512), 384 / 640),  # portrait: more so
    ((100, 900, 3), (149, 0, 234, 768), 768 / 900),  # panorama: up, the long side at 768
])
def test_resize_image_fits_a_non_square_canvas(shape, window, scale):
    """IMAGE_CANVAS_SHAPE (384, 768): the square rule (short side to IMAGE_MIN_DIM, long side
    at most IMAGE_MAX_DIM) and then whatever fits both canvas sides, centred."""
    config = Config(IMAGE_MIN_DIM=384, IMAGE_MAX_DIM=768, IMAGE_CANVAS_SHAPE=(384, 768))
    image = np.full(shape, 200, np.uint8)
    molded, got_window, got_scale, _ = transforms.resize_image(image, config)
    assert molded.shape == (384, 768, 3)
    assert got_scale == pytest.approx(scale)
    y1, x1, y2, x2 = got_window
    assert (y2 - y1, x2 - x1) == (round(shape[0] * scale), round(shape[1] * scale))
    assert tuple(got_window) == window
    assert (molded[y1:y2, x1:x2] == 200).all() and molded.sum() == 200 * 3 * (y2 - y1) * (x2 - x1)
    meta = parse_image_meta(compose_image_meta(
        0, shape, molded.shape, got_window, got_scale, [1, 1]))
    assert tuple(meta["image_shape"]) == (384, 768, 3)
    box = transforms.resize_boxes([[10, 20, 300, 400]], got_scale,
                                  [(y1, 0), (x1, 0), (0, 0)])
    np.testing.assert_allclose(transforms.unmold_boxes(box, got_window, got_scale),
                               [[10, 20, 300, 400]], atol=1e-3)


def test_training_samples_fill_a_non_square_canvas_with_jitter():
    """load_image_gt on a (64, 128) canvas with scale jitter: the image, full masks and the
    joints are placed together (each labelled joint sits on its red dot)."""
    from mrcnn_kp.data.dataset import Dataset

    class OneImage(Dataset):
        def load_image(self, image_id):
            image = np.zeros((60, 100, 3), np.uint8)
            image[28:32, 78:82] = (255, 0, 0)  # a red dot centred on (80, 30)
            return image

        def load_instances(self, image_id):
            keypoints = np.zeros((1, 17, 3), np.float32)
            keypoints[0, 0] = (80.0, 30.0, 2)
            masks = np.zeros((60, 100, 1), bool)
            masks[10:50, 60:95] = True
            return {"class_ids": np.array([1], np.int32),
                    "boxes": np.array([[60.0, 10.0, 95.0, 50.0]], np.float32),
                    "masks": masks, "keypoints": keypoints}

    dataset = OneImage()
    dataset.add_class("coco", 1, "person")
    dataset.add_image("coco", 0, None)
    dataset.prepare()
    config = TinyConfig(IMAGE_MIN_DIM=64, IMAGE_CANVAS_SHAPE=(64, 128), USE_MINI_MASK=False,
                        AUGMENT_FLIP=False, AUGMENT_SCALE_RANGE=(0.8, 1.6))
    seen = 0
    for seed in range(8):
        sample = load_image_gt(dataset, config, 0, augment=True,
                               rng=np.random.default_rng(seed))
        assert sample["image"].shape == (64, 128, 3)
        if len(sample["boxes"]):
            assert sample["masks"].shape == (1, 64, 128)
        x, y, v = sample["keypoints"][0, 0] if len(sample["keypoints"]) else (0, 0, 0)
        if v > 0:
            seen += 1
            assert sample["image"][int(y), int(x)].tolist() == [255, 0, 0]
            assert sample["masks"][0, int(y), int(x)] == 1.0
    assert seen >= 4


# ------------------------------------------------------------------ scale jitter
def test_scale_jitter_moves_image_and_annotations_together():
    config = TinyConfig(AUGMENT_FLIP=False, AUGMENT_SCALE_RANGE=(2.0, 2.0))
    image = np.zeros((64, 64, 3), np.uint8)
    image[40:44, 10:14] = (255, 0, 0)  # a red dot centred on (12, 42)
    scale = transforms.compute_scale(64, 64, config) * transforms.random_scale_factor(config, None)
    assert scale == 4.0  # 2 to reach 128 px, times the jitter of 2
    padding = transforms.jitter_padding(256, 256, 128, np.random.default_rng(0))
    top, left = padding[0][0], padding[1][0]
    assert -128 <= top <= 0 and -128 <= left <= 0
    molded = transforms.place_image(image, scale, padding, 128)
    window = transforms.window_from_padding(256, 256, padding, 128)
    assert window == (0, 0, 128, 128)
    keypoints = np.array([[[12.0, 42.0, 2], [60.0, 60.0, 2]]], np.float32)
    moved = transforms.resize_keypoints(keypoints, scale, padding, window)
    x, y, v = moved[0, 0]
    if v > 0:  # the dot stayed in the crop: it is red where its keypoint says
        assert molded[int(y), int(x)].tolist() == [255, 0, 0]
    else:
        assert not (molded[..., 0] > 200).any()
    inside = (60 * 4 + left < 128) and (60 * 4 + top < 128)
    assert (moved[0, 1, 2] > 0) == inside


def test_random_scale_factor_stays_in_range_and_is_off_by_default():
    rng = np.random.default_rng(1)
    assert transforms.random_scale_factor(TinyConfig(), rng) == 1.0
    config = TinyConfig(AUGMENT_SCALE_RANGE=(0.5, 2.0))
    factors = np.array([transforms.random_scale_factor(config, rng) for _ in range(400)])
    assert factors.min() >= 0.5 and factors.max() <= 2.0
    assert 0.4 < (factors < 1.0).mean() < 0.6  # log-uniform: as many shrinks as zooms


@pytest.mark.parametrize("shape, scale, resized", [
    ((480, 640, 3), 800 / 480, (800, 1066)),  # short side to 800; sizes floored (torch)
    ((400, 1200, 3), 1333 / 1200, (444, 1333)),  # long side capped at 1333
    ((1600, 1000, 3), 800 / 1000, (1280, 800)),  # shrinks too (matterport's square does not)
])
def test_torchvision_resize_mode(shape, scale, resized):
    """IMAGE_RESIZE_MODE "torchvision": min(800 / short, 1333 / long), floored sizes, float
    bilinear, top-left, mean padding; unmolding by per-axis ratios as torchvision's."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    config = TorchvisionKeypointConfig()
    image = np.full(shape, 200, np.uint8)
    molded, window, got_scale, padding = transforms.resize_image(image, config)
    assert got_scale == pytest.approx(scale)
    assert molded.shape == (1344, 1344, 3) and molded.dtype == np.float32
    assert window == (0, 0) + resized and padding[0][0] == 0 and padding[1][0] == 0
    np.testing.assert_allclose(molded[:resized[0], :resized[1]], 200, rtol=1e-6)
    np.testing.assert_allclose(molded[-1, -1], config.MEAN_PIXEL)
    ratios = transforms.torchvision_unmold_scale(window, shape)
    assert ratios == (resized[0] / shape[0], resized[1] / shape[1])
    box = np.array([[resized[1] / 2, 0.0, resized[1], resized[0]]], np.float32)
    np.testing.assert_allclose(transforms.unmold_boxes(box, window, ratios),
                               [[shape[1] / 2, 0, shape[1], shape[0]]], rtol=1e-5)


def test_float_bilinear_resize_equals_torch_interpolate():
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    for size in ((61, 88), (20, 29), (37, 53)):
        want = torch.nn.functional.interpolate(
            torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=size, mode="bilinear",
            align_corners=False)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(transforms.resize_bilinear_float(image, *size), want,
                                   atol=1e-3)
