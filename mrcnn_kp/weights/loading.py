"""Save and load weights by layer name: Keras 3 `.weights.h5` files and legacy Keras-2 `.h5` files.

    save_weights(model, "run/epoch_003.weights.h5")            # Keras 3 format, written atomically
    report = load_weights(model, "mask_rcnn_coco.h5", exclude=[
        "mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"])
    print(report)                               # loaded / excluded / absent / mismatched

Weights are matched to the model by **layer name**, never by position, so a checkpoint written from
the training model loads into the inference model (a different graph with the same layer names)
and the other way round, and matterport / Mask_RCNN_Humanpose `.h5` files load into our models.

The model side is in `mrcnn_kp.weights.named_layers`, the file side in `mrcnn_kp.weights.h5_files`.

Loading reads the whole file into numpy first, checks every shape, and only then assigns, so a
bad file (not HDF5, truncated, another architecture) raises and leaves the model untouched.
"""
import os
import re

import numpy as np

from mrcnn_kp.utils import atomic_path, get_logger
from mrcnn_kp.weights.errors import WeightsMismatchError
from mrcnn_kp.weights.h5_files import open_h5, read_weight_file, to_str
from mrcnn_kp.weights.named_layers import model_units
from mrcnn_kp.weights.report import LoadReport, names_text, shapes_text

log = get_logger("mrcnn_kp.weights")


def save_weights(model, path, config=None):
    """Write the model's weights as a Keras 3 `.weights.h5` file, atomically.

    A crash while writing leaves any previous file at `path` intact. With `config` (a
    mrcnn_kp Config), its JSON is stored as the root attribute `mrcnn_kp_config`, which
    `read_config` gives back (commands use it to rebuild the right model).
    """
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Keras 3 weight files must end in .weights.h5, got {path!r}")
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
        if config is not None:
            import h5py

            with h5py.File(tmp, "a") as f:
                f.attrs["mrcnn_kp_config"] = config.to_json()
    return path


def read_config(path):
    """The Config stored by `save_weights(..., config=)`, or None when the file has none."""
    from mrcnn_kp.config import Config

    with open_h5(path) as f:
        text = f.attrs.get("mrcnn_kp_config")
    if text is None:
        return None
    return Config.from_json(to_str(text))


# ------------------------------------------------------------------------------- matching
def _compile_exclude(exclude):
    if isinstance(exclude, str):
        exclude = [exclude]
    patterns = []
    for item in exclude or ():
        try:
            patterns.append(re.compile(item))
        except re.error as exc:
            raise ValueError(f"exclude entry {item!r} is neither a layer name nor a valid regular "
                             f"expression: {exc}") from None
    return lambda name: name is not None and any(
        p.pattern == name or p.fullmatch(name) for p in patterns)


def _plan_unit(model_unit, file_unit, file_format):
    """[(saveable, {key: array})] when every shape fits, else None."""
    if file_format == "keras3" and file_unit.name is not None and set(file_unit.arrays) == {
            sv.rel_path for sv in model_unit.saveables}:
        plan = []
        for sv in model_unit.saveables:
            store = file_unit.arrays[sv.rel_path]
            if list(store) != sv.keys:
                return None
            if [tuple(a.shape) for a in store.values()] != sv.shapes:
                return None
            plan.append((sv, store))
        return plan
    # Legacy (or a Keras 3 unit laid out differently): match the arrays in order.
    flat = file_unit.flat
    if [tuple(a.shape) for a in flat] != model_unit.shapes:
        return None
    plan, start = [], 0
    for sv in model_unit.saveables:
        plan.append((sv, dict(zip(sv.keys, flat[start:start + len(sv.keys)]))))
        start += len(sv.keys)
    return plan


def load_weights(model, path, by_name=True, exclude=(), skip_mismatch=True):
    """Load a Keras 3 `.weights.h5` or a legacy Keras-2 `.h5` into `model` by layer name.

    Args:
        model: a built Keras model (the training or the inference model, or any model whose
            layers carry the matterport names).
        path: the weights file (`.weights.h5`, legacy `.h5`, or a `.keras` archive).
        by_name: True matches layers by name (the normal case). False matches by position:
            legacy layers in file order against the model's layers with weights in model
            order, Keras 3 units by their saved path; only for the very same architecture.
        exclude: layer names or regular expressions (full match) to leave untouched, e.g.
            matterport's `["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]`
            or `r"mrcnn_.*"`. Naming a nested model (`rpn_model`) excludes its layers.
        skip_mismatch: True skips (and reports) layers whose shapes differ, e.g. an 81-class
            head into a 2-class model; False raises WeightsMismatchError instead.

    Returns:
        LoadReport, also logged. Raises WeightsFileError for a file that cannot be read and
        WeightsMismatchError when no layer loads; in both cases the model is left unchanged.
    """
    path = os.fspath(path)
    is_excluded = _compile_exclude(exclude)
    units = model_units(model)
    file_format, file_units = read_weight_file(path)
    report = LoadReport(path=path, file_format=file_format)

    def excluded(unit):
        return is_excluded(unit.name) or any(is_excluded(p) for p in unit.parents)

    # Pair each model unit with at most one file unit.
    pairs, used_files = [], set()
    if by_name:
        by_file_name = {}
        for i, fu in enumerate(file_units):
            if fu.name is not None:
                by_file_name.setdefault(fu.name, i)
        # Keras 3 files from before layer names were recorded: fall back to the saved path.
        by_file_path = {fu.keras_path: i for i, fu in enumerate(file_units)
                        if fu.name is None and fu.keras_path}
        for mu in units:
            i = by_file_name.get(mu.name)
            if i is None:
                i = by_file_path.get(mu.keras_path)
            pairs.append((mu, i))
    else:
        if file_format == "keras3":
            by_file_path = {fu.keras_path: i for i, fu in enumerate(file_units)}
            pairs = [(mu, by_file_path.get(mu.keras_path)) for mu in units]
        else:
            pairs = [(mu, i if i < len(file_units) else None) for i, mu in enumerate(units)]

    plan = []
    for mu, i in pairs:
        if i is not None:
            used_files.add(i)
        if excluded(mu):
            report.excluded.append(mu.name)
            continue
        if i is None:
            report.absent_from_file.append(mu.name)
            continue
        fu = file_units[i]
        unit_plan = _plan_unit(mu, fu, file_format)
        if unit_plan is None:
            report.mismatched.append((mu.name, fu.shapes, mu.shapes))
            continue
        plan.extend(unit_plan)
        report.loaded.append(mu.name)
        report.num_arrays += len(fu.flat)
        report.num_values += int(sum(a.size for a in fu.flat))
    for i, fu in enumerate(file_units):
        if i not in used_files and not is_excluded(fu.name) \
                and not is_excluded(fu.group):
            report.missing_in_model.append(fu.name if fu.name is not None else fu.keras_path)

    if report.mismatched and not skip_mismatch:
        name, f_shapes, m_shapes = report.mismatched[0]
        raise WeightsMismatchError(
            f"{path}: {len(report.mismatched)} layers differ in shape from the model, first "
            f"{name}: file {shapes_text(f_shapes)} vs model {shapes_text(m_shapes)}; pass "
            "skip_mismatch=True to load the rest (the model was left unchanged)")
    if not report.loaded:
        file_names = [fu.name or fu.keras_path for fu in file_units]
        msg = (f"no layer of model {model.name!r} loaded from {path} ({file_format} format); the "
               f"model was left unchanged. File layers: {names_text(file_names) or 'none'}. Model "
               f"layers: {names_text([mu.name for mu in units]) or 'none'}.")
        if report.mismatched:
            name, f_shapes, m_shapes = report.mismatched[0]
            msg += (f" {len(report.mismatched)} layers match by name but differ in shape (another "
                    f"architecture or class count?), e.g. {name}: file {shapes_text(f_shapes)} vs "
                    f"model {shapes_text(m_shapes)}.")
        if report.excluded:
            msg += f" Excluded: {names_text(report.excluded)}."
        raise WeightsMismatchError(msg)

    # Everything is read and checked: assign through each layer's own loader.
    for sv, store in plan:
        sv.obj.load_own_variables({k: np.asarray(a, dtype=_np_dtype(d))
                                   for (k, a), d in zip(store.items(), sv.dtypes)})
    log.info(report.summary())
    return report


def _np_dtype(dtype):
    try:
        return np.dtype(dtype)
    except TypeError:  # e.g. "bfloat16" without ml_dtypes registered
        return np.float32
