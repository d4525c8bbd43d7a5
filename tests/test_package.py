"""mrcnn_kp/__init__.py: `import mrcnn_kp` stays light, `mrcnn_kp.MaskRCNN` is the model class."""
import subprocess
import sys

import pytest


def test_import_is_light_and_maskrcnn_loads_on_first_use():
    code = ("import sys, mrcnn_kp\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules)\n"
            "print(heavy)\n"
            "from mrcnn_kp import MaskRCNN\n"
            "from mrcnn_kp.maskrcnn import MaskRCNN as direct\n"
            "print(MaskRCNN is direct, mrcnn_kp.Config.__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["[]", "True Config"]


def test_unknown_attribute_is_an_attribute_error():
    import mrcnn_kp

    with pytest.raises(AttributeError, match="no attribute 'ModelLib'"):
        mrcnn_kp.ModelLib  # noqa: B018
