"""The `mrcnn-kp` command: one subcommand per job, each in mrcnn_kp/commands/<name>.py.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
It imports TensorFlow/Keras inside `run`, so `mrcnn-kp --help` stays instant. A subcommand
whose module does not exist yet answers that it is not built and exits with status 2.

TensorFlow's C++ start-up lines (oneDNN, absl, XLA, cpu_feature_guard) are off for every
command unless the user set TF_CPP_MIN_LOG_LEVEL or passed --verbose: TF_CPP_MIN_LOG_LEVEL=2
is set before TensorFlow is imported (INFO and WARNING lines of its runtime hidden), and the
import itself runs with the process's stderr captured, because some of those lines (oneDNN's
notice, absl's preamble) are printed while TensorFlow's libraries load, before it reads the
variable; whatever else the import prints is passed on. Our own warnings (the mrcnn_kp
loggers) and TensorFlow's ERROR lines still show.
"""
import argparse
import importlib
import importlib.util
import os
import re
import sys
import tempfile

# TF_CPP_MIN_LOG_LEVEL: 0 everything, 1 no INFO, 2 no INFO or WARNING, 3 errors hidden too
QUIET_TF_LOG_LEVEL = "2"
# an INFO or WARNING line of TensorFlow's C++ logging ("I0000 00:00:1796637016.715632  31653
# port.cc:153] ...": month-day, hours:minutes:seconds, thread, file:line)
# and absl's preamble to the first one
TF_START_UP_LINE = re.compile(r"^[IW]\d{4} \d\d:\d\d:\d\d[\d.]*\s+\d+ \S+:\d+\] "
                              r"|^WARNING: All log messages before absl::InitializeLog\(\)")

# name -> one-line help; the order is the order `--help` lists them.
SUBCOMMANDS = {
    "demo": "generate the synthetic people set, train a CPU-sized model, evaluate and draw",
    "train": "train on a COCO-format keypoint dataset in stages (heads -> 4+ -> all)",
    "evaluate": "COCO keypoint / bbox / segm AP of a model on a COCO-format dataset",
    "predict": "detect people and joints in image files or folders, write PNGs and json",
    "convert": "convert weights (legacy Keras-2 .h5, torchvision .pth) to Keras 3 .weights.h5",
    "export": "export a model for deployment (saved_model, tflite, onnx)",
}

NOT_BUILT = 2


def _load_command(name):
    try:
        return importlib.import_module(f"mrcnn_kp.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"mrcnn_kp.commands.{name}":
            return None
        raise


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mrcnn-kp",
        description="Mask R-CNN with a 17-joint keypoint head, for Keras 3.",
    )
    from mrcnn_kp import __version__

    parser.add_argument("--version", action="version", version=f"mrcnn-kp {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own start-up and C++ log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        module = _load_command(name)
        p = sub.add_parser(name, help=help_text if module else f"{help_text} (not built yet)",
                           description=help_text)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show TensorFlow's own start-up and C++ log lines")
        if module is not None:
            module.add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def quiet_tensorflow(argv, environ=os.environ):
    """Hide TensorFlow's C++ INFO/WARNING lines unless --verbose or the user's own
    TF_CPP_MIN_LOG_LEVEL says otherwise; must run before TensorFlow is imported. Returns the
    level in force (None: TensorFlow's default)."""
    if quiet_requested(argv, environ):
        environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_TF_LOG_LEVEL
    return environ.get("TF_CPP_MIN_LOG_LEVEL")


def quiet_requested(argv, environ=os.environ):
    """Neither --verbose nor the user's own TF_CPP_MIN_LOG_LEVEL: TensorFlow's lines are ours
    to hide."""
    return "--verbose" not in argv and "TF_CPP_MIN_LOG_LEVEL" not in environ


def import_tensorflow_quietly():
    """Import TensorFlow (the Keras backend, unless KERAS_BACKEND names another) with file
    descriptor 2 sent to a temporary file, then pass on every line of it that is not one of
    TensorFlow's INFO/WARNING lines: an import error or a Python warning still shows."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" \
            or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            pass  # the command's own import of it raises again, with stderr restored
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
        kept = [line for line in text.splitlines(keepends=True)
                if not TF_START_UP_LINE.match(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet = quiet_requested(argv)
    quiet_tensorflow(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return NOT_BUILT
    module = _load_command(args.command)
    if module is None:
        print(f"mrcnn-kp {args.command}: not built yet in this version of mrcnn_kp.",
              file=sys.stderr)
        return NOT_BUILT
    missing = missing_tensorflow_message()
    if missing:
        print(missing, file=sys.stderr)
        return NOT_BUILT
    if quiet:
        import_tensorflow_quietly()
    from mrcnn_kp.runtime import tune_cpu_threads

    tune_cpu_threads(canvas=requested_canvas(args))
    return int(module.run(args) or 0)


def missing_tensorflow_message(find_spec=importlib.util.find_spec):
    """What to install when no TensorFlow distribution is present (None when one is): the
    base install names none, so that each extra can name exactly one (setup.py)."""
    if find_spec("tensorflow") is not None:
        return None
    return ("mrcnn-kp: TensorFlow is not installed. Install mrcnn_kp with one of its extras: "
            "[cpu] (TensorFlow on CPU), [cuda] (TensorFlow on NVIDIA GPUs), [jax-cpu] or "
            "[jax-cuda] (KERAS_BACKEND=jax), e.g. pip install -e \".[cpu]\"")


def requested_canvas(args):
    """IMAGE_MAX_DIM of the config a command will use, when the command line says it (the demo's
    preset, a --config preset or json, train's default preset, with train's --set overrides);
    None when it is left to the weights' saved config, or when --config or --set is unusable
    (the command itself reports that)."""
    from mrcnn_kp.commands._shared import CommandError, load_config_arg
    from mrcnn_kp.config import CpuDemoConfig

    if args.command == "demo":
        return CpuDemoConfig.IMAGE_MAX_DIM
    name = getattr(args, "config", None)
    if not name and args.command == "train":
        from mrcnn_kp.inference.trained_model import is_named

        if is_named(getattr(args, "weights", None)):
            return None  # the named weights' own config, known once they are fetched
        name = "default"  # what train builds without --config
    if not name:
        return None
    try:
        config = load_config_arg(name)
        if getattr(args, "overrides", None):
            from mrcnn_kp.commands.train import parse_overrides

            config = config.copy(**parse_overrides(args.overrides))
        return config.IMAGE_MAX_DIM
    except (CommandError, OSError, ValueError, SystemExit):  # ConfigError, malformed json/--set
        return None


if __name__ == "__main__":
    sys.exit(main())
