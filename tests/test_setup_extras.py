"""setup.py: each install names exactly one TensorFlow distribution (tensorflow-cpu and
tensorflow both own the `tensorflow` package; two of them in one environment overwrite each
other's files).

The fast test reads the requirements setup.py declares; the slow one has pip resolve each install
(`pip install --dry-run --report`, metadata only, nothing installed) and counts the TensorFlow
distributions in the result, transitive requirements included. pip needs its package index for
that; where none answers, the slow test skips and says so.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
                            "tensorflow-macos", "tensorflow-aarch64", "intel-tensorflow",
                            "tf-nightly", "tf-nightly-cpu"}
# install -> (the TensorFlow distribution it gets, a distribution that shows the accelerator)
INSTALLS = {"cpu": ("tensorflow-cpu", None), "cuda": ("tensorflow", "nvidia-cudnn-cu12"),
            "jax-cpu": ("tensorflow-cpu", "jaxlib"), "jax-cuda": ("tensorflow-cpu",
                                                                  "jax-cuda12-plugin")}


def setup_requirements():
    """(install_requires, extras_require) as setup.py passes them to setup() (not run)."""
    import setuptools

    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        source = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
        exec(compile(source, "setup.py", "exec"), {"__file__": os.path.join(REPO, "setup.py"),
                                                   "__name__": "__main__"})
    finally:
        setuptools.setup = original
    return list(captured["install_requires"]), dict(captured["extras_require"])


def tensorflow_names(requirements):
    return sorted(canonicalize_name(Requirement(r).name) for r in requirements
                  if canonicalize_name(Requirement(r).name) in TENSORFLOW_DISTRIBUTIONS)


def test_the_base_names_no_tensorflow_and_each_backend_extra_names_one():
    base, extras = setup_requirements()
    assert tensorflow_names(base) == []
    for extra in ("cpu", "cuda", "gpu", "jax-cpu", "jax-cuda", "test"):
        assert len(tensorflow_names(base + extras[extra])) == 1, (extra, extras[extra])
    assert tensorflow_names(extras["cuda"]) == ["tensorflow"]
    assert any(r.startswith("tensorflow[and-cuda]") for r in extras["cuda"])
    assert any(r.startswith("jax[cuda12]") for r in extras["jax-cuda"])
    assert any(r.startswith("jax[cpu]") for r in extras["jax-cpu"])


def resolve(requirements, report):
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--quiet", "--disable-pip-version-check", "--report", str(report)] + requirements
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return None, proc.stderr
    with open(report) as f:
        return {canonicalize_name(i["metadata"]["name"]) for i in json.load(f)["install"]}, ""


@pytest.mark.slow
def test_pip_resolves_each_install_to_exactly_one_tensorflow(tmp_path):
    base, extras = setup_requirements()
    with ThreadPoolExecutor(len(INSTALLS)) as pool:
        results = dict(zip(INSTALLS, pool.map(
            lambda name: resolve(base + extras[name], tmp_path / f"{name}.json"), INSTALLS)))
    failed = {name: err for name, (got, err) in results.items() if got is None}
    if failed and all("No matching distribution" in e or "connection" in e.lower()
                      or "Could not find a version" in e for e in failed.values()):
        pytest.skip("no package index answered pip: " + next(iter(failed.values()))[-300:])
    assert not failed, failed
    for name, (installed, _) in results.items():
        tensorflow, accelerator = INSTALLS[name]
        assert sorted(installed & TENSORFLOW_DISTRIBUTIONS) == [tensorflow], name
        if accelerator:
            assert accelerator in installed, (name, sorted(installed))
