"""The staged trainer: one `train()` call per stage, matterport-style, on any Keras model whose
compiled loss is the training loss (our training model sums the six losses in compute_loss).

    trainer = Trainer(model, config, model_dir="logs")
    trainer.train(train_batches, val_batches, learning_rate=0.01, epochs=2, layers="heads")
    trainer.train(train_batches, val_batches, learning_rate=0.001, epochs=6, layers="all")

`epochs` is the epoch to train UP TO, so stages continue the count (the second call runs
epochs 3..6). Each call selects the trainable layers, builds a fresh guarded SGD for them,
carries over the optimizer state of the previous call (iterations, and the momenta of layers
that stay trainable), compiles and fits. After each epoch a checkpoint (weights + optimizer
state) is written atomically; `load_checkpoint(find_last())` and the next `train()` continue
exactly where the run stopped: same epoch, same optimizer iteration count, same momenta.
"""
import os
import sys

import keras

from mrcnn_kp import run_directory
from mrcnn_kp.config import LOSS_NAMES
from mrcnn_kp.training import checkpoints, determinism, distribute
from mrcnn_kp.training.callbacks import (Checkpointer, GracefulInterrupt, LearningRateLogger,
                                         NonFiniteMonitor, ScalarLogger, TimeBudget,
                                         TrainingInterrupted)
from mrcnn_kp.training.optimizer import build_optimizer
from mrcnn_kp.training.stages import set_trainable
from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp.training")


class StepsPerEpoch(keras.utils.PyDataset):
    """A fixed number of batches per epoch drawn from a PyDataset of any length.

    Batch i of epoch e is batch (e * steps + i) mod len(source) of the source's epoch
    (e * steps + i) // len(source): a pure function of (epoch, i), so a resumed run sees the
    batches an uninterrupted run would have seen. A DataGenerator is asked for that batch of
    that epoch of its own shuffling (get_batch: nothing shared, so worker threads cannot mix
    epochs); another source with `set_epoch` is switched to it first.

    The epoch is set by `epoch_callback()` at each epoch's start, not by on_epoch_end: Keras
    also calls on_epoch_end after peeking at the first batch, which would skew the count.
    """

    def __init__(self, source, steps, epoch=0):
        super().__init__(workers=getattr(source, "workers", 1),
                         use_multiprocessing=getattr(source, "use_multiprocessing", False),
                         max_queue_size=getattr(source, "max_queue_size", 10))
        if len(source) < 1:
            raise ValueError("the training data yields no batches")
        self.source = source
        self.steps = int(steps)
        self.epoch = int(epoch)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batch(self.epoch, index)

    def batch(self, epoch, index):
        """Batch `index` of trainer epoch `epoch`."""
        position = int(epoch) * self.steps + int(index)
        source_epoch, source_index = divmod(position, len(self.source))
        if hasattr(self.source, "get_batch"):  # DataGenerator: no shared state between threads
            return self.source.get_batch(source_index, source_epoch)
        if hasattr(self.source, "set_epoch") and getattr(self.source, "epoch", None) != \
                source_epoch:
            self.source.set_epoch(source_epoch)
        return self.source[source_index]

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def on_epoch_end(self):
        pass  # see epoch_callback

    def epoch_callback(self):
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch))


class Trainer:
    """Trains `model` (built from `config`) in stages; keeps the run's epoch, log directory and
    optimizer state between calls.

    model_dir: parent of the run directories (`<model_dir>/<name><YYYYmmddTHHMM>/`).
    strategy: from training.distribute.make_strategy (None: one device); the model must have
    been built inside `distribute.scope(strategy)`.
    """

    def __init__(self, model, config, model_dir="logs", strategy=None):
        self.model = model
        self.config = config
        self.model_dir = os.fspath(model_dir)
        self.strategy = strategy
        self.epoch = 0
        self.layers = None
        self.optimizer_state = None  # {optimizer variable path: array} to restore next train()
        self.last_checkpoint = None
        self.restored_optimizer_state = None  # (restored keys, fresh keys) of the last train()
        self.history = None
        # several workers: only the chief (worker 0) writes the run directory
        self.is_chief = distribute.is_chief(strategy)
        self.set_log_dir()

    # ------------------------------------------------------------------ run directory
    def set_log_dir(self, model_path=None):
        """A new run directory, or, for a checkpoint inside a run directory, that directory and
        the epoch after which it was written (matterport's set_log_dir)."""
        self.epoch = 0
        self.log_dir = os.path.join(self.model_dir, checkpoints.run_dir_name(self.config))
        if model_path:
            parsed = run_directory.parse_checkpoint_path(model_path)
            if parsed is not None:
                self.log_dir, self.epoch = parsed
        # matterport's pattern, for display: format(epoch=3) gives epoch 3's file
        self.checkpoint_path = os.path.join(self.log_dir,
                                            run_directory.checkpoint_pattern(self.config.NAME))
        return self.log_dir

    def find_last(self):
        """The last checkpoint of this config's NAME under model_dir (FileNotFoundError if none)."""
        return run_directory.find_last(self.model_dir, self.config.NAME, any_name=False)

    def load_checkpoint(self, path, by_name=True, exclude=()):
        """Load weights by layer name; for our checkpoints also the epoch, the run directory and
        the optimizer state (restored into the optimizer of the next `train()` call).

        Returns the weights loader's report.
        """
        path = os.fspath(path)
        report = checkpoints.load_model_weights(self.model, path, by_name=by_name,
                                                exclude=exclude)
        self.set_log_dir(path)
        if run_directory.parse_checkpoint_path(path) is not None:  # resuming this run directory
            checkpoints.remove_unfinished_writes(self.log_dir)
        self.optimizer_state = None
        state_file = checkpoints.state_path(path)
        if os.path.exists(state_file):
            meta, arrays = checkpoints.load_state(state_file)
            self.optimizer_state = arrays
            self.epoch = int(meta.get("epoch", self.epoch))
            if meta.get("seed_generators") is not None:
                determinism.restore_seed_generator_states(self.model, meta["seed_generators"])
            log.info("resuming after epoch %d, optimizer iteration %s, from %s", self.epoch,
                     meta.get("iterations"), path)
        elif self.epoch:
            log.warning("no optimizer state beside %s: momenta and the iteration count start "
                        "from zero", path)
        return report

    # ------------------------------------------------------------------ training
    def train(self, train_data, val_data, learning_rate, epochs, layers, custom_callbacks=None,
              verbose="auto", deadline=None):
        """Train `layers` up to epoch `epochs` (matterport semantics); returns the History, or
        None when there is nothing to do (already at `epochs`, or the time budget is spent).

        train_data, val_data: keras.utils.PyDataset of training batches (val_data may be None);
        config.STEPS_PER_EPOCH and VALIDATION_STEPS batches are drawn from them per epoch.
        deadline: time.monotonic() value or a TimeBudget shared by the stages; training stops
        before an epoch that would not finish in time (mid-epoch only once it has passed).
        Raises TrainingInterrupted after Ctrl-C / SIGTERM, once the checkpoint is written.
        """
        config = self.config
        epochs = int(epochs)
        if epochs <= self.epoch:
            log.info("already trained %d epochs, nothing to do for epochs=%d (layers=%r)",
                     self.epoch, epochs, layers)
            return None
        budget = deadline if isinstance(deadline, TimeBudget) or deadline is None \
            else TimeBudget(deadline)
        if budget is not None and (budget.expired or budget.remaining() <= 0):
            budget.expired = True
            log.info("time budget spent: stage layers=%r not started", layers)
            return None
        self.layers = layers
        if self.is_chief:
            checkpoints.write_run_config(self.log_dir, config)

        steps = int(config.STEPS_PER_EPOCH)
        with distribute.scope(self.strategy):
            trained = set_trainable(self.model, layers, config)
            if not self.model.trainable_weights:
                raise ValueError(f"layers={layers!r} selects no layer with weights")
            optimizer = build_optimizer(config, learning_rate, steps, epochs,
                                        self.model.trainable_weights)
            if self.optimizer_state:
                restored, fresh = checkpoints.restore_optimizer_state(
                    optimizer, self.model, self.optimizer_state)
                self.restored_optimizer_state = (restored, fresh)
                log.info("optimizer state carried over: %d variables restored, %d fresh",
                         len(restored), len(fresh))
            self.model.compile(optimizer=optimizer)

        log.info("stage layers=%r: epochs %d..%d, learning rate %g, %d trainable layers, "
                 "%d trainable weights; checkpoints in %s", layers, self.epoch + 1, epochs,
                 learning_rate, len(trained), len(self.model.trainable_weights), self.log_dir)

        checkpointer = Checkpointer(self)
        interrupt = GracefulInterrupt(checkpointer)
        train_steps = StepsPerEpoch(train_data, steps, epoch=self.epoch)
        callbacks = [train_steps.epoch_callback(), checkpointer, interrupt,
                     NonFiniteMonitor(LOSS_NAMES), LearningRateLogger()]
        if self.is_chief:
            callbacks.append(ScalarLogger(self.log_dir))
        if budget is not None:
            budget.checkpointer = checkpointer
            callbacks.append(budget)
        callbacks += list(custom_callbacks or [])
        val_steps = None
        if val_data is not None:
            val_steps = StepsPerEpoch(val_data, config.VALIDATION_STEPS)
        start_epoch = self.epoch
        if verbose == "auto":  # a progress bar on a terminal, one line per epoch in a log
            verbose = 1 if sys.stdout.isatty() else 2
        try:
            train_input = distribute.distribute_batches(self.strategy, train_steps)
            if val_steps is not None:
                val_steps = distribute.distribute_batches(self.strategy, val_steps)
            with distribute.scope(self.strategy), \
                    distribute.fitting(self.strategy, self.model):
                self.history = self.model.fit(train_input, validation_data=val_steps,
                                              initial_epoch=start_epoch, epochs=epochs,
                                              callbacks=callbacks, verbose=verbose,
                                              shuffle=False)  # order is the data's business
        except Exception as error:
            lost = distribute.lost_worker_error(error) \
                if distribute.is_multi_worker(self.strategy) else None
            if lost is not None:
                raise lost from error
            raise
        finally:
            interrupt.on_train_end()  # signal handlers back even when fit raised
            if checkpointer.last_path is not None:
                self.last_checkpoint = checkpointer.last_path
        self.optimizer_state = checkpoints.optimizer_state(self.model.optimizer, self.model)
        if checkpointer.completed_epochs is not None:
            self.epoch = checkpointer.completed_epochs
        self.last_checkpoint = checkpointer.last_path
        if interrupt.signum is not None:
            raise TrainingInterrupted(interrupt.signum, interrupt.checkpoint)
        return self.history
