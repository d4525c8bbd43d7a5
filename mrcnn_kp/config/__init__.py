"""Every hyper-parameter of the model, the data pipeline and the trainer (docs/DESIGN.md).

    base.py        Config: the settings with their meaning, derived values, JSON, display
    validation.py  the values each setting accepts and the table of rules Config checks
    presets.py     the named configurations (`--config NAME`) and PRESETS, name -> class
"""
from mrcnn_kp.config.base import Config, ConfigError
from mrcnn_kp.config.presets import (PRESETS, CocoCpuConfig, CpuDemoConfig, CpuLite0Config,
                                     MatterportConfig, TinyConfig, TorchvisionKeypointConfig)
from mrcnn_kp.config.validation import (BACKBONES, BOX_MODES, IMAGE_NORMALIZATIONS,
                                        IMAGE_RESIZE_METHODS, KEYPOINT_DECODERS, KEYPOINT_HEADS,
                                        LAYOUTS, LOSS_NAMES, LR_SCHEDULES, OPTIMIZERS,
                                        RESIZE_MODES, ROI_ALIGN_MODES, UNMOLD_MODES)

__all__ = [
    "Config", "ConfigError", "PRESETS", "TinyConfig", "CpuLite0Config", "CpuDemoConfig",
    "CocoCpuConfig", "TorchvisionKeypointConfig", "MatterportConfig", "BACKBONES", "BOX_MODES",
    "IMAGE_NORMALIZATIONS", "IMAGE_RESIZE_METHODS", "KEYPOINT_DECODERS", "KEYPOINT_HEADS",
    "LAYOUTS", "LOSS_NAMES", "LR_SCHEDULES", "OPTIMIZERS", "RESIZE_MODES", "ROI_ALIGN_MODES",
    "UNMOLD_MODES",
]
