"""One worker of a localhost training cluster (the multi-worker tests and benchmark run it).

    TF_CONFIG=... python multiworker_run.py   (or KERAS_BACKEND=jax JAX_COORDINATOR_ADDRESS=...
        JAX_NUM_PROCESSES=... JAX_PROCESS_ID=...) MODEL_DIR OUT_JSON EPOCHS GLOBAL_BATCH
        [--resume] [--kill-at EPOCH:STEP] [--steps N]

Trains the stand-in model (standin_models) on this worker's shard of ShardedBatches with the
strategy mrcnn_kp.training.distribute makes from the environment (MultiWorkerMirroredStrategy
when TF_CONFIG names a cluster, DataParallel over all processes on JAX, none otherwise) and one CPU thread, then writes the
losses per epoch, the weights, the step times and what it wrote to OUT_JSON. A WorkerLost is
printed as "WORKER_LOST <message>" with exit status 3 (on JAX at once, through
jax_cluster.exit_now).
"""
import json
import os
import sys
import time

if os.environ.get("KERAS_BACKEND") == "jax":  # JAX_COORDINATOR_ADDRESS etc. name the cluster
    from mrcnn_kp.training import jax_cluster

    jax_cluster.initialize()
else:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
keras.config.disable_traceback_filtering()
import numpy as np  # noqa: E402

from mrcnn_kp.training import distribute  # noqa: E402
from standin_models import FEATURES, KillAt, build_standin_training_model, standin_config  # noqa


class ShardedBatches(keras.utils.PyDataset):
    """Global batch i (global_batch rows, a pure function of (seed, i)), of which this worker
    yields rows [index * size, (index + 1) * size): the DataGenerator's slicing."""

    def __init__(self, num_batches, global_batch, num_shards=1, shard_index=0, seed=0):
        super().__init__()
        self.count, self.global_batch, self.seed = num_batches, global_batch, seed
        self.size = global_batch // num_shards
        self.rows = slice(shard_index * self.size, (shard_index + 1) * self.size)

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        features = rng.normal(size=(self.global_batch, FEATURES)).astype(np.float32)
        return {"features": features[self.rows],
                "poison": np.zeros((self.size, 1), np.float32)}


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times, self._start = [], None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def main(argv):
    from mrcnn_kp.training.trainer import Trainer

    model_dir, out, epochs, global_batch = argv[0], argv[1], int(argv[2]), int(argv[3])
    steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 3
    config = standin_config(IMAGES_PER_GPU=global_batch, STEPS_PER_EPOCH=steps)
    strategy = distribute.make_strategy(config)  # first: before any other TensorFlow op
    num_workers, index = distribute.worker_shard(strategy)
    config = config.copy(IMAGES_PER_GPU=global_batch // num_workers)
    with distribute.scope(strategy):
        model = build_standin_training_model(config)
    trainer = Trainer(model, config, model_dir=model_dir, strategy=strategy)
    if "--resume" in argv:
        trainer.load_checkpoint(trainer.find_last())
    resumed_epoch = trainer.epoch
    timer = StepTimer()
    callbacks = [timer]
    if "--kill-at" in argv:
        epoch, step = argv[argv.index("--kill-at") + 1].split(":")
        callbacks.append(KillAt(int(epoch), int(step)))
    data = ShardedBatches(steps * 2, global_batch, num_workers, index)
    try:
        history = trainer.train(data, None, 0.05, epochs, "all", custom_callbacks=callbacks,
                                verbose=0)
    except distribute.WorkerLost as lost:
        print("WORKER_LOST", lost, flush=True)
        from mrcnn_kp.training import jax_cluster

        jax_cluster.exit_now(3)  # JAX: not after the shutdown barrier's wait for the lost one
        return 3
    result = {
        "num_workers": num_workers, "index": index, "chief": trainer.is_chief,
        "replicas": distribute.num_replicas(strategy), "resumed_epoch": resumed_epoch,
        "epoch": trainer.epoch,
        "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "loss": [float(v) for v in history.history["loss"]] if history else [],
        "weights": [keras.ops.convert_to_numpy(w).tolist() for w in model.weights],
        "step_seconds": timer.times, "last_checkpoint": trainer.last_checkpoint,
    }
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
