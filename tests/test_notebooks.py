"""The notebooks in notebooks/ run top to bottom, and the saved copies are what a run gives.

Each notebook is executed with nbclient in a kernel of this very interpreter (a kernelspec
written into a temporary folder points at sys.executable, so no `ipykernel install` is needed),
with the small settings (MRCNN_KP_NOTEBOOK_SMALL=1), a temporary working directory, synthetic
cache and model directory, and fails on the first cell that raises. The notebooks run in the
order of NOTEBOOKS: train_synthetic writes the checkpoint that demo, inspect_model and
inspect_weights then load (each also runs alone, on random weights, and says so). Those three
run once more on a model directory whose newest run is a model without a mask head (what
train_synthetic and `mrcnn-kp demo` train in normal settings), beside the earlier runs.

The saved copies in notebooks/ are refreshed with

    python tests/test_notebooks.py --save [NAME ...]

which executes them the same way and writes them back with their outputs, except the outputs
of cells tagged `no-saved-output` (those that draw real COCO images, whose Flickr licences forbid
copying them).
"""
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# Execution order: the first writes the checkpoint the next three load.
NOTEBOOKS = ("train_synthetic", "demo", "inspect_model", "inspect_weights", "inspect_data")
SMALL_SWITCH = "MRCNN_KP_NOTEBOOK_SMALL"
NO_SAVED_OUTPUT = "no-saved-output"
KERNEL_NAME = "mrcnn-kp-notebook-test"
# The user's own choices that would change what the notebooks do.
NOT_INHERITED = ("MRCNN_KP_WEIGHTS", "MRCNN_KP_MODEL_DIR", "MRCNN_KP_COCO_MINI", "KERAS_BACKEND")
CELL_TIMEOUT_S = 600
MAX_SAVED_BYTES = 1_000_000

# Text each notebook prints when it works, with the small settings (TinyConfig, 128 px).
EXPECTED_OUTPUT = {
    "train_synthetic": [
        "stage 'heads' up to epoch 1:", "stage 'all' up to epoch 2:",
        "'mask_rcnn_synthetic_0001.weights.h5', 'mask_rcnn_synthetic_0002.weights.h5'",
        "128 layers loaded, 0 absent, 0 mismatched",
        re.compile(r"keypoints [01]\.\d{3}  [01]\.\d{3}  [01]\.\d{3}"),
    ],
    "demo": [
        "masks      bool     (512, 512, ",  # the astronaut's own size: un-molded
        re.compile(r"left_wrist +\d+\.\d +\d+\.\d"),
    ],
    "inspect_model": [
        "before NMS: the best 256; after NMS: ",
        "keypoint_logits          shape (8, 56, 56, 17)",
        "rpn_probs                shape (4092, 2)",
    ],
    "inspect_weights": [
        "skipped 3 with other shapes: mrcnn_class_logits: file [(64, 81), (81,)] vs model "
        "[(64, 2), (2,)]",
        "excluded 3: mrcnn_class_logits, mrcnn_bbox_fc, mrcnn_mask",
        "RPN included: True",
    ],
    "inspect_data": [
        "4092 anchors, config.NUM_ANCHORS = 4092",
        "anchors + deltas vs ground truth: min IoU 1.0000",
        "  left wrist after ",
        re.compile(r"\b\d+ of 17 joints are targets"),
        "the whole json: 919 images",  # the real COCO subset, read in place
    ],
}
# Pictures (PNG outputs) each saved notebook shows at least.
MIN_PICTURES = {"train_synthetic": 2, "demo": 2, "inspect_model": 6, "inspect_weights": 1,
                "inspect_data": 7}
# With weights from train_synthetic, or without any.
TRAINED_WEIGHTS = "weights: mask_rcnn_synthetic_"
RANDOM_WEIGHTS = "The model keeps its RANDOM initial weights"


# ------------------------------------------------------------------------------ running
def kernel_manager(kernel_dir):
    """A KernelManager whose kernel is `sys.executable -m ipykernel_launcher`."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = Path(kernel_dir) / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mrcnn_kp tests", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def execute_notebook(name, work_dir, env):
    """Run notebooks/<name>.ipynb top to bottom in work_dir; returns the executed notebook.

    env: variables set for the kernel on top of os.environ. Raises nbclient's
    CellExecutionError (with the cell and the traceback) at the first failing cell.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    kernel_env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    kernel_env.update(env)
    km = kernel_manager(Path(work_dir) / "kernels")
    client = NotebookClient(notebook, km=km, timeout=CELL_TIMEOUT_S, record_timing=False,
                            resources={"metadata": {"path": str(work_dir)}})
    try:
        client.execute(cleanup_kc=True, env=kernel_env, cwd=str(work_dir))
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return notebook


def printed_text(notebook):
    """Everything the code cells printed or displayed as text, in order."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif "text/plain" in output.get("data", {}):
                parts.append(output.data["text/plain"])
    return "\n".join(parts)


def missing_expectations(text, expectations):
    missing = []
    for want in expectations:
        found = want.search(text) if isinstance(want, re.Pattern) else want in text
        if not found:
            missing.append(want.pattern if isinstance(want, re.Pattern) else want)
    return missing


def small_env(cache_dir, model_dir, coco_dir=None):
    env = {SMALL_SWITCH: "1", "MRCNN_KP_CACHE": str(cache_dir),
           "MRCNN_KP_MODEL_DIR": str(model_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if coco_dir is not None:
        env["MRCNN_KP_COCO_MINI"] = str(coco_dir)
    return env


# ------------------------------------------------------------------------------ tests: saved files
def _saved(name):
    import nbformat

    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def test_every_notebook_in_the_folder_is_tested():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_saved_notebook_holds_a_complete_small_run(name):
    """Saved with outputs: every code cell ran once, in order, without error, under 1 MB,
    and no cell that draws real COCO images kept its output."""
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.stat().st_size < MAX_SAVED_BYTES, f"{path.name}: {path.stat().st_size:,} bytes"
    notebook = _saved(name)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1))
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert errors == []
    for cell in code_cells:
        if NO_SAVED_OUTPUT in cell.metadata.get("tags", []):
            assert cell.outputs == [], f"{name}: a {NO_SAVED_OUTPUT} cell kept its output"
    images = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= MIN_PICTURES[name]
    text = printed_text(notebook)
    assert "small settings" in text
    expected = list(EXPECTED_OUTPUT[name])
    if name in ("demo", "inspect_model", "inspect_weights"):
        expected.append(TRAINED_WEIGHTS)  # saved after train_synthetic, with its checkpoint
    assert missing_expectations(text, expected) == []


# ------------------------------------------------------------------------------ tests: execution
@pytest.fixture(scope="module")
def notebook_dirs(tmp_path_factory):
    """(synthetic cache, model directory) shared by the notebooks of one test session."""
    return tmp_path_factory.mktemp("notebook_cache"), tmp_path_factory.mktemp("notebook_logs")


def _run_and_check(name, tmp_path, notebook_dirs, coco_dir=None):
    cache_dir, model_dir = notebook_dirs
    from mrcnn_kp.run_directory import find_last

    try:
        find_last(model_dir, "synthetic")  # as the notebooks search
        weights_line = TRAINED_WEIGHTS
    except FileNotFoundError:
        weights_line = RANDOM_WEIGHTS
    notebook = execute_notebook(name, tmp_path, small_env(cache_dir, model_dir, coco_dir))
    text = printed_text(notebook)
    expected = list(EXPECTED_OUTPUT[name])
    if name in ("demo", "inspect_model", "inspect_weights"):
        expected.append(weights_line)
    assert missing_expectations(text, expected) == []
    return notebook


@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n != "inspect_data"])
def test_notebook_runs_top_to_bottom(name, tmp_path, notebook_dirs):
    notebook = _run_and_check(name, tmp_path, notebook_dirs)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)


def test_inspect_data_runs_top_to_bottom_with_real_coco(tmp_path, notebook_dirs, coco_mini):
    annotations, _ = coco_mini
    notebook = _run_and_check("inspect_data", tmp_path, notebook_dirs, annotations.parent)
    coco_cells = [c for c in notebook.cells if NO_SAVED_OUTPUT in c.metadata.get("tags", [])]
    # The COCO pictures are drawn when the data is there (and only left out of saved copies).
    assert coco_cells and any("image/png" in o.get("data", {}) for o in coco_cells[0].outputs)


# A model without a mask head (USE_MASK_HEAD = False: CpuDemoConfig, which train_synthetic and
# `mrcnn-kp demo` train in normal settings), found as the newest run beside earlier ones.
MASKLESS_NOTEBOOKS = ("demo", "inspect_model", "inspect_weights")
NO_MASKS = "no masks: this model has no mask head (USE_MASK_HEAD = False)"
MASKLESS_EXPECTED_OUTPUT = {
    "demo": [NO_MASKS, re.compile(r"left_wrist +\d+\.\d +\d+\.\d")],
    "inspect_model": [NO_MASKS, "keypoint_logits          shape (8, 56, 56, 17)"],
    "inspect_weights": [
        "class-specific output layers: mrcnn_class_logits, mrcnn_bbox_fc",
        "skipped 2 with other shapes: mrcnn_class_logits: file [(64, 81), (81,)] vs model "
        "[(64, 2), (2,)]",
        "excluded 2: mrcnn_class_logits, mrcnn_bbox_fc", "RPN included: True"],
}


@pytest.fixture(scope="module")
def maskless_model_dir(tmp_path_factory, notebook_dirs):
    """A model directory as a user's logs/ after several runs: the runs the notebooks above
    wrote (when they ran first), then a newer one of a model without a mask head."""
    import datetime
    import shutil

    from mrcnn_kp.config import TinyConfig
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.run_directory import find_last
    from mrcnn_kp.training.checkpoints import checkpoint_path, run_dir_name
    from mrcnn_kp.weights import save_weights

    model_dir = tmp_path_factory.mktemp("maskless_logs")
    earlier = notebook_dirs[1]
    for run in earlier.iterdir():
        shutil.copytree(run, model_dir / run.name)
    config = TinyConfig(NAME="synthetic", USE_MASK_HEAD=False)
    newer = datetime.datetime.now() + datetime.timedelta(hours=1)
    run_dir = model_dir / run_dir_name(config, now=newer)
    run_dir.mkdir()
    path = checkpoint_path(run_dir, config, 3)
    save_weights(build_inference_model(config), path, config=config)
    assert find_last(model_dir, "synthetic") == str(path)
    return model_dir


@pytest.mark.parametrize("name", MASKLESS_NOTEBOOKS)
def test_notebook_runs_on_the_newest_checkpoint_of_a_model_without_masks(
        name, tmp_path, notebook_dirs, maskless_model_dir):
    cache_dir, _ = notebook_dirs
    notebook = execute_notebook(name, tmp_path, small_env(cache_dir, maskless_model_dir))
    text = printed_text(notebook)
    expected = MASKLESS_EXPECTED_OUTPUT[name] + [TRAINED_WEIGHTS + "0003"]
    assert missing_expectations(text, expected) == []


# ------------------------------------------------------------------------------ saving
def _children_cpu_seconds():
    """CPU time of the finished child processes (the kernels, once shut down)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def save_notebooks(names):
    """Execute the notebooks with the small settings and write them back with outputs.

    demo, inspect_model and inspect_weights need train_synthetic's checkpoint: it is executed
    first (and saved only when asked for).
    """
    import nbformat

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import coco_mini_dir

    with tempfile.TemporaryDirectory(prefix="mrcnn_kp_notebooks_") as tmp:
        tmp = Path(tmp)
        env = small_env(tmp / "cache", tmp / "logs", coco_mini_dir())
        needs_checkpoint = {"demo", "inspect_model", "inspect_weights"} & set(names)
        run = ["train_synthetic"] * bool(needs_checkpoint) + list(names)
        for name in dict.fromkeys(run):
            work_dir = tmp / name
            work_dir.mkdir()
            print(f"executing {name} ...", flush=True)
            wall, cpu = time.monotonic(), _children_cpu_seconds()
            notebook = execute_notebook(name, work_dir, env)
            wall, cpu = time.monotonic() - wall, _children_cpu_seconds() - cpu
            print(f"  {wall:.0f} s, the kernel used {cpu:.0f} CPU seconds", flush=True)
            for cell in notebook.cells:
                if NO_SAVED_OUTPUT in cell.metadata.get("tags", []):
                    cell.outputs = []
            if name not in names:
                continue
            path = NOTEBOOK_DIR / f"{name}.ipynb"
            nbformat.write(notebook, path)
            print(f"  wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "--save":
        sys.exit(__doc__)
    chosen = args[1:] or list(NOTEBOOKS)
    unknown = sorted(set(chosen) - set(NOTEBOOKS))
    if unknown:
        sys.exit(f"unknown notebook(s) {unknown}; choose from {NOTEBOOKS}")
    save_notebooks([n for n in NOTEBOOKS if n in chosen])
