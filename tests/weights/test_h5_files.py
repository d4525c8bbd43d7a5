"""mrcnn_kp.weights.h5_files: damaged, foreign and code-carrying files raise a one-line error and
leave the model as it was."""
import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from standin_weights import assert_same_weights_dict, named_weights, standin, write_matterport_h5

from mrcnn_kp import weights as W


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
