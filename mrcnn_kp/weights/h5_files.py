"""The file side of loading by name: Keras 3 and legacy Keras-2 weight files read into numpy.

- Keras 3 files (what `model.save_weights` writes): paths use class names
  (`layers/time_distributed_3/layer/vars/0`); the layer's own name is the `name` attribute of each
  `vars` group, which is what we match on. Inside a unit, arrays are keyed by their path.
- Legacy Keras-2 files: root attribute `layer_names` (maybe chunked `layer_names0`, ...), one group
  per layer with the attribute `weight_names` (`conv1/kernel:0`, ...), arrays in that order. A group
  whose weight names start with other layer names (a nested model) is split into one unit per inner
  layer. Inside a unit, arrays are kept in order, as Keras 2 matched them.
- `.keras` archives: only their model.weights.h5 is read; an archive whose config.json holds
  Python code (a Lambda layer, a pickled function) is refused, and its config is never
  deserialized.

Every failure to read (missing, not HDF5, truncated, damaged) raises WeightsFileError.
"""
import dataclasses
import io
import os
import zipfile

import numpy as np

from mrcnn_kp.weights.errors import WeightsFileError
from mrcnn_kp.weights.report import names_text


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


def to_str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return to_str(value.item())
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
    return [to_str(v) for v in np.atleast_1d(np.asarray(values, dtype=object))] \
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


class open_h5:
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
            units.append(_FileUnit(to_str(name) if name is not None else None, child_where,
                                   arrays))

    if "layers" in root:
        walk(root["layers"], "layers")
    return units


def read_weight_file(path):
    """Read a weights file into numpy: (format, [units]); WeightsFileError when unreadable."""
    path = os.fspath(path)
    with open_h5(path) as f:
        root = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs \
            else f
        if "layer_names" in root.attrs or "layer_names0" in root.attrs:
            return "legacy", _read_legacy(root, path)
        if "layers" in root or "vars" in root:
            return "keras3", _read_keras3(root, path)
        raise WeightsFileError(
            f"{path} is HDF5 but holds no Keras weights: no root attribute layer_names (Keras 2) "
            f"and no 'layers' group (Keras 3); its top-level entries are "
            f"{names_text(sorted(f.keys()))}")
