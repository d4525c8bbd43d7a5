"""Save and load weights by layer name: Keras 3 `.weights.h5` files and legacy Keras-2 `.h5` files.

    save_weights(model, "run/epoch_003.weights.h5")            # Keras 3 format, written atomically
    report = load_weights(model, "mask_rcnn_coco.h5", exclude=[
        "mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"])
    print(report)                               # loaded / excluded / absent / mismatched

Weights are matched to the model by **layer name**, never by position, so a checkpoint written from
the training model loads into the inference model (a different graph with the same layer names)
and the other way round, and matterport / Mask_RCNN_Humanpose `.h5` files load into our models.

The unit of matching is a *named layer*: a layer held in the `layers` list of a Functional or
Sequential model. Nested models are flattened (matterport's `rpn_model` contributes
`rpn_conv_shared`, `rpn_class_raw`, `rpn_bbox_pred`); a wrapper such as TimeDistributed is one unit
named after the wrapper, holding its inner layer's weights.

- Keras 3 files (what `model.save_weights` writes): paths use class names
  (`layers/time_distributed_3/layer/vars/0`); the layer's own name is the `name` attribute of each
  `vars` group, which is what we match on. Inside a unit, arrays are matched by their path.
- Legacy Keras-2 files: root attribute `layer_names` (maybe chunked `layer_names0`, ...), one group
  per layer with the attribute `weight_names` (`conv1/kernel:0`, ...), arrays in that order. A group
  whose weight names start with other layer names (a nested model) is split into one unit per inner
  layer. Inside a unit, arrays are matched by order, as Keras 2 did.

Loading reads the whole file into numpy first, checks every shape, and only then assigns, so a
bad file (not HDF5, truncated, another architecture) raises and leaves the model untouched.
"""
import dataclasses
import io
import os
import re
import zipfile

import numpy as np

from mrcnn_kp.utils import atomic_path, get_logger

log = get_logger("mrcnn_kp.weights")

# How many names an error message or a log line lists before "...".
_NAMES_SHOWN = 8


class WeightsError(ValueError):
    """A weights file that cannot be loaded into this model."""


class WeightsFileError(WeightsError):
    """The file is not a weights file we can read (not HDF5, truncated, unknown layout)."""


class WeightsMismatchError(WeightsError):
    """The file is readable but does not fit the model (no layer matched, or shapes differ)."""


# ------------------------------------------------------------------------------- the report
@dataclasses.dataclass
class LoadReport:
    """What `load_weights` did, layer by layer (names are layer names)."""

    path: str
    file_format: str  # "keras3" or "legacy"
    loaded: list = dataclasses.field(default_factory=list)
    excluded: list = dataclasses.field(default_factory=list)
    absent_from_file: list = dataclasses.field(default_factory=list)  # model layers the file lacks
    missing_in_model: list = dataclasses.field(default_factory=list)  # file layers the model lacks
    # (layer name, [file shapes], [model shapes]) for layers present on both sides that differ
    mismatched: list = dataclasses.field(default_factory=list)
    num_arrays: int = 0
    num_values: int = 0

    def summary(self):
        lines = [f"loaded {len(self.loaded)} layers ({self.num_arrays} arrays, "
                 f"{self.num_values:,} values) from {self.path} [{self.file_format}]"]
        if self.excluded:
            lines.append(f"excluded {len(self.excluded)}: {_names(self.excluded)}")
        if self.mismatched:
            shown = "; ".join(f"{name}: file {_shapes(f)} vs model {_shapes(m)}"
                              for name, f, m in self.mismatched[:_NAMES_SHOWN])
            more = " ..." if len(self.mismatched) > _NAMES_SHOWN else ""
            lines.append(f"skipped {len(self.mismatched)} with other shapes: {shown}{more}")
        if self.absent_from_file:
            lines.append(f"absent from the file {len(self.absent_from_file)} (left as they were): "
                         f"{_names(self.absent_from_file)}")
        if self.missing_in_model:
            lines.append(f"in the file but not in the model {len(self.missing_in_model)}: "
                         f"{_names(self.missing_in_model)}")
        return "\n".join(lines)

    __str__ = summary


def _names(names):
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _NAMES_SHOWN else "")


def _shapes(shapes):
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"


# ------------------------------------------------------------------------------- saving
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

    with _open_h5(path) as f:
        text = f.attrs.get("mrcnn_kp_config")
    if text is None:
        return None
    return Config.from_json(_to_str(text))


# ------------------------------------------------------------------------------- the model side
@dataclasses.dataclass
class _Saveable:
    """One object with its own variables (a layer, or the inner layer of a wrapper)."""

    obj: object
    rel_path: str  # path inside its unit, "" for the unit's layer itself ("layer" for a wrapper's)
    keys: list  # the store keys save_own_variables writes ("0", "1", ...)
    shapes: list
    dtypes: list


@dataclasses.dataclass
class _ModelUnit:
    name: str
    keras_path: str  # where model.save_weights would put it, e.g. "layers/time_distributed_2"
    parents: tuple  # names of the nested models holding it, outermost first
    saveables: list

    @property
    def shapes(self):
        return [s for sv in self.saveables for s in sv.shapes]


class _Recorder(dict):
    """A store for save_own_variables that keeps what the layer hands over."""


def _is_model(layer):
    import keras

    return isinstance(layer, keras.Model) and hasattr(layer, "layers")


def _snake(name):
    try:
        from keras.src.utils import naming

        return naming.to_snake_case(name)
    except ImportError:  # pragma: no cover - keras moved it
        name = re.sub(r"\W+", "", name)
        name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
        return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _children(obj):
    """(attribute name, child) pairs in the order Keras' saver visits them."""
    if getattr(obj, "_layers", None) == []:
        return []  # a leaf layer: skip Keras' attribute walk, which is slow (dir() + getattr)
    try:
        from keras.src.saving.saving_lib import _walk_saveable

        return list(_walk_saveable(obj))
    except ImportError:  # pragma: no cover - keras moved it; wrappers keep `.layer`
        inner = getattr(obj, "layer", None)
        return [("layer", inner)] if inner is not None else []


def _collect_saveables(obj, rel_path, visited, out):
    """Every object with variables under `obj`, with its path relative to the unit."""
    import keras

    if id(obj) in visited:
        return
    visited.add(id(obj))
    if hasattr(obj, "save_own_variables"):
        store = _Recorder()
        obj.save_own_variables(store)
        if store:
            keys = list(store)
            values = [store[k] for k in keys]
            out.append(_Saveable(obj, rel_path, keys,
                                 [tuple(int(d) for d in v.shape) for v in values],
                                 [str(getattr(v, "dtype", "float32")) for v in values]))
    for attr, child in _children(obj):
        child_path = f"{rel_path}/{attr}" if rel_path else attr
        if isinstance(child, keras.layers.Layer):
            _collect_saveables(child, child_path, visited, out)
        elif isinstance(child, (list, tuple, dict)):
            used = {}
            items = child.values() if isinstance(child, dict) else child
            for item in items:
                if isinstance(item, keras.layers.Layer):
                    name = _unique(_snake(type(item).__name__), used)
                    _collect_saveables(item, f"{child_path}/{name}", visited, out)


def _unique(name, used):
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def model_units(model):
    """The model's named layers with weights, nested models flattened, in model order.

    Returns a list of _ModelUnit. Exposed for tests and tools that want to see what
    `load_weights` matches on.
    """
    if not model.built:
        raise WeightsError(f"model {model.name!r} is not built yet; build it before loading "
                           "weights")
    units = []
    visited = set()

    def walk(container_model, prefix, parents):
        used = {}
        for layer in container_model.layers:
            path = f"{prefix}layers/{_unique(_snake(type(layer).__name__), used)}"
            if _is_model(layer):
                walk(layer, path + "/", parents + (layer.name,))
                continue
            saveables = []
            _collect_saveables(layer, "", visited, saveables)
            if saveables:
                units.append(_ModelUnit(layer.name, path, parents, saveables))

    if _is_model(model):
        walk(model, "", ())
    else:  # a single layer: one unit
        saveables = []
        _collect_saveables(model, "", visited, saveables)
        units.append(_ModelUnit(model.name, "", (), saveables))
    return units


# ------------------------------------------------------------------------------- the file side
@dataclasses.dataclass
class _FileUnit:
    name: str  # layer name, or None for a Keras 3 file too old to record names
    keras_path: str  # Keras 3 path of the unit, "" for legacy files
    # keras3: {rel_path: {key: array}}; legacy: {"": {"0": array, "1": ...}} in weight_names order
    arrays: dict
    group: str = None  # legacy: the group a nested model's inner layer came from ("rpn_model")

    @property
    def flat(self):
        return [a for store in self.arrays.values() for a in store.values()]

    @property
    def shapes(self):
        return [tuple(a.shape) for a in self.flat]


def _to_str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _to_str(value.item())
    return str(value)


def _read_name_list(attrs, name):
    """A Keras-2 string-list attribute, plain or chunked (`name0`, `name1`, ...), bytes or str."""
    if name in attrs:
        values = attrs[name]
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in attrs:
            values.extend(attrs[f"{name}{chunk}"])
            chunk += 1
    return [_to_str(v) for v in np.atleast_1d(np.asarray(values, dtype=object))] \
        if len(values) else []


# class_name values of a .keras config.json that carry Python code (Keras' safe_mode refuses them)
_CODE_CLASSES = ("Lambda", "__lambda__", "function", "__function__", "__python_function__")


def _code_in_config(node, where="model"):
    """(where, class_name) of the first object in a .keras config that holds Python code."""
    if isinstance(node, dict):
        name = node.get("class_name")
        if name in _CODE_CLASSES:
            inner = node.get("config") if isinstance(node.get("config"), dict) else {}
            return f"{where}/{inner.get('name', name)}", name
        label = (node.get("config") or {}).get("name") if isinstance(node.get("config"), dict) \
            else None
        for value in node.values():
            found = _code_in_config(value, f"{where}/{label}" if label else where)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _code_in_config(value, where)
            if found:
                return found
    return None


def _refuse_code_in_archive(archive, path):
    """A `.keras` archive whose config.json holds a Lambda layer or another pickled function is
    refused. Only model.weights.h5 is ever read (the config is never deserialized, so nothing
    in it runs), but a file that carries code is not a weights file we accept."""
    import json

    if "config.json" not in archive.namelist():
        return
    try:
        config = json.loads(archive.read("config.json").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsFileError(f"{path}: its config.json is not valid JSON ({exc})") from None
    found = _code_in_config(config)
    if found:
        where, kind = found
        raise WeightsFileError(
            f"{path} holds Python code ({kind} at {where}); refusing it: no code is run from a "
            f"weights file. Save the weights alone (model.save_weights('x.weights.h5')) and "
            f"load those")


class _open_h5:
    """h5py.File for a path, a `.keras` zip archive (its model.weights.h5), with clear errors."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = None
        self._zip = None

    def __enter__(self):
        import h5py

        if not os.path.isfile(self.path):
            raise WeightsFileError(f"weights file not found: {self.path}")
        if zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            if "model.weights.h5" not in self._zip.namelist():
                self._zip.close()
                raise WeightsFileError(f"{self.path} is a zip archive without model.weights.h5; "
                                       "expected a .weights.h5, a legacy .h5 or a .keras file")
            try:
                _refuse_code_in_archive(self._zip, self.path)
            except WeightsFileError:
                self._zip.close()
                raise
            source = io.BytesIO(self._zip.read("model.weights.h5"))
        else:
            with open(self.path, "rb") as f:
                head = f.read(8)
            if head != b"\x89HDF\r\n\x1a\n" and not h5py.is_hdf5(self.path):
                raise WeightsFileError(
                    f"{self.path} is not an HDF5 file (it starts with {head!r}); expected a "
                    "Keras 3 .weights.h5 or a legacy Keras-2 .h5 weights file")
            source = self.path
        try:
            self._file = h5py.File(source, "r")
        except OSError as exc:
            size = os.path.getsize(self.path)
            raise WeightsFileError(f"{self.path} is truncated or damaged ({size} bytes), HDF5 "
                                   f"says: {exc}") from None
        return self._file

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()
        if self._zip is not None:
            self._zip.close()
        return False


def _read_array(dataset, where, path):
    try:
        return np.asarray(dataset[()])
    except Exception as exc:  # h5py raises OSError / KeyError / RuntimeError on damage
        raise WeightsFileError(f"{path}: cannot read {where} ({exc}); the file is truncated or "
                               "damaged") from None


def _read_legacy(root, path):
    """Units of a Keras-2 file: one per layer group, nested models split by weight-name prefix."""
    units = []
    for layer_name in _read_name_list(root.attrs, "layer_names"):
        if layer_name not in root:
            raise WeightsFileError(f"{path}: layer {layer_name!r} is listed in layer_names but has "
                                   "no group; the file is truncated or damaged")
        group = root[layer_name]
        weight_names = _read_name_list(group.attrs, "weight_names")
        if not weight_names:
            continue
        arrays = []
        for weight_name in weight_names:
            if weight_name not in group:
                raise WeightsFileError(f"{path}: weight {layer_name}/{weight_name} is listed but "
                                       "missing; the file is truncated or damaged")
            arrays.append((weight_name, _read_array(group[weight_name],
                                                    f"{layer_name}/{weight_name}", path)))
        prefixes = [name.split("/")[0] if "/" in name else layer_name for name, _ in arrays]
        if all(p == layer_name for p in prefixes):
            units.append(_FileUnit(layer_name, "", {"": _numbered(a for _, a in arrays)}))
            continue
        # A nested model (matterport's rpn_model): one unit per inner layer, in file order.
        by_prefix = {}
        for prefix, (_, array) in zip(prefixes, arrays):
            by_prefix.setdefault(prefix, []).append(array)
        for prefix, inner in by_prefix.items():
            units.append(_FileUnit(prefix, "", {"": _numbered(inner)}, group=layer_name))
    return units


def _numbered(arrays):
    return {str(i): a for i, a in enumerate(arrays)}


def _read_keras3(root, path):
    """Units of a Keras 3 file, found under the `layers` groups (nested models flattened)."""
    units = []

    def vars_of(group, where):
        if "vars" not in group:
            return {}
        v = group["vars"]
        keys = sorted((k for k in v.keys()), key=lambda k: (not k.isdigit(), int(k) if
                                                             k.isdigit() else 0, k))
        return {k: _read_array(v[k], f"{where}/vars/{k}", path) for k in keys}

    def gather(group, rel, where, out):
        own = vars_of(group, where)
        if own:
            out[rel] = own
        for child in sorted(group.keys()):
            if child != "vars" and hasattr(group[child], "keys"):
                gather(group[child], f"{rel}/{child}" if rel else child, f"{where}/{child}", out)

    def walk(layers_group, where):
        for child in layers_group.keys():
            group = layers_group[child]
            child_where = f"{where}/{child}"
            if "layers" in group and hasattr(group["layers"], "keys"):
                walk(group["layers"], child_where + "/layers")
                continue
            arrays = {}
            gather(group, "", child_where, arrays)
            if not arrays:
                continue
            name = group["vars"].attrs.get("name") if "vars" in group else None
            units.append(_FileUnit(_to_str(name) if name is not None else None, child_where,
                                   arrays))

    if "layers" in root:
        walk(root["layers"], "layers")
    return units


def read_weight_file(path):
    """Read a weights file into numpy: (format, [units]); WeightsFileError when unreadable."""
    path = os.fspath(path)
    with _open_h5(path) as f:
        root = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs \
            else f
        if "layer_names" in root.attrs or "layer_names0" in root.attrs:
            return "legacy", _read_legacy(root, path)
        if "layers" in root or "vars" in root:
            return "keras3", _read_keras3(root, path)
        raise WeightsFileError(
            f"{path} is HDF5 but holds no Keras weights: no root attribute layer_names (Keras 2) "
            f"and no 'layers' group (Keras 3); its top-level entries are "
            f"{_names(sorted(f.keys()))}")


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
            f"{name}: file {_shapes(f_shapes)} vs model {_shapes(m_shapes)}; pass "
            "skip_mismatch=True to load the rest (the model was left unchanged)")
    if not report.loaded:
        file_names = [fu.name or fu.keras_path for fu in file_units]
        msg = (f"no layer of model {model.name!r} loaded from {path} ({file_format} format); the "
               f"model was left unchanged. File layers: {_names(file_names) or 'none'}. Model "
               f"layers: {_names([mu.name for mu in units]) or 'none'}.")
        if report.mismatched:
            name, f_shapes, m_shapes = report.mismatched[0]
            msg += (f" {len(report.mismatched)} layers match by name but differ in shape (another "
                    f"architecture or class count?), e.g. {name}: file {_shapes(f_shapes)} vs "
                    f"model {_shapes(m_shapes)}.")
        if report.excluded:
            msg += f" Excluded: {_names(report.excluded)}."
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
