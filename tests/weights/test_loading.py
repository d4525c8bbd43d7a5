"""mrcnn_kp.weights.loading: Keras 3 checkpoints and legacy Keras-2 .h5 files loaded by layer name.

The models are the stand-ins of tests/standin_weights.py (matterport's names and wrappers); legacy
files are written with h5py in matterport's layout, independently of the loader.
"""
import os

import h5py
import keras
import numpy as np
import pytest

from standin_weights import (assert_same_weights, assert_same_weights_dict, named_weights,
                             predict, standin, write_matterport_h5,
                             write_matterport_layout_from_names)

from mrcnn_kp import weights as W
from mrcnn_kp.config import TinyConfig
from mrcnn_kp.weights.named_layers import model_units


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
    train_paths = {u.name: u.keras_path for u in model_units(train)}
    infer_paths = {u.name: u.keras_path for u in model_units(infer)}
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


# ----------------------------------------------------------------------------- the real model
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
    units = model_units(target)
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
