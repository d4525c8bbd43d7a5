"""The python of the torchvision venv that the torchvision equivalence tests run their reference
in (tests/torchvision_reference.py), or a skip (a failure under CI=true) when there is none."""
import importlib.util
import os
import sys
import tempfile

import pytest


def torchvision_python():
    """$PEERS_TV_PYTHON, else the peers venv's python, else this python if it has torchvision
    (`pip install -e ".[test,torchvision]"` where torchvision's wheel runs)."""
    path = os.environ.get("PEERS_TV_PYTHON") or os.path.join(tempfile.gettempdir(), "peers",
                                                             "tv", "bin", "python")
    if not os.path.exists(path) and "PEERS_TV_PYTHON" not in os.environ \
            and importlib.util.find_spec("torchvision") is not None:
        path = sys.executable
    if not os.path.exists(path):
        message = (f"torchvision venv not found ({path}): set PEERS_TV_PYTHON to a python "
                   f"with torch and torchvision (.ci/run builds one)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
