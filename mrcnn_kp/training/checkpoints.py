"""Run directories, per-epoch checkpoints and the optimizer state that makes resume exact.

A run lives in `<model_dir>/<name><YYYYmmddTHHMM>/` (matterport's layout):

    config.json                                   the Config, written when the run starts
    mask_rcnn_<name>_0003.weights.h5              weights after epoch 3 (Keras 3 format)
    mask_rcnn_<name>_0003.state.npz               optimizer variables (momenta, iterations,
                                                  skipped steps) + epoch, written before the
                                                  weights: a weights file always has its state
    mask_rcnn_<name>_0003_interrupted.weights.h5  Ctrl-C / SIGTERM during epoch 4
    events.out.tfevents...                        TensorBoard (train/ and validation/)

The names and the search for the newest checkpoint are mrcnn_kp.run_directory's; this module
writes. Every file is written to a temporary name and renamed (mrcnn_kp.utils.atomic_path), so
a kill at any moment leaves the previous checkpoint intact. Epoch numbers count completed
epochs, so the weights of `..._0003` resume with `train(epochs=N)` running epochs 4..N.
"""
import json
import os

import numpy as np

from mrcnn_kp import run_directory
from mrcnn_kp.run_directory import CONFIG_FILE, WEIGHTS_SUFFIX
from mrcnn_kp.utils import atomic_path, get_logger

log = get_logger("mrcnn_kp.training")

STATE_SUFFIX = ".state.npz"


def run_dir_name(config, now=None):
    """The directory name of a new run of `config` (mrcnn_kp.run_directory's naming)."""
    return run_directory.run_dir_name(config.NAME, now)


def checkpoint_path(log_dir, config, epoch, interrupted=False):
    """`<log_dir>/mask_rcnn_<name>_<epoch:04d>[_interrupted].weights.h5`."""
    return os.path.join(log_dir, run_directory.checkpoint_name(config.NAME, epoch, interrupted))


def state_path(weights_path):
    """The optimizer-state file that belongs to a weights file."""
    weights_path = os.fspath(weights_path)
    for suffix in (WEIGHTS_SUFFIX, ".h5"):
        if weights_path.endswith(suffix):
            return weights_path[: -len(suffix)] + STATE_SUFFIX
    return weights_path + STATE_SUFFIX


class CheckpointWriteError(OSError):
    """A checkpoint (or the run's config.json) could not be written: disk full, read-only or
    missing directory. Whatever was written before is intact (every write is atomic)."""


def remove_unfinished_writes(run_dir):
    """Delete the temporary files a killed write left in a run directory (atomic_path's
    `.tmp-*-mask_rcnn_*`); returns their names. Called when a run resumes: nothing else
    writes into that directory then."""
    removed = []
    try:
        names = os.listdir(run_dir)
    except OSError:
        return removed
    for name in sorted(names):
        if name.startswith(".tmp-") and "mask_rcnn_" in name:
            try:
                os.remove(os.path.join(run_dir, name))
                removed.append(name)
            except OSError:
                pass
    if removed:
        log.info("removed %d unfinished checkpoint file(s) a killed run left in %s: %s",
                 len(removed), run_dir, ", ".join(removed))
    return removed


# ---------------------------------------------------------------------------- optimizer state
# Per-weight slots (SGD momenta, Adam moments) are keyed by the index of their weight in
# model.weights ("momentum/17"), which is the same in every build of the same config, unlike
# variable paths: auto-named sublayers (the layer inside a TimeDistributed) get other names when
# a process builds a second model. The other optimizer variables (iterations, skipped steps,
# loss scale) are keyed by their path.
# slot key prefix -> attribute of the Keras optimizer holding one variable per trainable weight
SLOT_LISTS = {"momentum": "momentums", "adam_m": "_momentums", "adam_v": "_velocities"}


def _momentum_slots(optimizer, model):
    """{key: slot variable} for the trainable weights of `model` the optimizer tracks."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    tracked = {id(v) for v in getattr(inner, "_trainable_variables", [])}
    slots = {}
    for prefix, attribute in SLOT_LISTS.items():
        variables = list(getattr(inner, attribute, None) or [])
        if not variables:
            continue
        for index, weight in enumerate(model.weights):
            if id(weight) in tracked:
                slots[f"{prefix}/{index}"] = variables[inner._get_variable_index(weight)]
    return slots


def _other_variables(optimizer, slots):
    slot_ids = {id(v) for v in slots.values()}
    return {v.path: v for v in optimizer.variables if id(v) not in slot_ids}


def optimizer_state(optimizer, model):
    """Every optimizer variable as numpy: "sgd/iteration", "nonfinite_guard/skipped_steps", ...
    and "momentum/<index in model.weights>"."""
    slots = _momentum_slots(optimizer, model)
    variables = dict(_other_variables(optimizer, slots), **slots)
    return {key: np.array(_to_numpy(v)) for key, v in variables.items()}


def restore_optimizer_state(optimizer, model, arrays):
    """Assign saved values to the (built) optimizer's variables with the same key and shape.

    Momenta of weights that were not trainable when the state was saved keep their fresh
    value (zero): that is what changes between stages. Returns (restored keys, fresh keys).
    """
    slots = _momentum_slots(optimizer, model)
    restored, fresh = [], []
    for key, variable in dict(_other_variables(optimizer, slots), **slots).items():
        value = arrays.get(key)
        if value is not None and tuple(value.shape) == tuple(variable.shape):
            variable.assign(value.astype(variable.dtype))
            restored.append(key)
        else:
            fresh.append(key)
    return restored, fresh


def _to_numpy(variable):
    """A variable's value as numpy; `.numpy()` first, which also reads tf.distribute's
    mirrored variables from inside fit (convert_to_numpy does not, for some of them)."""
    if hasattr(variable, "numpy"):
        return np.asarray(variable.numpy())
    from keras import ops

    return ops.convert_to_numpy(variable)


# ---------------------------------------------------------------------------- files
def write_config(log_dir, config):
    path = os.path.join(log_dir, CONFIG_FILE)
    config.to_json(path)
    return path


def save_state(path, meta, arrays):
    """One .npz: `meta` (JSON: epoch, iterations, layers...) and the optimizer arrays."""
    payload = {f"optimizer/{k}": v for k, v in arrays.items()}
    payload["meta"] = np.array(json.dumps(meta))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
    return path


def load_state(path):
    """(meta dict, optimizer arrays) from save_state's file."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {k[len("optimizer/"):]: data[k] for k in data.files if k.startswith("optimizer/")}
    return meta, arrays


def save_model_weights(model, path, config=None):
    """Atomic Keras 3 .weights.h5 through mrcnn_kp.weights (which also stores the config)."""
    try:
        from mrcnn_kp.weights import save_weights
    except ImportError:
        save_weights = None
    if save_weights is not None:
        save_weights(model, path, config=config)
        return path
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
    return path


def load_model_weights(model, path, by_name=True, exclude=()):
    """Load by layer name through mrcnn_kp.weights (legacy .h5 too); returns its report."""
    try:
        from mrcnn_kp.weights import load_weights
    except ImportError:
        load_weights = None
    if load_weights is not None:
        return load_weights(model, path, by_name=by_name, exclude=tuple(exclude))
    model.load_weights(path)
    return None


def all_finite(model):
    return all(np.all(np.isfinite(_to_numpy(w))) for w in model.weights
               if np.issubdtype(np.dtype(getattr(w, "dtype", "float32")), np.floating))


def save_checkpoint(model, optimizer, path, meta, config=None):
    """State first, then weights: the weights file is what run_directory.find_last sees, and
    it always has its state. Returns the weights path; raises CheckpointWriteError (one line: which
    file, why) when the disk refuses, leaving the earlier checkpoints as they were."""
    arrays = optimizer_state(optimizer, model) if optimizer is not None else {}
    with _write_errors(path):
        save_state(state_path(path), meta, arrays)
        try:
            save_model_weights(model, path, config=config)
        except BaseException:
            if not os.path.exists(path):  # a state without its weights would only mislead
                _remove_quietly(state_path(path))
            raise
    return path


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


class _write_errors:
    """OSError (ENOSPC, EROFS, EACCES, ...) while writing `path` -> CheckpointWriteError."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, OSError) or isinstance(exc, CheckpointWriteError):
            return False
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CheckpointWriteError(exc.errno, f"cannot write {self.path}: {reason}") from exc


def write_run_config(log_dir, config):
    """makedirs + config.json, CheckpointWriteError when the model directory refuses."""
    with _write_errors(os.path.join(log_dir, CONFIG_FILE)):
        os.makedirs(log_dir, exist_ok=True)
        if not os.path.exists(os.path.join(log_dir, CONFIG_FILE)):
            write_config(log_dir, config)
