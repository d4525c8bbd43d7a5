"""The real model learns: it overfits 2 real COCO images on the CPU.

Two images with one large person each (the largest mask area among single-person images with
>= 10 labelled joints), TinyConfig at 128 px, no augmentation, 120 steps: the mean total loss
of the last epoch is >= 80 % below the first epoch's, the keypoint loss >= 50 % below.
"""
import json

import keras
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.data.coco import CocoKeypointDataset
from mrcnn_kp.maskrcnn import MaskRCNN


def two_large_people(annotation_json):
    with open(annotation_json, encoding="utf-8") as f:
        data = json.load(f)
    images = {image["id"]: image for image in data["images"]}
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    ranked = sorted(
        ((anns[0]["area"] / (images[i]["width"] * images[i]["height"]), i)
         for i, anns in by_image.items()
         if len(anns) == 1 and not anns[0].get("iscrowd") and anns[0]["num_keypoints"] >= 10),
        reverse=True)
    keep = {image_id for _, image_id in ranked[:2]}
    return dict(data, images=[images[i] for i in sorted(keep)],
                annotations=[a for a in data["annotations"] if a["image_id"] in keep])


@pytest.mark.slow
def test_two_real_images_overfit(coco_mini, tmp_path):
    annotation_json, image_dir = coco_mini
    dataset = CocoKeypointDataset(two_large_people(annotation_json), image_dir)
    assert dataset.num_images == 2
    config = TinyConfig(NAME="overfit", STEPS_PER_EPOCH=10, AUGMENT_FLIP=False,
                        LR_SCHEDULE="constant", LR_WARMUP_STEPS=10)
    keras.utils.set_random_seed(0)
    model = MaskRCNN("training", config, model_dir=tmp_path)
    history = model.train(dataset, None, learning_rate=0.02, epochs=12, layers="all",
                          verbose=0).history
    total, keypoint = history["loss"], history["keypoint_loss"]
    assert total[-1] <= 0.2 * total[0], total
    assert keypoint[-1] <= 0.5 * keypoint[0], keypoint
    assert model.epoch == 12
    assert model.find_last().endswith("mask_rcnn_overfit_0012.weights.h5")
