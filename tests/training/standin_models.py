"""A seconds-fast stand-in for the training model, with the same contract and layer names.

Like mrcnn_kp.model.keypoint_rcnn.build_training_model: dict inputs, a dict of the six losses
(config.LOSS_NAMES) as outputs, compute_loss sums LOSS_WEIGHTS * loss, and each loss is a
metric. Layers carry the real model's name prefixes (ResNet `res{N}`/`bn{N}`, `fpn_`, a nested
`rpn_model`, TimeDistributed and batch-norm heads) so stage selection can be checked exactly.

Inputs: "features" float32 [B, 16] and "poison" float32 [B, 1], added to the keypoint head only,
so a NaN poison makes keypoint_loss (and its gradients) non-finite while the rest stay finite.

Run as a script, it trains in a subprocess (the SIGKILL test):
    python standin_models.py MODEL_DIR EPOCHS [--kill-at EPOCH:STEP] [--resume]
"""
import sys

import keras
import numpy as np
from keras import ops

from mrcnn_kp.config import LOSS_NAMES, TinyConfig

FEATURES = 16


def standin_config(**overrides):
    values = dict(NAME="standin", BACKBONE="resnet50", STEPS_PER_EPOCH=3, VALIDATION_STEPS=1,
                  IMAGES_PER_GPU=2, LEARNING_RATE=0.05, LR_WARMUP_STEPS=2, LR_SCHEDULE="cosine",
                  WEIGHT_DECAY=0.0001, GRADIENT_CLIP_NORM=5.0, TRAIN_BN=False)
    values.update(overrides)
    return TinyConfig(**values)


# layer name -> which stage preset should train it (besides "all")
BACKBONE_LAYERS = ("conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2a", "res3a_branch2a",
                   "bn3a_branch2a", "res4a_branch2a", "bn4a_branch2a", "res5a_branch2a",
                   "bn5a_branch2a")
HEAD_LAYERS = ("fpn_c5p5", "rpn_conv_shared", "rpn_class_raw", "mrcnn_class_logits",
               "mrcnn_class_bn1", "mrcnn_mask_conv1", "mrcnn_keypoint_mask_conv1")


@keras.saving.register_keras_serializable(package="mrcnn_kp_tests")
class StandinTrainingModel(keras.Model):
    """Functional model whose outputs are the six losses; compute_loss sums them."""

    def __init__(self, inputs, outputs, loss_weights=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.loss_weights = dict(loss_weights or {n: 1.0 for n in LOSS_NAMES})
        self.loss_trackers = [keras.metrics.Mean(name=n) for n in LOSS_NAMES]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = 0.0
        for name, tracker in zip(LOSS_NAMES, self.loss_trackers):
            tracker.update_state(y_pred[name])
            total = total + self.loss_weights[name] * y_pred[name]
        return scale_for_replicas(total)


def scale_for_replicas(loss):
    """Under tf.distribute each replica's loss is divided by the replica count, because the
    gradients are summed across replicas (Keras does this for compiled losses; a model that
    overrides compute_loss must do it itself). JAX's DataParallel needs nothing."""
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return loss
    return loss / context.num_replicas_in_sync


def build_standin_training_model(config, seed=0):
    keras.utils.set_random_seed(seed)
    features = keras.Input((FEATURES,), name="features")
    poison = keras.Input((1,), name="poison")
    dense = keras.layers.Dense
    x = dense(16, name="conv1")(features)
    x = keras.layers.BatchNormalization(name="bn_conv1")(x)
    for stage in (2, 3, 4, 5):
        x = dense(16, activation="relu", name=f"res{stage}a_branch2a")(x)
        x = keras.layers.BatchNormalization(name=f"bn{stage}a_branch2a")(x)
    p5 = dense(16, name="fpn_c5p5")(x)
    rpn_in = keras.Input((16,))
    rpn_shared = dense(8, activation="relu", name="rpn_conv_shared")(rpn_in)
    rpn_model = keras.Model(rpn_in, dense(2, name="rpn_class_raw")(rpn_shared), name="rpn_model")
    rpn = rpn_model(p5)
    cls = keras.layers.BatchNormalization(name="mrcnn_class_bn1")(p5)
    cls = dense(2, name="mrcnn_class_logits")(cls)
    seq = keras.layers.Reshape((4, 4))(p5)
    mask = keras.layers.TimeDistributed(dense(2), name="mrcnn_mask_conv1")(seq)
    kp = dense(3, name="mrcnn_keypoint_mask_conv1")(p5)
    kp = kp + poison
    target = ops.ones_like
    outputs = {
        "rpn_class_loss": ops.mean(ops.square(rpn - 0.5)),
        "rpn_bbox_loss": ops.mean(ops.square(rpn + 0.25)) * 0.5,
        "mrcnn_class_loss": ops.mean(ops.square(cls - target(cls))),
        "mrcnn_bbox_loss": ops.mean(ops.abs(cls)) * 0.1,
        "mrcnn_mask_loss": ops.mean(ops.square(mask - 1.0)),
        "keypoint_loss": ops.mean(ops.square(kp - 2.0)),
    }
    outputs = {k: keras.layers.Identity(name=k)(v) for k, v in outputs.items()}
    return StandinTrainingModel([features, poison], outputs, loss_weights=config.LOSS_WEIGHTS,
                                name="standin_training_model")


class StandinBatches(keras.utils.PyDataset):
    """Deterministic batches: batch i of the source is a pure function of (seed, i).

    poison_batches: source indices whose poison is NaN (the keypoint loss becomes NaN).
    """

    def __init__(self, num_batches=5, batch_size=2, seed=0, poison_batches=()):
        super().__init__()
        self.count = num_batches
        self.batch_size = batch_size
        self.seed = seed
        self.poison_batches = set(poison_batches)

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        poison = np.zeros((self.batch_size, 1), np.float32)
        if index in self.poison_batches:
            poison[:] = np.nan
        return {"features": rng.normal(size=(self.batch_size, FEATURES)).astype(np.float32),
                "poison": poison}


class KillAt(keras.callbacks.Callback):
    """SIGKILL this process at (epoch, step), 1-based: nothing gets a chance to clean up."""

    def __init__(self, epoch, step):
        super().__init__()
        self.epoch, self.step, self._epoch = epoch, step, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if (self._epoch, batch + 1) == (self.epoch, self.step):
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    from mrcnn_kp.training.trainer import Trainer

    model_dir, epochs = argv[0], int(argv[1])
    config = standin_config()
    trainer = Trainer(build_standin_training_model(config), config, model_dir=model_dir)
    callbacks = []
    if "--kill-at" in argv:
        epoch, step = argv[argv.index("--kill-at") + 1].split(":")
        callbacks.append(KillAt(int(epoch), int(step)))
    if "--resume" in argv:
        trainer.load_checkpoint(trainer.find_last())
    trainer.train(StandinBatches(), None, 0.05, epochs, "all", custom_callbacks=callbacks,
                  verbose=0)
    print("EPOCH", trainer.epoch, "ITERATIONS", int(trainer.model.optimizer.iterations))


if __name__ == "__main__":
    main(sys.argv[1:])
