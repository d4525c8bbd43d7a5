"""Run directories and checkpoint names: how a training run is laid out on disk, and how to
find the newest checkpoint in a model directory. Standard library only.

    <model_dir>/<name><YYYYmmddTHHMM>/            one training run (name in lower case)
        config.json                               the run's Config
        mask_rcnn_<name>_0003.weights.h5          weights after epoch 3
        mask_rcnn_<name>_0003_interrupted.weights.h5   written when epoch 4 was interrupted

matterport's `.h5` checkpoint names are read as well. Writing checkpoints (and their optimizer
state) is mrcnn_kp.training.checkpoints'; opening one for inference is
mrcnn_kp.inference.trained_model's.
"""
import datetime
import os
import re

WEIGHTS_SUFFIX = ".weights.h5"
CONFIG_FILE = "config.json"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M"
# <name><YYYYmmddTHHMM>
RUN_DIR_RE = re.compile(r"^(?P<name>[\w.-]*?)(?P<stamp>\d{8}T\d{4})$")
# <dir>/<name><YYYYmmddTHHMM>/mask_rcnn_<name>_<epoch>[_interrupted](.weights.h5 | .h5)
_CHECKPOINT_RE = re.compile(
    r"^(?P<run>.*[/\\][\w.-]*?\d{8}T\d{4})[/\\]mask_rcnn_[\w.-]*?_?(?P<epoch>\d{4})"
    r"(?P<interrupted>_interrupted)?(\.weights)?\.h5$")


def run_dir_name(name, now=None):
    """`<name><YYYYmmddTHHMM>` for a run of `name` starting `now` (default: now)."""
    now = now or datetime.datetime.now()
    return f"{name.lower()}{now.strftime(TIMESTAMP_FORMAT)}"


def checkpoint_name(name, epoch, interrupted=False):
    """`mask_rcnn_<name>_<epoch:04d>[_interrupted].weights.h5`."""
    tag = "_interrupted" if interrupted else ""
    return f"mask_rcnn_{name.lower()}_{int(epoch):04d}{tag}{WEIGHTS_SUFFIX}"


def checkpoint_pattern(name):
    """matterport's display pattern of a run's checkpoints: `.format(epoch=3)` gives epoch 3's."""
    return f"mask_rcnn_{name.lower()}_{{epoch:04d}}{WEIGHTS_SUFFIX}"


def parse_checkpoint_path(path):
    """(run directory, completed epoch) for a checkpoint inside a run directory, else None.

    Accepts ours (`.weights.h5`) and matterport's (`.h5`) names, so training continues a
    matterport run directory too.
    """
    match = _CHECKPOINT_RE.match(os.path.abspath(os.fspath(path)))
    if not match:
        return None
    return match.group("run"), int(match.group("epoch"))


def runs(model_dir):
    """[(timestamp, name, path)] of the run directories in `model_dir`, newest first."""
    found = []
    try:
        entries = os.listdir(model_dir)
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        match = RUN_DIR_RE.match(entry)
        path = os.path.join(model_dir, entry)
        if match and os.path.isdir(path):
            found.append((match.group("stamp"), match.group("name"), path))
    return sorted(found, reverse=True)


def last_checkpoint_in(run_dir):
    """The newest checkpoint file of one run directory (an `_interrupted` one counts after its
    epoch's checkpoint), or None."""
    names = sorted(f for f in os.listdir(run_dir)
                   if f.startswith("mask_rcnn") and f.endswith(".h5"))
    return os.path.join(run_dir, names[-1]) if names else None


def find_last(model_dir, name=None, any_name=True):
    """The newest checkpoint under `model_dir`.

    name given: of the latest run directory of `name` that holds one (run directories whose
    name starts with it, in the order of their timestamps). None, or none found and
    `any_name`: of the latest run directory of any name that holds one.
    Raises FileNotFoundError naming what was searched.
    """
    where = os.path.abspath(os.fspath(model_dir))
    if name is not None:
        name = name.lower()
        try:
            named = sorted(d for d in os.listdir(model_dir)
                           if d.startswith(name) and os.path.isdir(os.path.join(model_dir, d)))
        except (FileNotFoundError, NotADirectoryError):
            named = []
        for run in reversed(named):
            found = last_checkpoint_in(os.path.join(model_dir, run))
            if found:
                return found
        if not any_name:
            if not named:
                raise FileNotFoundError(
                    f"no run directory of {name!r} in {where} (run directories are named "
                    f"{name}<YYYYmmddTHHMM>)")
            raise FileNotFoundError(f"no checkpoint (mask_rcnn_*.weights.h5) in any run "
                                    f"directory of {name!r} in {where}")
    for _, _, run_dir in runs(model_dir):
        found = last_checkpoint_in(run_dir)
        if found:
            return found
    wanted = f"of {name!r} or of any name" if name else "of any name"
    raise FileNotFoundError(f"no checkpoint in a run directory {wanted} under {where}")
