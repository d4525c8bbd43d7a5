import logging
import os
import signal
import time

import keras
import numpy as np
import pytest

from mrcnn_kp import run_directory
from mrcnn_kp.training import checkpoints
from mrcnn_kp.training.callbacks import TimeBudget, TrainingInterrupted
from mrcnn_kp.training.trainer import Trainer
from standin_models import StandinBatches, build_standin_training_model, standin_config


def new_trainer(model_dir, **overrides):
    config = standin_config(**overrides)
    return Trainer(build_standin_training_model(config), config, model_dir=str(model_dir))


def test_nan_loss_skips_the_update_names_the_loss_and_keeps_training(tmp_path, caplog):
    trainer = new_trainer(tmp_path)
    caplog.set_level(logging.WARNING, logger="mrcnn_kp")
    # source batch 1 (the second step) has a NaN keypoint target path
    trainer.train(StandinBatches(poison_batches={1}), None, 0.05, 1, "all", verbose=0)
    optimizer = trainer.model.optimizer
    assert int(keras.ops.convert_to_numpy(optimizer.skipped_steps)) == 1
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2  # 3 steps, 1 skipped
    assert "non-finite keypoint_loss; update skipped" in caplog.text
    assert "rpn_class_loss" not in caplog.text
    assert checkpoints.all_finite(trainer.model)
    assert os.path.exists(trainer.last_checkpoint)  # the epoch's checkpoint is still written


class SignalAt(keras.callbacks.Callback):
    def __init__(self, signum, epoch, step):
        super().__init__()
        self.signum, self.epoch, self.step, self._epoch = signum, epoch, step, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if (self._epoch, batch + 1) == (self.epoch, self.step):
            os.kill(os.getpid(), self.signum)


def test_sigterm_saves_a_checkpoint_and_stops_cleanly(tmp_path):
    trainer = new_trainer(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train(StandinBatches(), None, 0.05, 3, "all", verbose=0,
                      custom_callbacks=[SignalAt(signal.SIGTERM, 2, 1)])
    assert info.value.signum == signal.SIGTERM
    assert info.value.checkpoint.endswith("mask_rcnn_standin_0001_interrupted.weights.h5")
    assert signal.getsignal(signal.SIGTERM) is before
    assert trainer.epoch == 1
    meta, arrays = checkpoints.load_state(checkpoints.state_path(info.value.checkpoint))
    # the signal lands during step 1 of epoch 2; the handler sees it by the end of step 2
    assert (meta["epoch"], meta["step_in_epoch"], meta["iterations"]) == (1, 2, 5)
    assert run_directory.find_last(tmp_path, "standin") == info.value.checkpoint

    resumed = new_trainer(tmp_path)
    resumed.load_checkpoint(info.value.checkpoint)
    assert resumed.epoch == 1 and int(resumed.optimizer_state["sgd/iteration"]) == 5
    resumed.train(StandinBatches(), None, 0.05, 2, "all", verbose=0)
    assert int(keras.ops.convert_to_numpy(resumed.model.optimizer.iterations)) == 8


def test_time_budget_stops_mid_epoch_with_a_checkpoint_and_skips_later_stages(tmp_path):
    trainer = new_trainer(tmp_path, STEPS_PER_EPOCH=50)
    budget = TimeBudget(time.monotonic() + 0.5)

    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.1)

    history = trainer.train(StandinBatches(), None, 0.05, 2, "heads", deadline=budget,
                            custom_callbacks=[Slow()], verbose=0)
    assert budget.expired and history is not None
    assert trainer.epoch == 0
    assert trainer.last_checkpoint.endswith("mask_rcnn_standin_0000_interrupted.weights.h5")
    meta, _ = checkpoints.load_state(checkpoints.state_path(trainer.last_checkpoint))
    assert 1 <= meta["step_in_epoch"] < 50
    assert trainer.train(StandinBatches(), None, 0.05, 3, "all", deadline=budget) is None


def test_time_budget_stops_before_an_epoch_that_would_not_fit():
    budget = TimeBudget(time.monotonic() + 5.0)

    class FakeModel:
        stop_training = False

    budget.set_model(FakeModel())
    budget._epoch_start = time.monotonic() - 10.0  # this epoch took 10 s, 5 s are left
    budget.on_epoch_end(0)
    assert budget.expired and budget.model.stop_training
