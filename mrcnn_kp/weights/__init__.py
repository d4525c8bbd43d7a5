"""Weights: our Keras 3 files, legacy Keras-2 files, and imports from PyTorch checkpoints.

    from mrcnn_kp.weights import load_weights, save_weights
    save_weights(model, "run/epoch_003.weights.h5", config)
    print(load_weights(model, "mask_rcnn_coco.h5", exclude=[r"mrcnn_.*"]))

What is where:
- loading       save_weights, load_weights (by layer name), read_config
- named_layers  the model's named layers with weights, as loading matches them
- h5_files      reading Keras 3 `.weights.h5`, legacy `.h5` and `.keras` archives into numpy
- report        LoadReport, what a load did layer by layer
- errors        WeightsError and its two kinds, WeightsFileError and WeightsMismatchError
- pth_reader    PyTorch `.pth` state_dicts read without torch and without running pickled code
- torchvision   torchvision's Keypoint R-CNN checkpoint -> our LAYOUT "torchvision" model
- lite0_torch_map, lite0_imagenet
                the EfficientNet-Lite0 torch -> Keras weight table, and the ImageNet backbone
                weights loaded through it
- presets       named weights ("torchvision-coco", ...): fetched, checked, converted and cached

This module imports no TensorFlow, Keras or JAX; the functions import Keras when called.
"""
from mrcnn_kp.weights.errors import WeightsError, WeightsFileError, WeightsMismatchError
from mrcnn_kp.weights.h5_files import read_weight_file
from mrcnn_kp.weights.loading import load_weights, read_config, save_weights
from mrcnn_kp.weights.report import LoadReport

__all__ = ["LoadReport", "WeightsError", "WeightsFileError", "WeightsMismatchError",
           "load_weights", "read_config", "read_weight_file", "save_weights"]
