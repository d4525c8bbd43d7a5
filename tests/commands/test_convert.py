"""`mrcnn-kp convert` (mrcnn_kp/commands/convert.py) on weight files that carry code: refused
with a one-line error, nothing written, and the code never runs (a marker file stays absent).
The real command in a subprocess on such a file: tests/test_cli.py."""
import sys

import pytest

from malicious_files import legacy_pth, zip_pth
from mrcnn_kp import cli


@pytest.mark.parametrize("torch_installed", [True, False], ids=["torch", "no-torch"])
@pytest.mark.parametrize("fmt, position", [("zip", None), ("legacy", "magic"),
                                           ("legacy", "protocol"), ("legacy", "sys_info"),
                                           ("legacy", "state_dict")])
def test_convert_refuses_code_in_every_pickle_of_both_formats(tmp_path, monkeypatch, capsys,
                                                              torch_installed, fmt, position):
    if torch_installed:
        pytest.importorskip("torch", reason="torch comes with the test extra")
    else:
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    marker = tmp_path / "MARKER"
    path = zip_pth(tmp_path / "evil.pth", marker) if fmt == "zip" else \
        legacy_pth(tmp_path / "evil.pth", marker, position)
    out = tmp_path / "kp.weights.h5"
    assert cli.main(["convert", "--from", "torchvision", str(path), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"mrcnn-kp convert: error: {path}: refusing to load" in err, err
    assert "system" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists() and not out.exists()


def test_convert_refuses_a_malicious_pth_as_efficientnet_weights(tmp_path):
    from mrcnn_kp.weights.lite0_imagenet import convert_efficientnet_lite0
    from mrcnn_kp.weights.pth_reader import UnsafePickleError

    marker = tmp_path / "MARKER"
    for path in (legacy_pth(tmp_path / "a.pth", marker, "magic"), zip_pth(tmp_path / "b.pth",
                                                                          marker)):
        with pytest.raises(UnsafePickleError, match="refusing to load"):
            convert_efficientnet_lite0(str(path), None)  # the file is read before the model
    assert not marker.exists()


def test_convert_refuses_a_keras_file_with_a_lambda_layer(tmp_path, capsys):
    from malicious_files import lambda_keras

    marker = tmp_path / "MARKER"
    path = lambda_keras(tmp_path / "evil.keras", marker)
    out = tmp_path / "x.weights.h5"
    assert cli.main(["convert", str(path), str(out), "--config", "tiny"]) == 1
    err = capsys.readouterr().err
    assert f"mrcnn-kp convert: error: {path} holds Python code (Lambda at " in err, err
    assert not marker.exists() and not out.exists()
