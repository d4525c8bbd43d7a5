"""The training optimizer: SGD with momentum, decoupled weight decay on kernels, global-norm
clipping, and a guard that skips any update whose gradients are not finite.

The guard is a `keras.optimizers.LossScaleOptimizer` whose scale stays at 1 (unless mixed_float16
asks for dynamic loss scaling): Keras already knows how to skip a step on non-finite gradients
on every backend, under tf.distribute and in JAX's stateless apply. We add a counter of skipped
updates (`skipped_steps`) so a callback can report them, and never shrink the scale in fp32.
A skipped step changes nothing: not the weights, not the momenta, not `iterations`.

The guard also clips to the global norm itself, because Keras' own `global_clipnorm` under
tf.distribute clips each replica's partial gradient before the all-reduce (so 2 replicas
effectively clip at twice the norm). Here the replicas' gradients are summed first, clipped,
and the inner SGD's own all-reduce then sees the clipped total.
"""
import keras
from keras import ops

from mrcnn_kp.config import OPTIMIZERS
from mrcnn_kp.runtime import mixed_precision_policy
from mrcnn_kp.training.schedules import build_schedule

# Optimizer names are part of the checkpoint format (optimizer variable paths start with them).
INNER_NAME = "sgd"
GUARD_NAME = "nonfinite_guard"
# Kernels get weight decay; biases, batch-norm gamma/beta and anything else do not (matterport).
DECAYED_VARIABLE_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


@keras.saving.register_keras_serializable(package="mrcnn_kp")
class NonFiniteGuard(keras.optimizers.LossScaleOptimizer):
    """Wraps an optimizer; an update with any NaN/inf gradient is skipped and counted.

    dynamic_loss_scale=False (fp32, bfloat16): the loss is never scaled.
    dynamic_loss_scale=True (mixed_float16): Keras' dynamic loss scaling, plus the counter.
    """

    def __init__(self, inner_optimizer, dynamic_loss_scale=False, clip_norm=None,
                 name=GUARD_NAME, **kwargs):
        if not dynamic_loss_scale:
            kwargs.update(initial_scale=1.0, dynamic_growth_steps=2 ** 30)
        super().__init__(inner_optimizer, name=name, **kwargs)
        self.dynamic_loss_scale = bool(dynamic_loss_scale)
        self.clip_norm = float(clip_norm) if clip_norm else None

    # ------------------------------------------------------------------ clipping
    def _clip(self, grads):
        """Scale all gradients by min(1, clip_norm / global norm); a NaN stays a NaN (and is
        skipped). With dynamic loss scaling the gradients are still scaled: so is the norm."""
        if not self.clip_norm:
            return grads
        present = [g for g in grads if g is not None]
        if not present:
            return grads
        norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in present))
        limit = self.clip_norm
        if self.dynamic_loss_scale:
            limit = limit * ops.cast(self.dynamic_scale, "float32")
        factor = ops.minimum(1.0, limit / ops.maximum(norm, 1e-12))
        factor = ops.where(ops.isfinite(norm), factor, norm)  # NaN/inf: keep it visible
        return [None if g is None else g * ops.cast(factor, g.dtype) for g in grads]

    def _sum_over_replicas(self, grads):
        """(summed gradients, replica count) in a tf.distribute replica context, else as is."""
        if keras.backend.backend() != "tensorflow":
            return grads, 1
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return grads, 1
        present = [g for g in grads if g is not None]
        summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
        return [None if g is None else next(summed) for g in grads], \
            context.num_replicas_in_sync

    def apply(self, grads, trainable_variables=None):
        if not self.built:  # clipping may read dynamic_scale
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        if self.clip_norm:
            grads, replicas = self._sum_over_replicas(list(grads))
            grads = self._clip(grads)
            if replicas > 1:  # the inner optimizer sums the replicas again
                grads = [None if g is None else g / replicas for g in grads]
        return super().apply(grads, trainable_variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        if self.clip_norm:
            mapping = list(zip(self.variables, optimizer_variables))
            with keras.StatelessScope(state_mapping=mapping):
                grads = self._clip(list(grads))
        return super().stateless_apply(optimizer_variables, grads, trainable_variables)

    def build(self, var_list):
        # LossScaleOptimizer.build does not track new variables automatically; add ours first.
        self.skipped_steps = self.add_variable(shape=(), dtype="int", initializer="zeros",
                                               aggregation="none", name="skipped_steps")
        super().build(var_list)

    def scale_loss(self, loss):
        if not self.dynamic_loss_scale:
            return loss
        return super().scale_loss(loss)

    # Keras calls one of these two when the gradients hold a NaN or an inf.
    def _stateful_handle_non_finite_grads(self):
        self.skipped_steps.assign_add(1)
        if self.dynamic_loss_scale:
            super()._stateful_handle_non_finite_grads()

    def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
        mapping = list(zip(self.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.skipped_steps.assign_add(1)
            if self.dynamic_loss_scale:
                self.step_counter.assign(0)
                self.dynamic_scale.assign(ops.multiply(self.dynamic_scale, 0.5))
        return trainable_variables, [scope.get_current_value(v) for v in self.variables]

    def get_config(self):
        config = super().get_config()
        config["dynamic_loss_scale"] = self.dynamic_loss_scale
        config["clip_norm"] = self.clip_norm
        if not self.dynamic_loss_scale:
            config.pop("initial_scale", None)
            config.pop("dynamic_growth_steps", None)
        return config


def decayed_variables(variables):
    """The variables that get weight decay: kernels only."""
    return [v for v in variables if v.name in DECAYED_VARIABLE_NAMES]




def build_optimizer(config, learning_rate, steps_per_epoch, total_epochs, trainable_variables):
    """The guarded optimizer for one training stage, built (its variables exist) for the given
    trainable variables, so a saved optimizer state can be restored into it right away.

    learning_rate: peak rate; warm-up, decay and the rest come from config (LEARNING_MOMENTUM,
    WEIGHT_DECAY, LR_SCHEDULE, LR_WARMUP_STEPS, LR_STEP_*, GRADIENT_CLIP_NORM, MIXED_PRECISION).
    SGD with momentum (matterport) unless config.OPTIMIZER is "adamw" (beta_1 =
    LEARNING_MOMENTUM, decoupled weight decay): it learns much faster from scratch on a CPU.
    """
    schedule = build_schedule(config, learning_rate, steps_per_epoch, total_epochs)
    kind = str(config.OPTIMIZER).lower()
    if kind == "sgd":
        sgd = keras.optimizers.SGD(learning_rate=schedule, momentum=config.LEARNING_MOMENTUM,
                                   weight_decay=config.WEIGHT_DECAY or None, name=INNER_NAME)
    elif kind == "adamw":
        sgd = keras.optimizers.AdamW(learning_rate=schedule, beta_1=config.LEARNING_MOMENTUM,
                                     weight_decay=config.WEIGHT_DECAY or 0.0, name="adamw")
    else:
        raise ValueError(f"OPTIMIZER must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    trainable_variables = list(trainable_variables)
    if config.WEIGHT_DECAY:
        decayed = {id(v) for v in decayed_variables(trainable_variables)}
        sgd.exclude_from_weight_decay(
            var_list=[v for v in trainable_variables if id(v) not in decayed])
    guard = NonFiniteGuard(sgd, clip_norm=config.GRADIENT_CLIP_NORM or None,
                           dynamic_loss_scale=mixed_precision_policy(config) == "mixed_float16")
    guard.build(trainable_variables)
    return guard
