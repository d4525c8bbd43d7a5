"""The presets: the registry, bodies that list only changes, and their values pinned.

preset_values.json holds every preset's to_dict(). A deliberate change of a default or of a
preset updates it (the failing test prints the keys that differ); regenerate it with
    {name: cls().to_dict() for name, cls in PRESETS.items()}
written as JSON (indent=1, sort_keys=True).
"""
import json
from pathlib import Path

import pytest

from mrcnn_kp.config import (PRESETS, CocoCpuConfig, Config, CpuDemoConfig, CpuLite0Config,
                             MatterportConfig, TinyConfig, TorchvisionKeypointConfig)

VALUES = Path(__file__).with_name("preset_values.json")
PRESET_CLASSES = [*PRESETS.values(), CpuLite0Config]


def test_the_registry_names_every_preset_in_order():
    assert PRESETS == {"default": Config, "tiny": TinyConfig, "cpu_demo": CpuDemoConfig,
                       "coco_cpu": CocoCpuConfig, "torchvision": TorchvisionKeypointConfig,
                       "matterport": MatterportConfig}
    assert list(PRESETS) == ["default", "tiny", "cpu_demo", "coco_cpu", "torchvision",
                             "matterport"]


@pytest.mark.parametrize("cls", [c for c in PRESET_CLASSES if c is not Config],
                         ids=lambda c: c.__name__)
def test_a_preset_body_sets_only_what_differs_from_its_base(cls):
    (base,) = cls.__bases__
    settings = {name: value for name, value in vars(cls).items() if name.isupper()}
    assert settings, f"{cls.__name__} sets nothing"
    same = sorted(name for name, value in settings.items() if getattr(base, name) == value)
    assert same == [], f"{cls.__name__} repeats {base.__name__}'s values of {same}"
    unknown = sorted(name for name in settings if not hasattr(Config, name))
    assert unknown == [], f"{cls.__name__} sets attributes Config does not have: {unknown}"


def test_the_cpu_training_presets_share_one_lite0_base():
    for cls in (CpuDemoConfig, CocoCpuConfig):
        assert cls.__bases__ == (CpuLite0Config,)
        config = cls()
        assert config.BACKBONE == "efficientnet_lite0" and config.TRAIN_BN
        assert config.OPTIMIZER == "adamw" and not config.USE_MASK_HEAD
    assert CpuLite0Config not in PRESETS.values()  # a base, not a --config name


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_keeps_its_values(name):
    want = json.loads(VALUES.read_text(encoding="utf-8"))[name]
    got = PRESETS[name]().to_dict()
    differ = sorted(k for k in set(want) | set(got) if want.get(k, "?") != got.get(k, "?"))
    assert differ == [], f"{name}: values differ from preset_values.json: " + ", ".join(
        f"{k} {want.get(k, '(none)')!r} -> {got.get(k, '(none)')!r}" for k in differ)


def test_the_values_file_covers_every_preset():
    assert sorted(json.loads(VALUES.read_text(encoding="utf-8"))) == sorted(PRESETS)
