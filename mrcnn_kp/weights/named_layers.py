"""The model side of loading by name: a model's named layers with weights, as load_weights sees
them.

The unit of matching is a *named layer*: a layer held in the `layers` list of a Functional or
Sequential model. Nested models are flattened (matterport's `rpn_model` contributes
`rpn_conv_shared`, `rpn_class_raw`, `rpn_bbox_pred`); a wrapper such as TimeDistributed is one unit
named after the wrapper, holding its inner layer's weights. Each unit also knows the path
`model.save_weights` gives it (`layers/time_distributed_2`), the fallback key for Keras 3 files
that record no layer names.
"""
import dataclasses
import re

from mrcnn_kp.weights.errors import WeightsError


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
