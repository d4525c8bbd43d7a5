"""pipeline: the batch contract of docs/DESIGN.md, determinism per seed and epoch (also
across threads and backends), negatives, and images that fail to load."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from coco_files import person_annotation, standing_keypoints, write_coco, write_image
from mrcnn_kp.config import TinyConfig
from mrcnn_kp.data.coco import CocoKeypointDataset
from mrcnn_kp.data.pipeline import DataGenerator, select_instances
from mrcnn_kp.image_meta import parse_image_meta

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"input_image": (np.float32, ("B", "S", "S", 3)),
        "input_image_meta": (np.float32, ("B", "META")),
        "input_rpn_match": (np.int32, ("B", "A")),
        "input_rpn_bbox": (np.float32, ("B", "A", 4)),
        "input_gt_class_ids": (np.int32, ("B", "G")),
        "input_gt_boxes": (np.float32, ("B", "G", 4)),
        "input_gt_masks": (np.float32, ("B", "G", "M", "M")),
        "input_gt_keypoints": (np.float32, ("B", "G", 17, 3))}


def assert_same_batch(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_follows_the_contract_on_real_coco(coco_dataset):
    config = TinyConfig(MAX_GT_INSTANCES=30)  # room for the crowd region after the persons
    generator = DataGenerator(coco_dataset, config, shuffle=False, augment=True)
    # images 0.. in order; find one batch holding a crowd region
    crowd_image = next(i for i, info in enumerate(coco_dataset.image_info)
                       if any(r["crowd"] for r in info["annotations"]))
    batch = generator[crowd_image // config.BATCH_SIZE]
    sizes = {"B": 2, "S": 128, "META": config.IMAGE_META_SIZE, "A": config.NUM_ANCHORS,
             "G": config.MAX_GT_INSTANCES, "M": 28}
    assert set(batch) == set(KEYS)
    for key, (dtype, shape) in KEYS.items():
        assert batch[key].dtype == dtype, key
        assert batch[key].shape == tuple(sizes.get(d, d) for d in shape), key
    assert -1 in batch["input_gt_class_ids"]
    assert len(generator) == 460  # ceil(919 / 2)
    for b in range(2):
        meta = parse_image_meta(batch["input_image_meta"][b])
        y1, x1, y2, x2 = meta["window"].astype(int)
        image = batch["input_image"][b]
        assert image.max() <= 255 and image.min() >= 0 and image.max() > 50
        assert image[:y1].sum() == image[y2:].sum() == image[:, :x1].sum() == \
            image[:, x2:].sum() == 0  # zero padding
        n = int((batch["input_gt_class_ids"][b] != 0).sum())
        boxes = batch["input_gt_boxes"][b]
        assert (boxes[:n, 0] >= x1).all() and (boxes[:n, 2] <= x2).all()
        assert (boxes[:n, 2] > boxes[:n, 0]).all() and not boxes[n:].any()
        assert not batch["input_gt_keypoints"][b, n:].any()
        assert set(np.unique(batch["input_gt_keypoints"][b, :, :, 2])) <= {0.0, 1.0, 2.0}
        match = batch["input_rpn_match"][b]
        assert (match != 0).sum() == config.RPN_TRAIN_ANCHORS_PER_IMAGE
        assert not batch["input_rpn_bbox"][b][match != 1].any()


def test_batches_are_deterministic_per_seed_and_epoch(synthetic_split):
    dataset = CocoKeypointDataset(*synthetic_split)
    config = TinyConfig(AUGMENT_SCALE_RANGE=(0.8, 1.25))
    first = DataGenerator(dataset, config, augment=True, seed=5)
    second = DataGenerator(dataset, config, augment=True, seed=5)
    assert_same_batch(first[1], second[1])
    other_seed = DataGenerator(dataset, config, augment=True, seed=6)
    assert not np.array_equal(first.image_order(), other_seed.image_order())
    order_epoch0 = first.image_order()
    first.on_epoch_end()
    assert first.epoch == 1 and not np.array_equal(first.image_order(), order_epoch0)
    second.set_epoch(1)
    assert_same_batch(first[0], second[0])
    # threads in any order give the same batches as one thread in order
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(first.__getitem__, [2, 0, 1]))
    for index, batch in zip([2, 0, 1], threaded):
        assert_same_batch(batch, second[index])


def test_last_batch_wraps_around(synthetic_split):
    dataset = CocoKeypointDataset(*synthetic_split, max_images=5)
    generator = DataGenerator(dataset, TinyConfig(), shuffle=False)
    assert len(generator) == 3
    ids = generator[2]["input_image_meta"][:, 0].tolist()
    assert ids == [4, 0]
    with pytest.raises(IndexError, match="batch 3 out of range for 3 batches"):
        generator[3]


def test_too_many_instances_keep_persons_with_keypoints_first():
    class_ids = np.array([-1, 1, 1, 1])
    keypoints = np.zeros((4, 17, 3), np.float32)
    keypoints[[1, 3], 0, 2] = 2
    assert select_instances(class_ids, keypoints, 2).tolist() == [1, 3]
    assert select_instances(class_ids, keypoints, 3).tolist() == [1, 2, 3]
    assert select_instances(class_ids, keypoints, 8).tolist() == [0, 1, 2, 3]


@pytest.fixture
def small_coco(tmp_path):
    """Two images: one person, one without anyone; plus a truncated JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_image(folder / "person.png", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    write_image(folder / "nobody.png", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    write_image(folder / "whole.jpg", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[:len(data) // 3])  # header fine, data cut
    images = [{"id": i + 1, "file_name": name, "width": 80, "height": 60}
              for i, name in enumerate(["person.png", "nobody.png", "truncated.jpg"])]
    anns = [person_annotation(1, 1, (20, 5, 40, 50), standing_keypoints(20, 6, scale=0.6))]
    return write_coco(tmp_path, images, anns), folder


def test_images_without_persons_give_all_zero_ground_truth(small_coco):
    dataset = CocoKeypointDataset(*small_coco)
    config = TinyConfig(IMAGES_PER_GPU=1)
    generator = DataGenerator(dataset, config, shuffle=False)
    batch = generator[1]  # nobody.png
    for key in ("input_gt_class_ids", "input_gt_boxes", "input_gt_masks", "input_gt_keypoints"):
        assert not batch[key].any(), key
    assert (batch["input_rpn_match"] == 1).sum() == 0
    assert (batch["input_rpn_match"] == -1).sum() == config.RPN_TRAIN_ANCHORS_PER_IMAGE
    person = generator[0]
    assert person["input_gt_class_ids"][0].tolist()[:2] == [1, 0]
    # (20, 5, 60, 55) at scale 128 / 80 = 1.6, padded 16 px from the top
    np.testing.assert_allclose(person["input_gt_boxes"][0, 0], [32, 24, 96, 104], atol=1e-3)


def test_unreadable_image_is_replaced_and_counted(small_coco, caplog):
    dataset = CocoKeypointDataset(*small_coco)
    generator = DataGenerator(dataset, TinyConfig(IMAGES_PER_GPU=1), shuffle=False)
    batch = generator[2]  # truncated.jpg -> replaced by the next image in the order
    assert batch["input_image_meta"][0, 0] == 0
    assert sum(generator.failures.values()) == 1
    assert "truncated.jpg" in next(iter(generator.failures))
    assert any("skipping image" in r.getMessage() and "truncated" in r.getMessage()
               for r in caplog.records)


def test_same_batches_on_the_jax_backend(synthetic_split, tmp_path):
    pytest.importorskip("jax")
    dataset = CocoKeypointDataset(*synthetic_split)
    config = TinyConfig(AUGMENT_SCALE_RANGE=(0.8, 1.25))
    here = DataGenerator(dataset, config, augment=True, seed=7)[1]
    out = tmp_path / "jax_batch.npz"
    script = (
        "import sys, keras, numpy as np\n"
        "from mrcnn_kp.config import TinyConfig\n"
        "from mrcnn_kp.data.coco import CocoKeypointDataset\n"
        "from mrcnn_kp.data.pipeline import DataGenerator\n"
        "assert keras.backend.backend() == 'jax'\n"
        "ds = CocoKeypointDataset(sys.argv[1], sys.argv[2])\n"
        "config = TinyConfig(AUGMENT_SCALE_RANGE=(0.8, 1.25))\n"
        "np.savez(sys.argv[3], **DataGenerator(ds, config, augment=True, seed=7)[1])\n")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script, *synthetic_split, str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as there:
        assert_same_batch(here, dict(there))


def test_empty_dataset_is_refused(tmp_path):
    path = write_coco(tmp_path, [], [])
    dataset = CocoKeypointDataset(path, tmp_path)
    with pytest.raises(ValueError, match="the dataset has no images"):
        DataGenerator(dataset, TinyConfig())
    assert json.loads(path.read_text())["images"] == []


def test_shards_split_every_global_batch_and_cover_the_epoch():
    from mrcnn_kp.config import TinyConfig
    from mrcnn_kp.data.synthetic import synthetic_dataset

    dataset = synthetic_dataset("val", num_images=12, image_size=64)
    config = TinyConfig(IMAGES_PER_GPU=2)
    whole = DataGenerator(dataset, TinyConfig(IMAGES_PER_GPU=6), seed=3)
    shards = [DataGenerator(dataset, config, seed=3, num_shards=3, shard_index=i)
              for i in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2] and len(whole) == 2
    for epoch in range(2):
        orders = [s.image_order(epoch) for s in shards]
        ids = np.concatenate(orders)
        assert sorted(ids.tolist()) == list(range(12))  # each image once in the epoch
        # step b of the 3 shards is step b of one worker with the 3 x 2 images
        steps = np.stack([o.reshape(2, 2) for o in orders], axis=1).reshape(2, 6)
        np.testing.assert_array_equal(steps, whole.image_order(epoch).reshape(2, 6))
    # 13 images in global batches of 6: the last one repeats 5 images, no image is dropped
    uneven = [DataGenerator(synthetic_dataset("val", num_images=13, image_size=64), config,
                            num_shards=3, shard_index=i) for i in range(3)]
    ids = np.concatenate([s.image_order(0) for s in uneven])
    assert len(ids) == 18 and set(ids.tolist()) == set(range(13))
    with pytest.raises(ValueError, match="shard_index 3 is not in 0..2"):
        DataGenerator(dataset, config, num_shards=3, shard_index=3)
