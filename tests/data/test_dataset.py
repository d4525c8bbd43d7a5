"""dataset: image reading with conversions, boxes from masks, and a user subclass of Dataset
going through the whole pipeline."""
import numpy as np
import pytest

from coco_files import write_image
from mrcnn_kp import constants
from mrcnn_kp.config import TinyConfig
from mrcnn_kp.data.dataset import Dataset, ImageReadError, boxes_from_masks, read_image
from mrcnn_kp.data.pipeline import DataGenerator


@pytest.mark.parametrize("array, conversion, pixel", [
    (np.full((5, 7, 3), (1, 2, 3), np.uint8), None, [1, 2, 3]),
    (np.full((5, 7), 9, np.uint8), "grayscale image", [9, 9, 9]),
    (np.full((5, 7, 4), (4, 5, 6, 0), np.uint8), "RGBA image", [4, 5, 6]),
    (np.full((5, 7), 257 * 100, np.uint16), "16-bit image", [100, 100, 100]),
])
def test_read_image_converts_to_rgb_uint8(tmp_path, array, conversion, pixel):
    path = tmp_path / "image.png"
    write_image(path, array)
    image, got = read_image(path)
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    assert got == conversion and image[2, 3].tolist() == pixel


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing image file .*nothing.png"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageReadError, match="unreadable image file .*text.jpg"):
        read_image(tmp_path / "text.jpg")


def test_boxes_from_masks_are_tight_continuous_boxes():
    masks = np.zeros((10, 12, 2), bool)
    masks[2:5, 3:6, 0] = True
    assert boxes_from_masks(masks).tolist() == [[3, 2, 6, 5], [0, 0, 0, 0]]


class SquarePeople(Dataset):
    """A user dataset: each image holds one square 'person' whose joints sit on a diagonal."""

    def __init__(self, count):
        super().__init__()
        self.add_class("squares", 1, "person")
        for i in range(count):
            self.add_image("squares", image_id=f"sq{i}", path=None, side=20 + 10 * i)
        self.prepare()

    def load_image(self, image_id):
        return np.full((100, 100, 3), 50 + image_id, np.uint8)

    def load_mask(self, image_id):
        side = self.image_info[image_id]["side"]
        masks = np.zeros((100, 100, 1), bool)
        masks[10:10 + side, 10:10 + side, 0] = True
        return masks, np.array([1], np.int32)

    def load_keypoints(self, image_id):
        side = self.image_info[image_id]["side"]
        kps = np.zeros((1, constants.NUM_KEYPOINTS, 3), np.float32)
        steps = np.linspace(11, 9 + side, constants.NUM_KEYPOINTS)
        kps[0, :, 0], kps[0, :, 1], kps[0, :, 2] = steps, steps, 2
        return kps


def test_a_subclass_runs_through_the_pipeline():
    dataset = SquarePeople(3)
    assert dataset.num_images == 3 and dataset.class_names == ["BG", "person"]
    assert dataset.map_source_class_id("squares.1") == 1
    assert dataset.active_class_ids(0).tolist() == [1, 1]
    inst = dataset.load_instances(2)
    assert inst["boxes"].tolist() == [[10, 10, 50, 50]]  # from the mask
    batch = DataGenerator(dataset, TinyConfig(), shuffle=False)[1]  # images 2 and 0
    # 100 px -> 128 px: scale 1.28, no padding
    np.testing.assert_allclose(batch["input_gt_boxes"][0, 0], [12.8, 12.8, 64.0, 64.0],
                               rtol=1e-5)
    np.testing.assert_allclose(batch["input_gt_keypoints"][0, 0, 0], [11 * 1.28, 11 * 1.28, 2],
                               rtol=1e-5)
    assert batch["input_gt_masks"][0, 0].min() == 1.0  # the square fills its box
    assert batch["input_image"][0, 5, 5, 0] == 52 and batch["input_image_meta"][1, 0] == 0


def test_source_names_cannot_hold_dots():
    with pytest.raises(ValueError, match="source name cannot contain a dot"):
        Dataset().add_class("my.source", 1, "person")
