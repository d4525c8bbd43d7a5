"""CocoKeypointDataset: counts against pycocotools on the real subset, the held-out split,
crowd regions, persons without keypoints, and every bad-input case with its message."""
import contextlib
import io
import logging

import numpy as np
import pytest
from pycocotools.coco import COCO

from coco_files import person_annotation, standing_keypoints, write_coco, write_image
from mrcnn_kp import constants
from mrcnn_kp.data import coco as coco_module
from mrcnn_kp.data.coco import CocoKeypointDataset, split_image_ids


def load_pycocotools(ann):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann))


# ------------------------------------------------------------------ real COCO subset
def test_counts_equal_pycocotools(coco_mini, coco_dataset):
    ann, _ = coco_mini
    gt = load_pycocotools(ann)
    persons = gt.loadAnns(gt.getAnnIds(iscrowd=False))
    summary = coco_dataset.summary
    assert summary["images"] == len(gt.getImgIds()) == 919
    assert summary["persons"] == len(persons) == 2124
    assert summary["persons_with_keypoints"] == sum(a["num_keypoints"] > 0 for a in persons)
    assert summary["crowd_regions"] == len(gt.getAnnIds(iscrowd=True)) == 38
    assert summary["skipped"] == {}
    # the real subset has three grayscale JPEGs, converted to RGB
    assert summary["converted"] == {"grayscale image": 3}
    assert coco_dataset.coco_image_ids == sorted(gt.getImgIds())
    # per image: one instance per pycocotools annotation, in the same boxes
    for index in range(0, 919, 97):
        coco_id = coco_dataset.image_info[index]["id"]
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[coco_id]))
        boxes = coco_dataset.load_boxes(index)
        want = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                          a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32)
        np.testing.assert_allclose(boxes, want, atol=1e-3)


def test_held_out_split_is_disjoint_deterministic_and_ten_percent(coco_mini):
    ann, images = coco_mini
    train = CocoKeypointDataset(ann, images, subset="train", verify_images=False)
    val = CocoKeypointDataset(ann, images, subset="val", verify_images=False)
    assert len(val.coco_image_ids) == round(0.1 * 919) == 92
    assert set(train.coco_image_ids).isdisjoint(val.coco_image_ids)
    assert len(train.coco_image_ids) + len(val.coco_image_ids) == 919
    again = split_image_ids(train.coco.imgs.keys(), "val", 0.1, seed=0)
    assert again == val.coco_image_ids
    other_seed = split_image_ids(train.coco.imgs.keys(), "val", 0.1, seed=1)
    assert other_seed != val.coco_image_ids
    assert "[val]: 92 images" in val.summary_text()


def test_crowd_regions_have_class_minus_one_and_no_keypoints(coco_mini, coco_dataset):
    gt = coco_dataset.coco
    crowd = gt.loadAnns(gt.getAnnIds(iscrowd=True))[0]
    index = coco_dataset.image_index(crowd["image_id"])
    inst = coco_dataset.load_instances(index)
    ann_ids = [r["ann_id"] for r in coco_dataset.image_info[index]["annotations"]]
    i = ann_ids.index(crowd["id"])
    assert inst["class_ids"][i] == -1
    assert (inst["keypoints"][i] == 0).all()
    # the crowd mask is pycocotools' RLE decoding, pixel for pixel
    np.testing.assert_array_equal(inst["masks"][:, :, i], gt.annToMask(crowd).astype(bool))
    assert inst["masks"][:, :, i].sum() > 0


def test_person_without_keypoints_keeps_box_and_mask(coco_dataset):
    gt = coco_dataset.coco
    ann = next(a for a in gt.loadAnns(gt.getAnnIds(iscrowd=False)) if a["num_keypoints"] == 0)
    index = coco_dataset.image_index(ann["image_id"])
    ann_ids = [r["ann_id"] for r in coco_dataset.image_info[index]["annotations"]]
    i = ann_ids.index(ann["id"])
    inst = coco_dataset.load_instances(index)
    assert inst["class_ids"][i] == 1
    assert inst["keypoints"][i].sum() == 0
    x, y, w, h = ann["bbox"]
    np.testing.assert_allclose(inst["boxes"][i], [x, y, x + w, y + h], atol=1e-3)
    np.testing.assert_array_equal(inst["masks"][:, :, i], gt.annToMask(ann).astype(bool))


# ------------------------------------------------------------------ bad input
@pytest.fixture
def broken_coco(tmp_path):
    """A json + image folder with one good image and one of every kind of bad record."""
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.full((48, 64, 3), 100, np.uint8)
    write_image(folder / "good.png", rgb)
    (folder / "garbage.jpg").write_bytes(b"this is not an image at all")
    write_image(folder / "gray.png", np.full((48, 64), 77, np.uint8))
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    write_image(folder / "rgba.png", rgba)
    write_image(folder / "sixteen.png", np.full((48, 64), 65535, np.uint16))
    write_image(folder / "wrong_size.png", rgb)
    write_image(folder / "empty.png", rgb)

    def image(image_id, name, width=64, height=48):
        return {"id": image_id, "file_name": name, "width": width, "height": height}

    images = [image(1, "good.png"), image(2, "missing.png"), image(3, "garbage.jpg"),
              image(4, "gray.png"), image(5, "rgba.png"), image(6, "sixteen.png"),
              image(7, "wrong_size.png", width=50, height=50), image(8, "empty.png")]
    outside = standing_keypoints(10, 2, scale=0.5)
    outside[9] = (500.0, 20.0, 2)  # left wrist far outside the 64 x 48 image
    anns = [
        person_annotation(1, 1, (5, 2, 30, 40), standing_keypoints(8, 3, scale=0.5)),
        person_annotation(2, 1, (10, 5, 0, 20)),  # zero width
        person_annotation(3, 1, (20, 2, 30, 40), outside),
        person_annotation(4, 1, (2, 2, 20, 20), keypoints=[1, 2, 2] * 5),  # 15 numbers
        person_annotation(5, 99, (2, 2, 20, 20)),  # image 99 is not in the json
        person_annotation(6, 4, (2, 2, 20, 20)),
        person_annotation(7, 5, (2, 2, 20, 20)),
        person_annotation(8, 6, (2, 2, 20, 20)),
        {"id": 9, "image_id": 1, "bbox": [1, 1, 5, 5]},  # no category_id
    ]
    return write_coco(tmp_path, images, anns), folder


def test_bad_input_is_counted_in_the_summary(broken_coco):
    ann, folder = broken_coco
    dataset = CocoKeypointDataset(ann, folder)
    s = dataset.summary
    assert s["skipped"] == {
        coco_module.MISSING_FILE: 1, coco_module.UNREADABLE_FILE: 1,
        coco_module.SIZE_MISMATCH: 1, coco_module.UNKNOWN_IMAGE: 1,
        coco_module.ZERO_SIZE_BOX: 1, coco_module.MALFORMED_ANNOTATION: 1}
    assert s["converted"] == {
        "grayscale image": 1, "RGBA image": 1, "16-bit image": 1,
        coco_module.KEYPOINT_OUTSIDE: 1, coco_module.WRONG_KEYPOINT_LENGTH: 1}
    # good, gray, rgba, sixteen, empty; the empty one is a negative
    assert s["images"] == 5 and s["negative_images"] == 1
    assert s["persons"] == 6 and s["persons_with_keypoints"] == 2


@pytest.mark.parametrize("reason, detail", [
    (coco_module.MISSING_FILE, "missing.png"),
    (coco_module.UNREADABLE_FILE, "garbage.jpg"),
    (coco_module.SIZE_MISMATCH, "wrong_size.png is 64x48, the json says 50x50"),
    (coco_module.UNKNOWN_IMAGE, "annotation 5 refers to image 99"),
    (coco_module.ZERO_SIZE_BOX, "annotation 2 (image 1): bbox [10, 5, 0, 20]"),
    (coco_module.MALFORMED_ANNOTATION, "'id': 9"),
    (coco_module.KEYPOINT_OUTSIDE, "left_wrist at (500, 20) outside the 64x48 image"),
    (coco_module.WRONG_KEYPOINT_LENGTH, "annotation 4 (image 1): 15 numbers, expected 51"),
])
def test_each_bad_input_is_logged_with_its_reason(broken_coco, caplog, reason, detail):
    ann, folder = broken_coco
    with caplog.at_level(logging.INFO, logger="mrcnn_kp"):
        CocoKeypointDataset(ann, folder)
    lines = [r.getMessage() for r in caplog.records if reason in r.getMessage()]
    assert any(detail in line for line in lines), lines
    summary = caplog.records[-1].getMessage()
    assert f"1 {reason}" in summary


def test_bad_records_are_repaired_in_what_the_loader_returns(broken_coco):
    ann, folder = broken_coco
    dataset = CocoKeypointDataset(ann, folder)
    good = dataset.image_index(1)
    inst = dataset.load_instances(good)
    assert [r["ann_id"] for r in dataset.image_info[good]["annotations"]] == [1, 3, 4]
    # the joint outside the image became (0, 0, 0); the other 16 stay
    assert inst["keypoints"][1, 9].tolist() == [0.0, 0.0, 0.0]
    assert (inst["keypoints"][1, :, 2] > 0).sum() == 16
    # the person with a 15-number keypoint list keeps box and mask, without keypoints
    assert inst["keypoints"][2].sum() == 0 and inst["masks"][:, :, 2].sum() == 20 * 20
    gray = dataset.load_image(dataset.image_index(4))
    rgba = dataset.load_image(dataset.image_index(5))
    sixteen = dataset.load_image(dataset.image_index(6))
    assert gray.shape == rgba.shape == sixteen.shape == (48, 64, 3)
    assert gray.dtype == rgba.dtype == sixteen.dtype == np.uint8
    assert gray[0, 0].tolist() == [77, 77, 77]
    assert rgba[0, 0].tolist() == [200, 0, 0]  # alpha dropped
    assert sixteen[0, 0].tolist() == [255, 255, 255]  # 65535 -> 255


def test_negatives_can_be_left_out(broken_coco):
    ann, folder = broken_coco
    dataset = CocoKeypointDataset(ann, folder, include_negatives=False)
    assert dataset.summary["images"] == 4
    assert dataset.summary["skipped"][coco_module.NO_PERSONS] == 1
    assert 8 not in dataset.coco_image_ids


def test_unusable_json_fails_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        CocoKeypointDataset(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="COCO annotation file not found"):
        CocoKeypointDataset(tmp_path / "nope.json", tmp_path)
    with pytest.raises(ValueError, match="subset must be one of"):
        split_image_ids([1, 2], "test")


def test_keypoints_use_coco_order_and_values(coco_dataset):
    gt = coco_dataset.coco
    ann = next(a for a in gt.loadAnns(gt.getAnnIds(iscrowd=False)) if a["num_keypoints"] >= 15)
    index = coco_dataset.image_index(ann["image_id"])
    i = [r["ann_id"] for r in coco_dataset.image_info[index]["annotations"]].index(ann["id"])
    keypoints = coco_dataset.load_keypoints(index)[i]
    np.testing.assert_array_equal(keypoints, np.array(ann["keypoints"], np.float32).reshape(
        constants.NUM_KEYPOINTS, 3))
