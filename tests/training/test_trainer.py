import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from mrcnn_kp import run_directory
from mrcnn_kp.training import checkpoints
from mrcnn_kp.training.trainer import StepsPerEpoch, Trainer
from standin_models import StandinBatches, build_standin_training_model, standin_config

HERE = os.path.dirname(os.path.abspath(__file__))


def weight_values(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def new_trainer(model_dir, **overrides):
    config = standin_config(**overrides)
    return Trainer(build_standin_training_model(config), config, model_dir=str(model_dir))


def iterations(trainer):
    return int(keras.ops.convert_to_numpy(trainer.model.optimizer.iterations))


def test_sigkilled_run_resumes_from_the_last_epoch_with_the_same_iteration_count(tmp_path):
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    killed = subprocess.run([sys.executable, os.path.join(HERE, "standin_models.py"),
                             str(tmp_path / "killed"), "3", "--kill-at", "2:2"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = run_directory.find_last(tmp_path / "killed", "standin")
    assert last.endswith("mask_rcnn_standin_0001.weights.h5")  # epoch 2 never finished

    resumed = new_trainer(tmp_path / "killed")
    resumed.load_checkpoint(last)
    assert resumed.epoch == 1 and resumed.log_dir == os.path.dirname(last)
    assert int(resumed.optimizer_state["sgd/iteration"]) == 3  # 1 epoch x 3 steps
    history = resumed.train(StandinBatches(), None, 0.05, 3, "all", verbose=0)
    assert history.epoch == [1, 2]
    restored, fresh = resumed.restored_optimizer_state
    assert fresh == [] and len(restored) == 22 + 1 + 5  # momenta, sgd/iteration, guard's 5
    assert iterations(resumed) == 9
    assert sorted(f for f in os.listdir(resumed.log_dir) if f.endswith(".weights.h5")) == \
        [f"mask_rcnn_standin_000{e}.weights.h5" for e in (1, 2, 3)]

    straight = new_trainer(tmp_path / "straight")
    straight.train(StandinBatches(), None, 0.05, 3, "all", verbose=0)
    assert iterations(straight) == 9
    expected, got = weight_values(straight.model), weight_values(resumed.model)
    assert len(expected) == len(got)
    for index, (value, other) in enumerate(zip(expected, got)):
        np.testing.assert_allclose(other, value, rtol=1e-6, atol=1e-7, err_msg=str(index))


def test_stages_continue_the_epoch_count_and_the_optimizer(tmp_path):
    trainer = new_trainer(tmp_path)
    first = trainer.train(StandinBatches(), StandinBatches(2), 0.05, 1, "heads", verbose=0)
    assert first.epoch == [0] and "val_keypoint_loss" in first.history
    weights = [w.path for w in trainer.model.weights]
    head_key = f"momentum/{weights.index('fpn_c5p5/kernel')}"
    res4_key = f"momentum/{weights.index('res4a_branch2a/kernel')}"
    head_momentum = trainer.optimizer_state[head_key]
    assert res4_key not in trainer.optimizer_state
    second = trainer.train(StandinBatches(), None, 0.05, 3, "4+", verbose=0)
    assert second.epoch == [1, 2] and trainer.epoch == 3
    assert iterations(trainer) == 9  # carried over: 3 from "heads" + 6
    assert np.any(head_momentum != 0)
    assert res4_key in trainer.optimizer_state
    meta, _ = checkpoints.load_state(checkpoints.state_path(trainer.last_checkpoint))
    assert meta["epoch"] == 3 and meta["iterations"] == 9 and meta["layers"] == "4+"
    assert trainer.train(StandinBatches(), None, 0.05, 3, "all", verbose=0) is None


def test_run_directory_has_config_and_tensorboard_scalars(tmp_path):
    import tensorflow as tf

    trainer = new_trainer(tmp_path)
    trainer.train(StandinBatches(), StandinBatches(2), 0.05, 1, "heads", verbose=0)
    assert os.path.basename(trainer.log_dir).startswith("standin")
    assert standin_config().from_json(os.path.join(trainer.log_dir, "config.json")).NAME == \
        "standin"
    tags = set()
    for split in ("train", "validation"):
        for name in os.listdir(os.path.join(trainer.log_dir, split)):
            for event in tf.compat.v1.train.summary_iterator(
                    os.path.join(trainer.log_dir, split, name)):
                tags.update(f"{split}/{v.tag}" for v in event.summary.value)
    assert {"train/epoch_keypoint_loss", "train/epoch_rpn_class_loss", "train/epoch_loss",
            "train/epoch_learning_rate", "validation/epoch_mrcnn_mask_loss"} <= tags


class EpochSource(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()
        self.epoch = 0

    def __len__(self):
        return 4

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        return (self.epoch, index)


def test_steps_per_epoch_batches_depend_only_on_epoch_and_step():
    view = StepsPerEpoch(EpochSource(), steps=3, epoch=2)
    assert len(view) == 3
    assert [view[i] for i in range(3)] == [(1, 2), (1, 3), (2, 0)]  # positions 6, 7, 8
    view.on_epoch_end()  # Keras calls this after peeking too: it must not move the epoch
    view.set_epoch(0)
    assert [view[i] for i in range(3)] == [(0, 0), (0, 1), (0, 2)]


def test_layers_without_weights_are_refused(tmp_path):
    trainer = new_trainer(tmp_path)
    with pytest.raises(ValueError, match="selects no layer with weights"):
        trainer.train(StandinBatches(), None, 0.05, 1, r"nothing\_here", verbose=0)


def test_mixed_float16_trains_with_dynamic_loss_scaling(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        trainer = new_trainer(tmp_path, MIXED_PRECISION="mixed_float16")
        history = trainer.train(StandinBatches(), None, 0.05, 1, "all", verbose=0)
        optimizer = trainer.model.optimizer
        assert optimizer.dynamic_loss_scale
        assert trainer.model.get_layer("conv1").compute_dtype == "float16"
        assert trainer.model.get_layer("conv1").kernel.dtype == "float32"
        assert np.isfinite(history.history["loss"][0])
        # a float16 overflow (inf gradients at scale 2**15) skips the step and halves the scale
        skipped = int(keras.ops.convert_to_numpy(optimizer.skipped_steps))
        assert int(keras.ops.convert_to_numpy(optimizer.iterations)) + skipped == 3
        assert float(keras.ops.convert_to_numpy(optimizer.dynamic_scale)) == 2.0 ** (15 - skipped)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_steps_per_epoch_gives_worker_threads_batches_of_two_epochs_at_once():
    """A DataGenerator is asked for (batch, epoch) without changing its own epoch, so threads
    building the last batches of one source epoch and the first of the next cannot mix them."""
    from concurrent.futures import ThreadPoolExecutor

    from mrcnn_kp.config import TinyConfig
    from mrcnn_kp.data.pipeline import DataGenerator
    from mrcnn_kp.data.synthetic import synthetic_dataset

    config = TinyConfig(IMAGES_PER_GPU=1, IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64)
    source = DataGenerator(synthetic_dataset("val", num_images=3, image_size=64), config,
                           shuffle=True, augment=True, seed=4)
    view = StepsPerEpoch(source, steps=2, epoch=1)  # positions 2, 3: source epochs 0 and 1
    expected = [source.get_batch(2, 0), source.get_batch(0, 1)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: view[i % 2], range(8)))
    assert source.epoch == 0  # never moved
    for index, batch in enumerate(got):
        for key, value in expected[index % 2].items():
            np.testing.assert_array_equal(batch[key], value, err_msg=key)
    assert not np.array_equal(expected[0]["input_image"], expected[1]["input_image"])
