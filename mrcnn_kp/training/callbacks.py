"""Callbacks of the trainer: per-epoch checkpoints, Ctrl-C/SIGTERM, non-finite losses, time budget.

They are ordinary `keras.callbacks.Callback`s, so they work with any `fit`. The trainer installs
Checkpointer, GracefulInterrupt and NonFiniteMonitor itself; TimeBudget is opt-in
(`mrcnn-kp train --minutes`, the demo).
"""
import math
import os
import signal
import threading
import time

import keras
import numpy as np

from mrcnn_kp.training import checkpoints, determinism, distribute
from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp.training")


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by the trainer after Ctrl-C or SIGTERM, once the checkpoint is on disk.

    A KeyboardInterrupt, so a script of staged train() calls stops; `mrcnn-kp train` catches it
    and exits cleanly. `checkpoint` is the file to resume from, `signum` the signal.
    """

    def __init__(self, signum, checkpoint):
        name = signal.Signals(signum).name if signum else "interrupt"
        super().__init__(f"training stopped by {name}; checkpoint {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


class Checkpointer(keras.callbacks.Callback):
    """Writes `mask_rcnn_<name>_<epoch>.weights.h5` and its optimizer state after each epoch.

    `run` is the object that knows the run (the Trainer): log_dir, config, layers.
    A checkpoint whose weights are not all finite is not written: the last good one stays.
    `stop_mid_epoch` is how the other callbacks (signals, time budget) end fit early: it writes
    `..._<completed>_interrupted.weights.h5` and stops after the current step.
    """

    def __init__(self, run):
        super().__init__()
        self.run = run
        self.last_path = None
        self.partial_epoch = False  # fit was stopped in the middle of an epoch
        self.completed_epochs = None
        self._epoch = 0

    def save(self, completed_epochs, interrupted=False, step_in_epoch=None):
        run = self.run
        if keras.backend.backend() == "jax" and hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()  # mid-epoch, JAX keeps the live values outside the model
        if not checkpoints.all_finite(self.model):
            log.error("weights hold NaN/inf after epoch %d: checkpoint not written; the last "
                      "good one is %s", completed_epochs, self.last_path)
            return None
        optimizer = self.model.optimizer
        meta = {
            "epoch": int(completed_epochs),
            "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
            "skipped_steps": _skipped_steps(optimizer),
            "layers": run.layers,
            "interrupted": bool(interrupted),
            "step_in_epoch": step_in_epoch,
            # the ROI sampler's random state: a resumed run draws what this one would have
            "seed_generators": determinism.seed_generator_states(self.model),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        path = checkpoints.checkpoint_path(run.log_dir, run.config, completed_epochs,
                                           interrupted=interrupted)
        if getattr(run, "is_chief", True):
            checkpoints.save_checkpoint(self.model, optimizer, path, meta, config=run.config)
        else:
            # Another worker of a cluster: the chief writes the checkpoint. This one writes it
            # too, to a temporary folder it then deletes (or to $MRCNN_KP_WORKER_CHECKPOINT_DIR,
            # kept), because reading some distributed variables (metrics, sync-on-read
            # counters) is a collective every worker must join.
            import contextlib
            import tempfile

            keep = distribute.worker_checkpoint_dir()
            if keep:
                os.makedirs(keep, exist_ok=True)
            with contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(
                    prefix="mrcnn_kp_worker_", ignore_cleanup_errors=True) as scratch:
                checkpoints.save_checkpoint(self.model, optimizer,
                                            os.path.join(scratch, os.path.basename(path)), meta,
                                            config=run.config)
        self.last_path = path
        return path

    def stop_mid_epoch(self, step_in_epoch, reason):
        """Save the weights of the unfinished epoch as an `_interrupted` checkpoint and stop."""
        if self.partial_epoch:
            return self.last_path
        self.partial_epoch = True
        path = self.save(self._epoch, interrupted=True, step_in_epoch=step_in_epoch)
        log.warning("%s: stopped in epoch %d after step %d; checkpoint %s", reason,
                    self._epoch + 1, step_in_epoch, path)
        self.model.stop_training = True
        return path

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.partial_epoch:
            return  # the unfinished epoch is already saved as _interrupted
        self.completed_epochs = epoch + 1
        self.save(epoch + 1)


class GracefulInterrupt(keras.callbacks.Callback):
    """On SIGINT (Ctrl-C) or SIGTERM: finish the current step, save a checkpoint, stop fit.

    The handlers exist only while fit runs (and only in the main thread); a second Ctrl-C
    while saving raises KeyboardInterrupt as usual. `signum` and `checkpoint` tell the
    trainer what happened; it raises TrainingInterrupted after fit returns.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpointer):
        super().__init__()
        self.checkpointer = checkpointer
        self.signum = None
        self.checkpoint = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up waiting
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: saving a checkpoint after this step",
                    signal.Signals(signum).name)

    def _restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_batch_end(self, batch, logs=None):
        if self.signum is not None and self.checkpoint is None:
            self.checkpoint = self.checkpointer.stop_mid_epoch(
                batch + 1, signal.Signals(self.signum).name)

    def on_epoch_end(self, epoch, logs=None):
        # A signal during validation: the Checkpointer (called before us) saved the epoch.
        if self.signum is not None and self.checkpoint is None:
            self.checkpoint = self.checkpointer.last_path
            log.warning("checkpoint saved to %s; stopping", self.checkpoint)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self._restore()


class NonFiniteMonitor(keras.callbacks.Callback):
    """Names the loss that went NaN/inf and counts the updates the optimizer skipped.

    The optimizer (training.optimizer.NonFiniteGuard) does the skipping. This callback looks at
    the losses in each step's logs; when one is not finite it reads the guard's `skipped_steps`
    (syncing JAX state only then) and logs which losses were non-finite. Keras logs running
    means, so a NaN stays visible until the epoch ends: each skip is still reported once.
    """

    def __init__(self, loss_names=None):
        super().__init__()
        self.loss_names = tuple(loss_names) if loss_names else None
        self.events = []  # (epoch, step, [non-finite loss names]) per skipped update seen
        self._epoch = 0
        self._skipped = 0

    def _read_skipped(self):
        if keras.backend.backend() == "jax" and hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()
        return _skipped_steps(self.model.optimizer)

    def on_train_begin(self, logs=None):
        self._skipped = _skipped_steps(self.model.optimizer)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _is_loss(self, name):
        if self.loss_names is not None:
            return name in self.loss_names
        return "loss" in name

    def on_train_batch_end(self, batch, logs=None):
        names = [name for name, value in (logs or {}).items()
                 if self._is_loss(name) and not _finite(value)]
        if not names:
            return
        skipped = self._read_skipped()
        if skipped == self._skipped:
            return
        self._skipped = skipped
        self.events.append((self._epoch, batch, names))
        log.warning("epoch %d step %d: non-finite %s; update skipped (%d skipped in all)",
                    self._epoch + 1, batch + 1, ", ".join(names), skipped)


class TimeBudget(keras.callbacks.Callback):
    """Ends training when the time is up: `deadline` is a time.monotonic() value.

    At an epoch end it stops when the next epoch would not finish in time, so runs end on a
    whole-epoch checkpoint. Mid-epoch it stops only once the deadline has passed, through
    `checkpointer.stop_mid_epoch` (an `_interrupted` checkpoint) when it has one. `expired`
    stays true afterwards: the Trainer skips later stages.
    """

    def __init__(self, deadline, checkpointer=None):
        super().__init__()
        self.deadline = float(deadline)
        self.checkpointer = checkpointer
        self.expired = False
        self._epoch_start = None
        self._epoch_seconds = 0.0

    @classmethod
    def from_minutes(cls, minutes):
        return cls(time.monotonic() + 60.0 * float(minutes))

    def remaining(self):
        return self.deadline - time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.expired or self.remaining() > 0:
            return
        self.expired = True
        if self.checkpointer is not None:
            self.checkpointer.stop_mid_epoch(batch + 1, "time budget spent")
        else:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_start is not None:
            self._epoch_seconds = time.monotonic() - self._epoch_start
        if not self.expired and self.remaining() < self._epoch_seconds:
            log.info("time budget: %.0f s left, an epoch takes %.0f s; stopping after epoch %d",
                     max(self.remaining(), 0), self._epoch_seconds, epoch + 1)
            self.expired = True
            self.model.stop_training = True


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard event files of every loss and the learning rate, once per epoch.

    `<log_dir>/train/` gets `epoch_<name>` for each training log (the six losses, their sum
    `loss`, `learning_rate`); `<log_dir>/validation/` the `val_*` values without the prefix,
    as Keras' TensorBoard callback lays them out. Written with TensorFlow's summary ops, which
    need no `tensorboard` package (only viewing them does: `pip install tensorboard`,
    `tensorboard --logdir logs`). Put it after LearningRateLogger.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, split):
        import os

        import tensorflow as tf

        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(os.path.join(self.log_dir, split))
        return self._writers[split]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"  # TensorBoard's scalar dashboard
        metadata = metadata.SerializeToString()
        by_split = {"train": {}, "validation": {}}
        for name, value in (logs or {}).items():
            try:
                value = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
            if name.startswith("val_"):
                by_split["validation"][name[4:]] = value
            else:
                by_split["train"][name] = value
        for split, values in by_split.items():
            if not values:
                continue
            writer = self._writer(split)
            with writer.as_default():
                for name, value in values.items():
                    tf.summary.write(f"epoch_{name}", tf.constant(value, tf.float32),
                                     step=epoch, metadata=metadata)
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class LearningRateLogger(keras.callbacks.Callback):
    """Adds `learning_rate` (the schedule's value at the current iteration) to the epoch logs,
    so History, CSVLogger and the progress bar's epoch line carry it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.model.optimizer is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def _skipped_steps(optimizer):
    counter = getattr(optimizer, "skipped_steps", None)
    if counter is None:
        return 0
    return int(keras.ops.convert_to_numpy(counter))


def _finite(value):
    try:
        return math.isfinite(float(np.asarray(value)))
    except (TypeError, ValueError):
        return True
