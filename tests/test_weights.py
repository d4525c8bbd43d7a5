"""mrcnn_kp.weights: Keras 3 checkpoints and legacy Keras-2 .h5 files loaded by layer name.

Small stand-in models carry matterport's layer names and wrappers (conv1/bn_conv1, a nested
functional `rpn_model`, TimeDistributed heads, a Dense class head); a training-like and an
inference-like graph share the names but not the layer order, the way the real models do.
Legacy files are written here with h5py in matterport's layout (see docs/MATTERPORT.md),
independently of the loader.
"""
import os

import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from mrcnn_kp import weights as W
from mrcnn_kp.config import TinyConfig

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


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def source():
    """The model files are written from (never modified by a test)."""
    return standin(seed=0)


@pytest.fixture(scope="module")
def legacy_file(source, tmp_path_factory):
    return write_matterport_h5(source, tmp_path_factory.mktemp("legacy") / "standin.h5")


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    """An 81-class model's file, as mask_rcnn_coco.h5 is."""
    return write_matterport_h5(standin(num_classes=81, seed=0),
                               tmp_path_factory.mktemp("coco") / "mask_rcnn_coco.h5")


# ----------------------------------------------------------------------------- legacy files
@pytest.mark.parametrize("layout", ["bytes", "str_chunked_whole_model"])
def test_legacy_matterport_h5_loads_by_name_and_reproduces_outputs(tmp_path, source, layout):
    path = tmp_path / "mask_rcnn_standin.h5"
    if layout == "bytes":
        write_matterport_h5(source, path, strings="bytes")
    else:
        write_matterport_h5(source, path, strings="str", chunk=5, whole_model=True)
    with h5py.File(path) as f:  # the layout really has the nested group and wrapper names
        root = f["model_weights"] if layout != "bytes" else f
        assert "rpn_model/rpn_conv_shared/kernel:0" in root
        assert "mrcnn_class_conv1/mrcnn_class_conv1/kernel:0" in root

    target = standin(seed=7)
    before = predict(target)
    report = W.load_weights(target, path)

    assert len(named_weights(source)) == 12  # conv1, bn_conv1, 3 in rpn_model, 7 heads
    assert report.file_format == "legacy"
    assert sorted(report.loaded) == sorted(named_weights(source))
    assert report.num_arrays == sum(len(v) for v in named_weights(source).values())
    assert report.mismatched == [] and report.absent_from_file == [] and report.excluded == []
    assert_same_weights(source, target)
    want, got = predict(source), predict(target)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert not np.allclose(before["mrcnn_class_logits"], want["mrcnn_class_logits"])


def test_legacy_81_class_heads_are_skipped_and_reported(coco_file, source):
    path = coco_file
    target = standin(num_classes=2, seed=3)
    untouched = named_weights(target)

    report = W.load_weights(target, path)

    mismatched = {name: (f, m) for name, f, m in report.mismatched}
    assert sorted(mismatched) == ["mrcnn_bbox_fc", "mrcnn_class_logits", "mrcnn_mask"]
    assert mismatched["mrcnn_class_logits"] == ([(32, 81), (81,)], [(32, 2), (2,)])
    assert mismatched["mrcnn_bbox_fc"] == ([(32, 324), (324,)], [(32, 8), (8,)])
    assert len(report.loaded) == 9
    after = named_weights(target)
    for name in mismatched:
        for x, y in zip(after[name], untouched[name]):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(after["conv1"][0], named_weights(source)["conv1"][0])
    assert "skipped 3 with other shapes: mrcnn_bbox_fc: file [(32, 324), (324,)] vs model " \
           "[(32, 8), (8,)]; mrcnn_class_logits: file [(32, 81), (81,)] vs model [(32, 2), (2,)]" \
        in report.summary()


def test_mismatch_without_skip_raises_and_leaves_weights(coco_file):
    path = coco_file
    target = standin(num_classes=2, seed=3)
    before = named_weights(target)
    with pytest.raises(W.WeightsMismatchError,
                       match=r"3 layers differ in shape from the model, first mrcnn_bbox_fc: "
                             r"file \[\(32, 324\), \(324,\)\] vs model \[\(32, 8\), \(8,\)\]"):
        W.load_weights(target, path, skip_mismatch=False)
    assert_same_weights_dict(before, named_weights(target))


def assert_same_weights_dict(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("exclude, expected", [
    (["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"],
     ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"]),
    ([r"mrcnn_mask.*", r"bn_.*"],
     ["bn_conv1", "mrcnn_mask_conv1", "mrcnn_mask_deconv", "mrcnn_mask"]),
    ("rpn_model", ["rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"]),
])
def test_exclude_by_name_regex_and_nested_model(source, legacy_file, exclude, expected):
    path = legacy_file
    target = standin(seed=5)
    before = named_weights(target)

    report = W.load_weights(target, path, exclude=exclude)

    assert sorted(report.excluded) == sorted(expected)
    assert report.missing_in_model == [] and report.absent_from_file == []
    after, src = named_weights(target), named_weights(source)
    for name in after:
        want = before[name] if name in expected else src[name]
        for x, y in zip(after[name], want):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_exclude_rejects_a_broken_regex(legacy_file):
    with pytest.raises(ValueError, match=r"exclude entry 'mrcnn_\(' is neither a layer name nor"):
        W.load_weights(standin(), legacy_file, exclude=["mrcnn_("])


def test_by_position_loads_the_same_architecture(legacy_file, source):
    target = standin(seed=6)
    report = W.load_weights(target, legacy_file, by_name=False)
    assert len(report.loaded) == 12
    assert_same_weights(source, target)

def test_by_position_reports_mismatches_too(coco_file):
    report = W.load_weights(standin(seed=6), coco_file, by_name=False)
    assert len(report.loaded) == 9
    assert sorted(name for name, _, _ in report.mismatched) == [
        "mrcnn_bbox_fc", "mrcnn_class_logits", "mrcnn_mask"]


# ----------------------------------------------------------------------------- Keras 3 files
def test_keras3_checkpoint_from_training_graph_loads_into_inference_graph(tmp_path):
    train = standin(training=True, seed=0)
    infer = standin(training=False, seed=9)
    # The two graphs save the same layer under different Keras paths: only names can match them.
    train_paths = {u.name: u.keras_path for u in W.model_units(train)}
    infer_paths = {u.name: u.keras_path for u in W.model_units(infer)}
    assert train_paths.keys() == infer_paths.keys()
    assert train_paths["mrcnn_class_conv1"] != infer_paths["mrcnn_class_conv1"]

    path = W.save_weights(train, tmp_path / "train.weights.h5")
    report = W.load_weights(infer, path)

    assert report.file_format == "keras3"
    assert sorted(report.loaded) == sorted(named_weights(train))
    assert report.missing_in_model == [] and report.mismatched == []
    assert_same_weights(train, infer)
    want, got = predict(train), predict(infer)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)

    # ... and back: inference checkpoint into a fresh training graph.
    back = standin(training=True, seed=11)
    W.load_weights(back, W.save_weights(infer, tmp_path / "infer.weights.h5"))
    assert_same_weights(infer, back)


def test_model_units_match_the_paths_keras_writes(tmp_path):
    """model_units mirrors Keras' own save walk; this catches a Keras upgrade that changes it."""
    model = standin(training=True)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    written = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: written.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
    ours = [f"{u.keras_path}/{sv.rel_path + '/' if sv.rel_path else ''}vars/{k}"
            for u in W.model_units(model) for sv in u.saveables for k in sv.keys]
    assert sorted(ours) == sorted(written)
    assert len(written) == 28


def test_keras3_file_without_layer_names_falls_back_to_paths(tmp_path, source):
    path = tmp_path / "old.weights.h5"
    source.save_weights(path)
    with h5py.File(path, "a") as f:  # what Keras 3 releases before the `name` metadata wrote
        f.visititems(lambda name, obj: obj.attrs.__delitem__("name") if "name" in obj.attrs
                     else None)
    target = standin(seed=4)
    report = W.load_weights(target, path)
    assert len(report.loaded) == 12
    assert_same_weights(source, target)


def test_keras_archive_loads(tmp_path, source):
    source.save(tmp_path / "m.keras")
    target = standin(training=True, seed=2)
    assert len(W.load_weights(target, tmp_path / "m.keras").loaded) == 12
    assert_same_weights(source, target)


def test_keras_archive_with_a_lambda_layer_is_refused_and_runs_nothing(tmp_path):
    from malicious_files import lambda_keras

    marker = tmp_path / "MARKER"
    path = lambda_keras(tmp_path / "evil.keras", marker, layer_name="conv1")
    target = standin(seed=2)
    before = named_weights(target)["conv1"][0].copy()
    for read in (lambda: W.load_weights(target, path), lambda: W.read_weight_file(path),
                 lambda: W.read_config(path)):
        with pytest.raises(W.WeightsFileError, match=r"holds Python code \(Lambda at .*evil\); "
                                                     r"refusing it"):
            read()
    assert not marker.exists()
    np.testing.assert_array_equal(named_weights(target)["conv1"][0], before)
    # the file is live: Keras refuses it in safe mode, and runs it without
    with pytest.raises(ValueError, match="Lambda"):
        keras.saving.load_model(path)
    assert not marker.exists()
    keras.saving.load_model(path, safe_mode=False)
    assert marker.exists()


def test_save_weights_is_atomic_and_keeps_config(tmp_path, monkeypatch):
    model = standin(seed=1)
    path = tmp_path / "ckpt.weights.h5"
    W.save_weights(model, path, config=TinyConfig())
    assert W.read_config(path).to_dict() == TinyConfig().to_dict()
    size = os.path.getsize(path)

    def crash(filepath, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        W.save_weights(model, path)
    assert os.path.getsize(path) == size
    assert sorted(os.listdir(tmp_path)) == ["ckpt.weights.h5"]
    with pytest.raises(ValueError, match=r"must end in \.weights\.h5, got '.*ckpt\.h5'"):
        W.save_weights(model, tmp_path / "ckpt.h5")


# ----------------------------------------------------------------------------- bad files
def other_architecture():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="x")
    out = KL.Dense(3, name="dense_a")(KL.Dense(5, name="dense_b")(inp))
    return keras.Model(inp, out, name="other")




@pytest.mark.parametrize("case, message", [
    ("not_hdf5", r"is not an HDF5 file \(it starts with b'<html>\\n<'\); expected a Keras 3"),
    ("truncated", r"is truncated or damaged \(\d+ bytes\), HDF5 says"),
    ("other_names", r"no layer of model 'standin' loaded from .* \(keras3 format\); the model was "
                    r"left unchanged\. File layers: dense_b, dense_a\. Model layers: conv1, "
                    r"bn_conv1, mrcnn_class_conv1, .* \(12 in all\)\.$"),
    ("other_shapes", r"no layer of model 'standin' loaded .*12 layers match by name but differ in "
                     r"shape \(another architecture or class count\?\), e\.g\. conv1: file "
                     r"\[\(7, 7, 3, 4\), \(4,\)\] vs model \[\(7, 7, 3, 8\), \(8,\)\]"),
    ("all_excluded", r"no layer of model 'standin' loaded .* Excluded: conv1, bn_conv1"),
    ("empty_hdf5", r"is HDF5 but holds no Keras weights"),
    ("missing", r"weights file not found: .*nothing\.h5"),
])
def test_bad_files_raise_clearly_and_leave_weights_unchanged(tmp_path, source, legacy_file,
                                                            case, message):
    model = source  # shared: a test that changed its weights would fail here or in the next
    path = tmp_path / "bad.h5"
    exclude = ()
    if case == "not_hdf5":
        path.write_bytes(b"<html>\n<body>404</body></html>\n")
    elif case == "truncated":
        good = W.save_weights(source, tmp_path / "good.weights.h5")
        data = open(good, "rb").read()
        path.write_bytes(data[: len(data) // 2])
    elif case == "other_names":
        path = W.save_weights(other_architecture(), tmp_path / "other.weights.h5")
    elif case == "other_shapes":
        path = write_matterport_h5(standin(feat=4, width=2), path)
    elif case == "all_excluded":
        path = legacy_file
        exclude = [".*"]
    elif case == "empty_hdf5":
        with h5py.File(path, "w") as f:
            f.create_group("something_else")
    elif case == "missing":
        path = tmp_path / "nothing.h5"
    before = named_weights(model)
    with pytest.raises(W.WeightsError, match=message):
        W.load_weights(model, path, exclude=exclude)
    assert_same_weights_dict(before, named_weights(model))


def test_legacy_group_listed_but_missing_is_reported_as_damage(tmp_path, source):
    path = write_matterport_h5(source, tmp_path / "w.h5")
    with h5py.File(path, "a") as f:
        del f["bn_conv1/bn_conv1/moving_variance:0"]
    model = standin(seed=2)
    before = named_weights(model)
    with pytest.raises(W.WeightsFileError,
                       match=r"weight bn_conv1/bn_conv1/moving_variance:0 is listed but missing"):
        W.load_weights(model, path)
    assert_same_weights_dict(before, named_weights(model))


# ----------------------------------------------------------------------------- the real model
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


@pytest.fixture(scope="module")
def real_models():
    """TinyConfig: (config, build_models() pair sharing one set of layers, a separately built
    inference model with other initial weights)."""
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model, build_models

    config = TinyConfig()
    keras.utils.set_random_seed(1)
    pair = build_models(config)
    keras.utils.set_random_seed(2)
    return config, pair, build_inference_model(config)


def scramble(model, seed):
    """New random values in every weight, so a load has something to undo."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, 0.05, w.shape).astype(w.dtype))


def test_real_model_checkpoint_moves_between_training_and_inference(tmp_path, real_models):
    config, pair, target = real_models
    scramble(target, 0)
    units = W.model_units(target)
    assert {"rpn_conv_shared", "mrcnn_class_logits", "mrcnn_mask"} <= {u.name for u in units}
    path = W.save_weights(pair.training, tmp_path / "train.weights.h5", config=config)
    report = W.load_weights(target, path)
    assert len(report.loaded) == len(units) > 100
    assert report.absent_from_file == [] and report.missing_in_model == []
    assert report.mismatched == []
    assert_same_weights(pair.training, target)
    assert W.read_config(path).to_dict() == config.to_dict()


def test_real_model_loads_a_matterport_layout_file(tmp_path, real_models):
    config, pair, target = real_models
    scramble(target, 1)
    source = pair.inference
    path = write_matterport_layout_from_names(source, tmp_path / "matterport_layout.h5")
    with h5py.File(path) as f:
        assert [n.decode() for n in f["rpn_model"].attrs["weight_names"]] == [
            "rpn_conv_shared/kernel:0", "rpn_conv_shared/bias:0", "rpn_class_raw/kernel:0",
            "rpn_class_raw/bias:0", "rpn_bbox_pred/kernel:0", "rpn_bbox_pred/bias:0"]
    report = W.load_weights(target, path, exclude=[r"mrcnn_keypoint_.*"])
    assert report.file_format == "legacy" and report.mismatched == []
    assert {"rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"} <= set(report.loaded)
    assert report.excluded and all(n.startswith("mrcnn_keypoint_") for n in report.excluded)
    assert report.missing_in_model == []
    want, got = named_weights(source), named_weights(target)
    for name in want:
        for x, y in zip(want[name], got[name]):
            if name in report.loaded:
                np.testing.assert_array_equal(x, y, err_msg=name)
            else:
                assert not np.array_equal(x, y), name
    # Then the outputs: every layer loaded -> the same detections.
    W.load_weights(target, path)
    rng = np.random.default_rng(0)
    batch = {"input_image": rng.uniform(0, 255, (2,) + config.IMAGE_SHAPE).astype("float32"),
             "input_image_meta": np.tile(np.array(
                 [0, 128, 128, 3, 128, 128, 3, 0, 0, 128, 128, 1] + [0] * config.NUM_CLASSES,
                 "float32"), (2, 1))}
    a, b = source.predict_on_batch(batch), target.predict_on_batch(batch)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


# ----------------------------------------------------------------------------- mrcnn-kp convert
def test_convert_command_writes_a_keras3_file_with_the_config(tmp_path, monkeypatch, capsys,
                                                             coco_file, source):
    from mrcnn_kp import cli
    from mrcnn_kp.commands import convert

    monkeypatch.setattr(convert, "_build", lambda config: standin(num_classes=2, seed=8))
    out = tmp_path / "converted.weights.h5"
    status = cli.main(["convert", str(coco_file), str(out), "--config", "tiny",
                       "--exclude", "mrcnn_mask.*"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "loaded 7 layers" in printed and "excluded 3: " in printed
    assert "skipped 2 with other shapes: mrcnn_bbox_fc" in printed
    assert W.read_config(out).NAME == "tiny"
    target = standin(seed=9)
    report = W.load_weights(target, out)
    assert len(report.loaded) == 12
    np.testing.assert_array_equal(named_weights(target)["conv1"][0],
                                  named_weights(source)["conv1"][0])

    assert cli.main(["convert", str(coco_file), str(tmp_path / "x.weights.h5"), "--config",
                     "tiny", "--strict"]) == 1
    assert "3 layers differ in shape from the model" in capsys.readouterr().err
    assert not (tmp_path / "x.weights.h5").exists()
    assert cli.main(["convert", str(coco_file), str(tmp_path / "x.h5")]) == 1
    assert "must end in .weights.h5" in capsys.readouterr().err
    assert cli.main(["convert", "--from", "torchvision", "kp.pth", str(out)]) == 1
    assert "kp.pth: no such file" in capsys.readouterr().err
