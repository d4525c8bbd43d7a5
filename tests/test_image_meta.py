"""image_meta: matterport's layout, composed in numpy and parsed from arrays or tensors."""
import keras
import numpy as np
import pytest

from mrcnn_kp.config import Config, MatterportConfig
from mrcnn_kp.image_meta import (META_FIXED_SIZE, compose_image_meta, image_meta_size,
                                 parse_image_meta)


def test_image_meta_has_matterport_layout_and_parses_back():
    config = Config(IMAGE_MIN_DIM=512, IMAGE_MAX_DIM=512)
    # a 256 x 192 portrait image in matterport's 512 square: scale 2, 64 px columns each side
    meta = compose_image_meta(0, (256, 192, 3), (512, 512, 3), (0, 64, 512, 448), 2.0,
                              np.zeros(config.NUM_CLASSES, np.int32))
    assert meta.dtype == np.float32 and meta.shape == (config.IMAGE_META_SIZE,)
    assert meta.tolist() == [0, 256, 192, 3, 512, 512, 3, 0, 64, 512, 448, 2, 0, 0]
    batch = np.stack([meta, meta + 1])  # [2, 14]
    parsed = parse_image_meta(batch)
    assert parsed["window"].shape == (2, 4) and parsed["window"][0].tolist() == [0, 64, 512, 448]
    assert parsed["scale"].tolist() == [2, 3] and parsed["active_class_ids"].shape == (2, 2)
    assert parsed["image_id"].tolist() == [0, 1]
    assert parsed["image_shape"][0].tolist() == [512, 512, 3]
    # plain slicing: the model can parse a tensor of either backend
    tensor = parse_image_meta(keras.ops.convert_to_tensor(batch))
    assert keras.ops.convert_to_numpy(tensor["original_image_shape"])[0].tolist() == [256, 192, 3]


def test_the_config_sizes_the_input_by_the_layout():
    assert META_FIXED_SIZE == 12 and image_meta_size(2) == 14
    for config in (Config(), MatterportConfig()):
        assert config.IMAGE_META_SIZE == image_meta_size(config.NUM_CLASSES)
        meta = compose_image_meta(3, (10, 20, 3), config.IMAGE_SHAPE, (0, 0, 10, 20), 1.0,
                                  np.ones(config.NUM_CLASSES))
        assert meta.shape == (config.IMAGE_META_SIZE,)
        assert parse_image_meta(meta)["active_class_ids"].shape == (config.NUM_CLASSES,)


def test_a_meta_without_class_ids_is_refused():
    with pytest.raises(ValueError, match="image_meta needs 3 \\+ 3 \\+ 4 values and "
                                         "active_class_ids, got 12 numbers"):
        compose_image_meta(0, (1, 1, 3), (64, 64, 3), (0, 0, 1, 1), 1.0, [])
