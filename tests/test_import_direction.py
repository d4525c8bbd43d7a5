"""Imports inside mrcnn_kp go one way: a module imports only its own layer and the layers below
it, in the order of docs/DESIGN.md ("Layers and dependency direction").

Every module of the package is parsed with `ast` (nothing is imported, so the test is fast and
needs no TensorFlow), and every import is checked: module-level ones, the lazy ones inside
functions, relative ones and `importlib.import_module("mrcnn_kp....")` with a literal name.
A module that no layer claims fails too, so a new module has to be placed before it lands.
The few upward imports that exist are listed in KNOWN_EXCEPTIONS with the reason; any other
upward import, or a listed one that has gone, fails with the file and line.
"""
import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "mrcnn_kp"

# Lowest first. A module may import modules of its own layer and of any layer below it. An entry
# names a module or a package and everything under it, matched on whole dotted parts
# ("mrcnn_kp.weights" claims "mrcnn_kp.weights.presets" but not "mrcnn_kp.weights_extra"); the
# bare package name "mrcnn_kp" claims only mrcnn_kp/__init__.py, so a new top-level module is
# unplaced until it is given a layer here and in docs/DESIGN.md.
LAYERS = (
    ("base", ("mrcnn_kp.constants", "mrcnn_kp.utils", "mrcnn_kp.download",
              "mrcnn_kp.image_meta", "mrcnn_kp.run_directory")),
    ("config", ("mrcnn_kp.config",)),
    ("runtime", ("mrcnn_kp.runtime",)),
    ("ops", ("mrcnn_kp.ops",)),
    ("data", ("mrcnn_kp.data",)),
    ("model", ("mrcnn_kp.model",)),
    ("weights", ("mrcnn_kp.weights",)),
    ("losses", ("mrcnn_kp.losses",)),
    ("training/inference", ("mrcnn_kp.training", "mrcnn_kp.inference")),
    ("facade", ("mrcnn_kp.maskrcnn", "mrcnn_kp")),
    ("commands", ("mrcnn_kp.commands", "mrcnn_kp.cli")),
)
# Layers whose groups are siblings: neither imports the other (training and inference both sit
# on the model; one does not reach into the other).
SEPARATE_GROUPS = {"training/inference"}
PACKAGE = "mrcnn_kp"

# (importer, imported): why this upward or sideways import exists. Each one is a tie to undo,
# not a pattern to copy; remove the entry together with the import.
KNOWN_EXCEPTIONS = {
    ("mrcnn_kp.model.keypoint_rcnn", "mrcnn_kp.losses"):
        "the training model computes its six losses inside the graph, as outputs "
        "(matterport's design), so it builds them from mrcnn_kp.losses",
}


# ------------------------------------------------------------------------------ the checker
def module_name(path, package_dir):
    """mrcnn_kp/a/b.py -> 'mrcnn_kp.a.b'; mrcnn_kp/a/__init__.py -> 'mrcnn_kp.a'."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source, module, is_package=False):
    """[(line, imported module name)] of every mrcnn_kp import in `source`, at any depth.

    `from mrcnn_kp.a import b` gives 'mrcnn_kp.a.b' (b may be a module; the layer of a
    name inside a.py is a.py's layer anyway, see layer_of)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            name = _literal_prefix(node.args[0])
            if name:
                found.append((node.lineno, name))
    return [(line, name) for line, name in found
            if name == "mrcnn_kp" or name.startswith("mrcnn_kp.")]


def _literal_prefix(node):
    """The module name of import_module("x.y") or the literal head of f"x.y.{name}"."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values \
            and isinstance(node.values[0], ast.Constant):
        return node.values[0].value.rstrip(".") or None
    return None


def layer_of(name, layers=LAYERS, fallback=True):
    """(layer index, entry) of a module, or None when no entry claims it.

    fallback: a name inside a module (`from mrcnn_kp import MaskRCNN` gives 'mrcnn_kp.MaskRCNN')
    takes the layer of the nearest enclosing module that has one."""
    while True:
        best = None
        for index, (_, entries) in enumerate(layers):
            for entry in entries:
                claims = name == entry or (entry != PACKAGE and name.startswith(entry + "."))
                if claims and (best is None or len(entry) > len(best[1])):
                    best = (index, entry)
        if best is not None or not fallback or "." not in name:
            return best
        name = name.rpartition(".")[0]


def check_imports(sources, layers=LAYERS, exceptions=KNOWN_EXCEPTIONS):
    """sources: {module name: (source text, is_package)} -> (violations, unplaced, used).

    violations: lines "importer:line imports imported (layer a -> layer b)"; unplaced: module
    names no layer claims; used: the exceptions that were met."""
    violations, unplaced, used = [], [], set()
    for module, (source, is_package) in sorted(sources.items()):
        own = layer_of(module, layers, fallback=False)
        if own is None:
            unplaced.append(module)
            continue
        for line, name in imported_modules(source, module, is_package):
            other = layer_of(name, layers)
            if other is None:
                continue
            separate = layers[own[0]][0] in SEPARATE_GROUPS and other[1] != own[1]
            if other[0] < own[0] or (other[0] == own[0] and not separate):
                continue
            key = next((k for k in exceptions if k[0] == module
                        and (name == k[1] or name.startswith(k[1] + "."))), None)
            if key is not None:
                used.add(key)
                continue
            violations.append(f"{module}:{line} imports {name} "
                              f"({layers[own[0]][0]} -> {layers[other[0]][0]})")
    return violations, unplaced, used


def package_sources(package_dir=PACKAGE_DIR):
    return {module_name(path, package_dir): (path.read_text(encoding="utf-8"),
                                             path.name == "__init__.py")
            for path in sorted(package_dir.rglob("*.py"))}


# ------------------------------------------------------------------------------ the package
def test_no_module_imports_a_higher_layer():
    sources = package_sources()
    assert len(sources) > 50  # the whole package was read
    violations, unplaced, used = check_imports(sources)
    assert unplaced == [], f"modules no layer of LAYERS claims: {unplaced}"
    assert violations == [], "imports against docs/DESIGN.md's direction:\n" + "\n".join(
        violations)
    assert used == set(KNOWN_EXCEPTIONS), \
        f"exceptions no longer needed (remove them): {sorted(set(KNOWN_EXCEPTIONS) - used)}"


def test_the_layers_are_the_ones_docs_design_lists():
    design = (PACKAGE_DIR.parent / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix != "mrcnn_kp":
                assert f"`{prefix.removeprefix('mrcnn_kp.')}" in design, prefix
    for importer, imported in KNOWN_EXCEPTIONS:
        assert importer.removeprefix("mrcnn_kp.") in design, importer


# ------------------------------------------------------------------------------ the checker fails
FAKE = {
    "mrcnn_kp": ("from mrcnn_kp.config import Config\n", True),
    "mrcnn_kp.config": ("from mrcnn_kp import constants\n", False),
    "mrcnn_kp.constants": ("", False),
    "mrcnn_kp.ops": ("", True),
    "mrcnn_kp.ops.boxes": ("import numpy\nfrom mrcnn_kp.ops import backend\n", False),
    "mrcnn_kp.ops.backend": ("", False),
    "mrcnn_kp.training.trainer": ("from ..inference.predictor import Predictor\n", False),
    "mrcnn_kp.inference.predictor": ("from mrcnn_kp.model import keypoint_rcnn\n", False),
    "mrcnn_kp.model.keypoint_rcnn": ("from mrcnn_kp import losses\n", False),
    "mrcnn_kp.losses": ("from mrcnn_kp.config import LOSS_NAMES\n", False),
}


CLEAN = {k: v for k, v in FAKE.items() if k != "mrcnn_kp.training.trainer"}


def test_a_clean_fake_tree_passes_and_the_exception_is_counted():
    tree = dict(CLEAN)
    violations, unplaced, used = check_imports(tree)
    assert violations == [] and unplaced == []
    assert used == {("mrcnn_kp.model.keypoint_rcnn", "mrcnn_kp.losses")}


@pytest.mark.parametrize("module, source, is_package, want", [
    # a lazy import inside a function, two layers up
    ("mrcnn_kp.ops.boxes", "import numpy\n\ndef f():\n    from mrcnn_kp.data import targets\n",
     False, "mrcnn_kp.ops.boxes:4 imports mrcnn_kp.data.targets (ops -> data)"),
    # a relative import from a package __init__
    ("mrcnn_kp.ops", "from ..commands import predict\n", True,
     "mrcnn_kp.ops:1 imports mrcnn_kp.commands.predict (ops -> commands)"),
    # a plain import statement inside a method
    ("mrcnn_kp.config", "class C:\n    def m(self):\n        import mrcnn_kp.maskrcnn\n",
     False, "mrcnn_kp.config:3 imports mrcnn_kp.maskrcnn (config -> facade)"),
    # importlib with a literal name
    ("mrcnn_kp.data.coco", "import importlib\nimportlib.import_module('mrcnn_kp.losses')\n",
     False, "mrcnn_kp.data.coco:2 imports mrcnn_kp.losses (data -> losses)"),
    # the foundation imports nothing of the package
    ("mrcnn_kp.utils", "from mrcnn_kp import config\n", False,
     "mrcnn_kp.utils:1 imports mrcnn_kp.config (base -> config)"),
    # sideways between the two groups of one layer, without an exception
    ("mrcnn_kp.training.trainer", "from ..inference.predictor import Predictor\n", False,
     "mrcnn_kp.training.trainer:1 imports mrcnn_kp.inference.predictor.Predictor "
     "(training/inference -> training/inference)"),
    # the weights layer sits below training: reaching into the trainer is upward
    ("mrcnn_kp.weights", "from mrcnn_kp.training import checkpoints\n", False,
     "mrcnn_kp.weights:1 imports mrcnn_kp.training.checkpoints (weights -> training/inference)"),
])
def test_an_upward_import_is_reported_with_its_line(module, source, is_package, want):
    tree = dict(CLEAN, **{module: (source, is_package)})
    violations, unplaced, _ = check_imports(tree)
    assert violations == [want] and unplaced == []


def test_a_module_no_layer_claims_is_reported():
    tree = dict(CLEAN, **{"mrcnn_kp.newthing": ("from mrcnn_kp import constants\n", False)})
    violations, unplaced, _ = check_imports(tree)
    assert violations == [] and unplaced == ["mrcnn_kp.newthing"]


def test_a_known_exception_covers_only_its_own_pair():
    tree = dict(CLEAN, **{"mrcnn_kp.model.heads": ("from mrcnn_kp.losses import x\n", False)})
    violations, _, _ = check_imports(tree)
    assert violations == ["mrcnn_kp.model.heads:1 imports mrcnn_kp.losses.x (model -> losses)"]


def test_names_are_matched_on_whole_dotted_parts():
    assert layer_of("mrcnn_kp.weights.presets") == (6, "mrcnn_kp.weights")
    assert layer_of("mrcnn_kp.weights_extra", fallback=False) is None
    assert layer_of("mrcnn_kp.model.heads") == (5, "mrcnn_kp.model")
    assert layer_of("mrcnn_kp") == (9, "mrcnn_kp")
    assert layer_of("mrcnn_kp.MaskRCNN") == (9, "mrcnn_kp")  # a name inside the package
    assert layer_of("mrcnn_kp.newthing", fallback=False) is None


def test_a_name_from_the_package_init_counts_as_the_facade():
    tree = dict(CLEAN, **{"mrcnn_kp.data.coco": ("from mrcnn_kp import MaskRCNN\n", False)})
    assert check_imports(tree)[0] == [
        "mrcnn_kp.data.coco:1 imports mrcnn_kp.MaskRCNN (data -> facade)"]
