"""mrcnn_kp.ops.backend.tune_cpu_threads and the allocator default set on import."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf_only

PROBE = """
import os, sys
import mrcnn_kp
from mrcnn_kp.ops.backend import tune_cpu_threads
print(os.environ["TF_CPU_ALLOCATOR_USE_BFC"])
canvas = int(sys.argv[2]) if len(sys.argv) > 2 else None
print(tune_cpu_threads(sys.argv[1], canvas=canvas))
import tensorflow as tf
print(tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
tf.constant(1.0) + 1.0  # the runtime starts: now it is too late to change
print(tune_cpu_threads("3,3"))
"""


def probe(setting, *extra, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    environment.update(KERAS_BACKEND="tensorflow", **env)
    done = subprocess.run([sys.executable, "-c", PROBE, setting, *extra], capture_output=True,
                          text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("\n")[:4]


def test_explicit_threads_are_applied_before_the_runtime_starts_and_refused_after():
    assert probe("1,2") == ["true", "(1, 2)", "1 2", "None"]


def test_default_leaves_tensorflow_alone_and_the_allocator_opt_out_is_kept():
    assert probe("default", TF_CPU_ALLOCATOR_USE_BFC="false") == ["false", "None", "0 0", "None"]


def test_a_malformed_setting_is_a_clear_error():
    from mrcnn_kp.ops.backend import tune_cpu_threads

    with pytest.raises(ValueError, match="MRCNN_KP_TF_THREADS must be 'auto', 'default' or "
                                         "'intra,inter', got 'two'"):
        tune_cpu_threads("two")


@pytest.mark.skipif((os.cpu_count() or 1) > 4, reason="auto tunes machines of <= 4 cores only")
def test_auto_tunes_small_models_only():
    cores = os.cpu_count() or 1
    assert probe("auto", "384")[1:3] == [f"(1, {cores})", f"1 {cores}"]  # a CPU preset's canvas
    assert probe("auto", "1024")[1:3] == ["None", "0 0"]  # ResNet-50 at 1024: TF's default
    assert probe("auto")[1:3] == ["None", "0 0"]  # canvas unknown: TF's default


def test_the_cli_finds_the_canvas_the_command_will_use(tmp_path):
    from mrcnn_kp.cli import build_parser, requested_canvas

    parser = build_parser()
    config_json = tmp_path / "config.json"
    from mrcnn_kp.config import Config

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
