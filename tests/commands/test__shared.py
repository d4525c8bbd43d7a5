"""mrcnn_kp.commands._shared: the commands' model options, errors and results records; no
command reaches into another command's module for them."""
import argparse
import ast
from pathlib import Path

import pytest

from mrcnn_kp.commands import _shared
from mrcnn_kp.commands._shared import CommandError
from mrcnn_kp.inference import predictor as predictor_lib
from mrcnn_kp.inference.trained_model import WeightsNotFoundError

COMMANDS_DIR = Path(_shared.__file__).parent
# predict_video is the video half of `mrcnn-kp predict`: predict hands video inputs to it
ONE_COMMAND = {("predict", "predict_video")}


def model_args(*argv):
    parser = argparse.ArgumentParser()
    _shared.add_model_arguments(parser)
    return parser.parse_args(list(argv))


def test_model_options_and_their_defaults():
    args = model_args()
    assert (args.weights, args.config, args.logs) == ("last", None, "logs")
    assert (args.min_confidence, args.batch_size, args.sha256, args.allow_unverified) == \
        (None, None, None, False)


def test_errors_are_worded_for_the_weights_option(tmp_path):
    error = _shared.weights_error(WeightsNotFoundError("w.h5", "no such file"))
    assert isinstance(error, CommandError)
    assert str(error).startswith("--weights w.h5: no such file (expected 'last'")
    assert str(_shared.weights_error(WeightsNotFoundError("last", "no checkpoint"))) == \
        "--weights last: no checkpoint"
    with pytest.raises(CommandError, match="--weights last: no checkpoint in a run directory"):
        _shared.resolve_weights_arg("last", logs=tmp_path)
    with pytest.raises(CommandError, match=r"--config 'huge': not a preset \(default, tiny"):
        _shared.load_config_arg("huge")
    errors = _shared.model_errors()
    assert CommandError in errors and FileNotFoundError in errors


def test_load_model_applies_the_options(tmp_path, monkeypatch, capsys):
    built = []

    def load(config, weights=None):
        built.append((config, weights))
        return "predictor", None

    monkeypatch.setattr(predictor_lib, "load_predictor", load)
    run = tmp_path / "logs" / "tiny20240101T1200"
    run.mkdir(parents=True)
    (run / "mask_rcnn_tiny_0001.weights.h5").write_bytes(b"")
    from mrcnn_kp.config import TinyConfig

    TinyConfig().to_json(str(run / "config.json"))
    args = model_args("--logs", str(tmp_path / "logs"), "--min-confidence", "0.3",
                      "--batch-size", "2")
    predictor, config, weights = _shared.load_model(args)
    assert predictor == "predictor" and weights == str(run / "mask_rcnn_tiny_0001.weights.h5")
    assert (config.NAME, config.DETECTION_MIN_CONFIDENCE, config.IMAGES_PER_GPU) == \
        ("tiny", 0.3, 2)
    assert f"weights: {weights}" in capsys.readouterr().out
    _shared.load_model(model_args("--weights", "none", "--config", "tiny"))
    assert "random initial weights" in capsys.readouterr().err
    assert built[-1][1] is None and built[-1][0].NAME == "tiny"


def test_no_command_imports_another_commands_module():
    commands = {p.stem for p in COMMANDS_DIR.glob("*.py")} - {"__init__", "_shared"}
    found = []
    for path in sorted(COMMANDS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module == "mrcnn_kp.commands":
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.removeprefix("mrcnn_kp.commands.")] \
                    if node.module.startswith("mrcnn_kp.commands.") else []
            found += [f"{path.name}:{node.lineno} {name}" for name in names
                      if name in commands and name != path.stem
                      and (path.stem, name) not in ONE_COMMAND]
    assert found == []
