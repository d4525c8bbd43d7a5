import os
import re
import subprocess
import sys

import pytest

from mrcnn_kp import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "mrcnn_kp.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("demo", "train", "evaluate", "predict", "convert", "export"):
        assert name in out


def test_unbuilt_subcommand_says_so(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "frobnicate", "a command nobody wrote")
    assert cli.main(["frobnicate"]) == cli.NOT_BUILT
    assert "mrcnn-kp frobnicate: not built yet" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == cli.NOT_BUILT
    assert "usage: mrcnn-kp" in capsys.readouterr().out


# ------------------------------------------------------------------ TensorFlow's C++ log lines
# what TensorFlow's C++ runtime prints at start-up: "I0000 00:00:... cpu_feature_guard.cc:..]",
# the absl preamble, oneDNN's and XLA's notices
TF_LINE = re.compile(r"^[IW]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|oneDNN custom operations|"
                     r"cpu_feature_guard|XLA service|StreamExecutor")


def run_cli(argv, environ):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mrcnn_kp.cli", *argv], capture_output=True,
                          text=True, env=env, timeout=300)


def test_commands_are_quiet_unless_verbose_and_refuse_a_malicious_pth(tmp_path):
    """The real `convert --from torchvision` (it imports TensorFlow and reads the file) on a
    legacy .pth whose first pickle runs `touch MARKER`: by default stderr is our one error
    line and nothing of TensorFlow's; with --verbose TensorFlow's lines are back."""
    from malicious_files import legacy_pth

    marker = tmp_path / "MARKER"
    path = legacy_pth(tmp_path / "legacy.pth", marker, "magic")
    out = tmp_path / "kp.weights.h5"
    argv = ["convert", "--from", "torchvision", str(path), str(out)]
    quiet = run_cli(argv, {})
    assert quiet.returncode == 1, quiet.stderr[-2000:]
    assert quiet.stderr.splitlines() == [line for line in quiet.stderr.splitlines()
                                         if line.startswith("mrcnn-kp convert: error: ")]
    assert len(quiet.stderr.splitlines()) == 1 and f"{path}: refusing to load" in quiet.stderr
    assert not marker.exists() and not out.exists()

    verbose = run_cli(argv + ["--verbose"], {})
    tf_lines = [line for line in verbose.stderr.splitlines() if TF_LINE.search(line)]
    assert verbose.returncode == 1 and "refusing to load" in verbose.stderr
    assert not marker.exists()
    if not tf_lines:
        pytest.skip("TensorFlow prints no start-up line on this machine even when asked")
    assert not [line for line in quiet.stderr.splitlines() if TF_LINE.search(line)]


def test_the_users_own_tf_log_level_and_verbose_are_respected():
    env = {}
    assert cli.quiet_tensorflow(["train"], env) == "2" and env == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert cli.quiet_tensorflow(["train"], env) == "0"
    env = {}
    assert cli.quiet_tensorflow(["train", "--verbose"], env) is None and env == {}
    parser = cli.build_parser()
    assert parser.parse_args(["--verbose", "train"]).verbose
    assert parser.parse_args(["train", "--verbose"]).verbose
    assert not parser.parse_args(["train"]).verbose


def test_the_start_up_filter_drops_tensorflows_info_and_warning_lines_only():
    dropped = ["WARNING: All log messages before absl::InitializeLog() is called are written to "
               "STDERR\n",
               "I0000 00:00:1796637016.715632   31653 port.cc:153] oneDNN custom operations are "
               "on.\n",
               "W1207 08:30:01.123456  4242 cpu_feature_guard.cc:210] This TensorFlow binary\n"]
    kept = ["E0000 00:00:1796636954.561637   26447 util.cc:131] oneDNN supports DT_INT32 only\n",
            "WARNING mrcnn_kp.training: loss is NaN\n",
            "mrcnn-kp convert: error: x.pth: no such file\n",
            "ImportError: libcudart.so.12: cannot open shared object file\n"]
    assert [bool(cli.TF_START_UP_LINE.match(line)) for line in dropped + kept] == \
        [True] * 3 + [False] * 4


def test_a_missing_tensorflow_names_the_extras_to_install():
    message = cli.missing_tensorflow_message(find_spec=lambda name: None)
    assert "TensorFlow is not installed" in message
    for extra in ("[cpu]", "[cuda]", "[jax-cpu]", "[jax-cuda]"):
        assert extra in message
    assert cli.missing_tensorflow_message(find_spec=lambda name: object()) is None


def test_the_cli_finds_the_canvas_the_command_will_use(tmp_path):
    """requested_canvas: the canvas main() hands to runtime.tune_cpu_threads."""
    from mrcnn_kp.cli import build_parser, requested_canvas
    from mrcnn_kp.config import Config

    parser = build_parser()
    config_json = tmp_path / "config.json"
    Config(IMAGE_MAX_DIM=448, IMAGE_MIN_DIM=448).to_json(config_json)
    assert requested_canvas(parser.parse_args(["demo"])) == 256
    assert requested_canvas(parser.parse_args(["train", "--config", "coco_cpu"])) == 512
    assert requested_canvas(parser.parse_args(
        ["train", "--config", "coco_cpu", "--set", "IMAGE_MIN_DIM=640",
         "IMAGE_MAX_DIM=640"])) == 640
    assert requested_canvas(parser.parse_args(
        ["train", "--config", "coco_cpu", "--set", "IMAGE_MAX_DIM"])) is None  # train says why
    assert requested_canvas(parser.parse_args(["train"])) == 1024  # the default preset
    assert requested_canvas(parser.parse_args(
        ["train", "--weights", "torchvision-coco"])) is None  # the named weights' config
    assert requested_canvas(parser.parse_args(
        ["evaluate", "--dataset", "a.json", "--config", str(config_json)])) == 448
    assert requested_canvas(parser.parse_args(["predict", "x.jpg"])) is None  # from the weights
