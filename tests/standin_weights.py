"""Stand-in models with matterport's layer names and wrappers, and legacy Keras-2 `.h5` files
written with h5py in matterport's layout (see docs/MATTERPORT.md), independently of the loader.

Small stand-in models carry matterport's layer names and wrappers (conv1/bn_conv1, a nested
functional `rpn_model`, TimeDistributed heads, a Dense class head); a training-like and an
inference-like graph share the names but not the layer order, the way the real models do.
Used by tests/weights/ and tests/test_maskrcnn.py.
"""
import h5py
import keras
import numpy as np
from keras import layers as KL

FEAT = 8  # channels of the stand-in backbone
ROI = 4  # side of the pooled ROI the stand-in heads see


# ----------------------------------------------------------------------------- stand-in models
def rpn_model(feat=FEAT, width=1):
    fm = keras.Input((None, None, feat), name="input_rpn_feature_map")
    shared = KL.Conv2D(16 * width, 3, padding="same", activation="relu", name="rpn_conv_shared")(fm)
    logits = KL.Conv2D(6, 1, name="rpn_class_raw")(shared)
    deltas = KL.Conv2D(12, 1, name="rpn_bbox_pred")(shared)
    return keras.Model(fm, [logits, deltas], name="rpn_model")


def standin(num_classes=2, training=False, seed=0, feat=FEAT, width=1):
    """A tiny model with matterport names. `training=True` builds another graph (extra inputs,
    another layer order, so other Keras 3 save paths) over layers with the same names.
    `feat` and `width` change every layer's shape (another architecture, same names)."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((16, 16, 3), name="input_image")
    x = KL.ZeroPadding2D(3, name="zero_padding2d")(image)
    x = KL.Conv2D(feat, 7, strides=2, name="conv1")(x)
    x = KL.BatchNormalization(name="bn_conv1")(x)
    c2 = KL.Activation("relu")(x)  # [batch, 8, 8, FEAT]
    rois = KL.Reshape((1, 8, 8, feat))(c2)  # one "ROI": the whole map
    inputs = [image]
    if training:
        # Training graph: an extra input, a weightless extra wrapper (which shifts Keras 3's
        # class-name save paths), the heads first and the RPN after them.
        gt = keras.Input((1,), name="input_gt_class_ids")
        inputs.append(gt)
        rois = KL.TimeDistributed(KL.Activation("linear"), name="train_only_identity")(rois)
    head = [
        KL.TimeDistributed(KL.Conv2D(32 * width, 8), name="mrcnn_class_conv1"),
        KL.TimeDistributed(KL.BatchNormalization(), name="mrcnn_class_bn1"),
    ]
    mask = [
        KL.TimeDistributed(KL.Conv2D(8 * width, 3, padding="same"), name="mrcnn_mask_conv1"),
        KL.TimeDistributed(KL.Conv2DTranspose(8 * width, 2, strides=2),
                           name="mrcnn_mask_deconv"),
        KL.TimeDistributed(KL.Conv2D(num_classes, 1, activation="sigmoid"), name="mrcnn_mask"),
    ]
    logits_layer = KL.TimeDistributed(KL.Dense(num_classes), name="mrcnn_class_logits")
    bbox_layer = KL.TimeDistributed(KL.Dense(4 * num_classes), name="mrcnn_bbox_fc")
    rpn = rpn_model(feat, width)

    def heads():
        h = rois
        for layer in head:
            h = layer(h)
        h = KL.Reshape((1, 32 * width))(h)  # [batch, 1, 32 * width]
        return logits_layer(h), bbox_layer(h)

    def masks():
        m = rois
        for layer in mask:
            m = layer(m)
        return m  # [batch, 1, 16, 16, num_classes]

    if training:
        class_logits, bbox = heads()
        mask_out = masks()
        rpn_logits, rpn_deltas = rpn(c2)
        outputs = {"mrcnn_class_logits": class_logits, "mrcnn_bbox": bbox, "mrcnn_mask": mask_out,
                   "rpn_class_logits": rpn_logits, "rpn_bbox": rpn_deltas}
    else:
        rpn_logits, rpn_deltas = rpn(c2)
        class_logits, bbox = heads()
        outputs = {"rpn_class_logits": rpn_logits, "rpn_bbox": rpn_deltas,
                   "mrcnn_class_logits": class_logits, "mrcnn_bbox": bbox, "mrcnn_mask": masks()}
    model = keras.Model(inputs, outputs, name="standin_training" if training else "standin")
    randomize_batchnorm(model, seed)
    return model


def randomize_batchnorm(model, seed):
    """Give every BN non-trivial statistics, so a load that misses one shows in the outputs."""
    rng = np.random.default_rng(seed + 100)
    for layer in _all_layers(model):
        if isinstance(layer, KL.BatchNormalization):
            for v in layer.weights:
                v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        if hasattr(layer, "layer"):
            yield layer.layer


def named_weights(model):
    """{layer name: [arrays]} over the named layers (nested models flattened)."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(named_weights(layer))
        elif layer.weights:
            out[layer.name] = [np.array(w) for w in layer.weights]
    return out


def predict(model, seed=1):
    rng = np.random.default_rng(seed)
    feed = {"input_image": rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")}
    if any(t.name == "input_gt_class_ids" for t in model.inputs):
        feed["input_gt_class_ids"] = np.ones((2, 1), "float32")
    out = model(feed, training=False)
    return {k: np.array(v) for k, v in out.items()}


def assert_same_weights(a, b, names=None):
    wa, wb = named_weights(a), named_weights(b)
    for name in names or wa:
        assert len(wa[name]) == len(wb[name]), name
        for x, y in zip(wa[name], wb[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


# ----------------------------------------------------------------------------- legacy writer
def write_matterport_h5(model, path, strings="bytes", chunk=None, whole_model=False):
    """Write `model` the way Keras 2 / tf_keras wrote matterport's weights (h5py only).

    strings: "bytes" (fixed-length, old Keras 2.0/2.1) or "str" (variable length, tf_keras).
    chunk: split layer_names into layer_names0, layer_names1, ... of this many entries.
    whole_model: put the weights under a `model_weights` group, as model.save() did.
    """
    def encode(names):
        if strings == "bytes":
            width = max(map(len, names), default=1)
            return np.array([n.encode() for n in names], dtype=f"S{width}")
        return np.array(names, dtype=h5py.string_dtype())

    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if whole_model else f
        if whole_model:
            f.attrs["model_config"] = '{"class_name": "Model"}'
        names = [layer.name for layer in model.layers]
        if chunk:
            for i in range(0, len(names), chunk):
                root.attrs[f"layer_names{i // chunk}"] = encode(names[i:i + chunk])
        else:
            root.attrs["layer_names"] = encode(names)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.1.6"
        if strings == "str":
            root.create_group("top_level_model_weights").attrs["weight_names"] = encode([])
        for layer in sorted(model.layers, key=lambda l: l.name):  # groups in sorted-name order
            group = root.create_group(layer.name)
            weight_names, arrays = [], []
            if isinstance(layer, keras.Model):  # rpn_model: inner layers' names
                for inner in layer.layers:
                    for w in inner.weights:
                        weight_names.append(f"{inner.name}/{w.name}:0")
                        arrays.append(np.array(w))
            else:  # TimeDistributed weights are named after the wrapper
                for w in layer.weights:
                    weight_names.append(f"{layer.name}/{w.name}:0")
                    arrays.append(np.array(w))
            group.attrs["weight_names"] = encode(weight_names)
            for name, array in zip(weight_names, arrays):
                group.create_dataset(name, data=array.astype("float32"))
    return path


def assert_same_weights_dict(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


MATTERPORT_RPN = ("rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred")


def write_matterport_layout_from_names(model, path):
    """A legacy .h5 as matterport's Keras-2 model wrote it for a model with our layer names:
    the three RPN layers inside one nested `rpn_model` group, every other layer in its own
    group (weightless ones too), weight names `<layer>/<variable>:0`, bytes strings."""
    groups = {}  # group name -> [(weight name, array)]
    order = []
    for layer in model.layers:
        group = "rpn_model" if layer.name in MATTERPORT_RPN else layer.name
        if group not in groups:
            groups[group] = []
            order.append(group)
        groups[group].extend((f"{layer.name}/{w.name}:0", np.array(w)) for w in layer.weights)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([g.encode() for g in order])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.6"
        for group in sorted(order):
            g = f.create_group(group)
            g.attrs["weight_names"] = np.array([n.encode() for n, _ in groups[group]],
                                               dtype="S64")
            for name, array in groups[group]:
                g.create_dataset(name, data=array)
    return path
