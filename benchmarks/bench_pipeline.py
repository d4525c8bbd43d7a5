"""How fast the data pipeline makes training batches: prints one JSON line.

    python benchmarks/bench_pipeline.py                      # 1024 px, real COCO subset if found
    python benchmarks/bench_pipeline.py --data synthetic --image-size 512 --batches 10

Batches are the training model's full input dict (images, image_meta, RPN targets over all
anchors, padded ground truth with mini masks), BATCH_SIZE images each, with augmentation
(flip) on. "batches_per_second" is one thread; "batches_per_second_workers" is
keras.utils.PyDataset's thread workers (`--workers`, default 2, one per core), here a thread
pool calling __getitem__ just as Keras' OrderedEnqueuer does. The stage times are per image,
from one thread.
"""
import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def coco_mini_dir():
    """The COCO keypoint subset named by $MRCNN_KP_COCO_MINI (a folder holding
    person_keypoints_train.json and images/), or None."""
    path = os.environ.get("MRCNN_KP_COCO_MINI")
    return Path(path) if path else None


def load_dataset(kind, num_images):
    from mrcnn_kp.data.coco import CocoKeypointDataset
    from mrcnn_kp.data.synthetic import synthetic_dataset

    root = coco_mini_dir()
    if kind in ("auto", "coco") and root and (root / "person_keypoints_train.json").is_file():
        return "coco_kp_mini", CocoKeypointDataset(root / "person_keypoints_train.json",
                                                   root / "images", max_images=num_images)
    if kind == "coco":
        sys.exit(f"COCO subset not found in {root} (set MRCNN_KP_COCO_MINI)")
    return "synthetic", synthetic_dataset("train", num_images=num_images)


def stage_times(generator, count):
    """Mean seconds per image of loading + molding, and of the RPN targets."""
    from mrcnn_kp.data import targets
    from mrcnn_kp.data.pipeline import load_image_gt

    config, dataset = generator.config, generator.dataset
    load, rpn = [], []
    for i in range(count):
        rng = np.random.default_rng(i)
        start = time.perf_counter()
        sample = load_image_gt(dataset, config, i % dataset.num_images, True, rng)
        middle = time.perf_counter()
        targets.rpn_targets_for_config(sample["class_ids"], sample["boxes"], config, rng)
        load.append(middle - start)
        rpn.append(time.perf_counter() - middle)
    return float(np.mean(load)), float(np.mean(rpn))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("auto", "coco", "synthetic"), default="auto")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--images", type=int, default=64, help="distinct images cycled")
    parser.add_argument("--batches", type=int, default=16, help="batches timed per mode")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from mrcnn_kp.config import Config
    from mrcnn_kp.data.pipeline import DataGenerator

    config = Config(IMAGE_MIN_DIM=min(800, args.image_size), IMAGE_MAX_DIM=args.image_size)
    name, dataset = load_dataset(args.data, args.images)
    generator = DataGenerator(dataset, config, shuffle=True, augment=True, seed=0)
    count = min(args.batches, len(generator))
    generator[0]  # warm-up: anchors cached, imports done

    start = time.perf_counter()
    for i in range(count):
        generator[i]
    sequential = count / (time.perf_counter() - start)

    generator.on_epoch_end()  # a new epoch: the same images in another order
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        for _ in pool.map(generator.__getitem__, range(count)):
            pass
    threaded = count / (time.perf_counter() - start)

    load_s, rpn_s = stage_times(generator, min(8, dataset.num_images))
    batch = generator[0]
    print(json.dumps({
        "benchmark": "pipeline",
        "data": name,
        "image_size": args.image_size,
        "batch_size": config.BATCH_SIZE,
        "num_anchors": config.NUM_ANCHORS,
        "batch_megabytes": round(sum(v.nbytes for v in batch.values()) / 2 ** 20, 1),
        "batches_timed": count,
        "batches_per_second": round(sequential, 3),
        "workers": args.workers,
        "batches_per_second_workers": round(threaded, 3),
        "seconds_per_image_load_and_mold": round(load_s, 4),
        "seconds_per_image_rpn_targets": round(rpn_s, 4),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
