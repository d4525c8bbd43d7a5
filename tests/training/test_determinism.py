"""mrcnn_kp.training.determinism: seeding, op determinism, the ROI sampler's random state."""
import keras
import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig
from mrcnn_kp.training import determinism


@pytest.fixture
def restore_op_determinism(keras_backend):
    """seed_everything turns TensorFlow's op determinism on process-wide: off again after."""
    yield
    if keras_backend == "tensorflow":
        from tensorflow.python.framework import config as tf_config  # no public switch-off

        tf_config.disable_op_determinism()


class Sampler(keras.layers.Layer):
    """Draws keras.random noise from its own SeedGenerator, as the ROI target layer does."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator()

    def call(self, x):
        return x + keras.random.uniform(keras.ops.shape(x), seed=self.seed_generator)


def sampling_model():
    inputs = keras.Input((3,))
    outputs = Sampler(name="sampler")(keras.layers.Dense(3, name="dense")(inputs))
    return keras.Model(inputs, outputs)


def test_the_same_seed_gives_the_same_weights_and_samples_another_seed_others(
        restore_op_determinism, keras_backend):
    x = np.ones((2, 3), np.float32)
    runs = {}
    for key, seed in (("a", 7), ("b", 7), ("c", 8)):
        determinism.seed_everything(seed)
        model = sampling_model()
        runs[key] = (keras.ops.convert_to_numpy(model.get_layer("dense").kernel),
                     keras.ops.convert_to_numpy(model(x)))
    for got, expected in zip(runs["b"], runs["a"]):
        np.testing.assert_array_equal(got, expected)
    for got, other in zip(runs["c"], runs["a"]):
        assert not np.array_equal(got, other)
    if keras_backend == "tensorflow":
        from tensorflow.python.framework import config as tf_config

        assert tf_config.is_op_determinism_enabled()


def test_a_restored_seed_generator_state_continues_the_same_draws(restore_op_determinism):
    x = np.zeros((2, 3), np.float32)
    determinism.seed_everything(3)
    model = sampling_model()
    model(x)  # advance the state as an epoch of training does
    states = determinism.seed_generator_states(model)
    assert len(states) == 1 and len(states[0]) == 2
    expected = keras.ops.convert_to_numpy(model(x))

    determinism.seed_everything(3)  # a resumed process builds the same model afresh...
    fresh = sampling_model()
    assert determinism.seed_generator_states(fresh) != states
    assert not np.array_equal(keras.ops.convert_to_numpy(fresh(x)), expected)
    determinism.seed_everything(3)
    resumed = sampling_model()
    assert determinism.restore_seed_generator_states(resumed, states) == 1  # ...then restores
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(resumed(x)), expected)
    assert determinism.restore_seed_generator_states(resumed, states * 2) == 0  # other model


def test_maskrcnn_seeds_the_data_pipeline_from_the_config(monkeypatch, restore_op_determinism):
    from mrcnn_kp.data.synthetic import synthetic_dataset
    from mrcnn_kp.maskrcnn import MaskRCNN
    from mrcnn_kp.model import keypoint_rcnn
    from standin_models import build_standin_training_model

    monkeypatch.setattr(keypoint_rcnn, "build_training_model",
                        lambda config: build_standin_training_model(config))
    dataset = synthetic_dataset("val", num_images=6, image_size=64)
    orders = {}
    for seed in (None, 11, 12):
        model = MaskRCNN("training", TinyConfig(SEED=seed), model_dir="unused")
        batches = model._batches(dataset, shuffle=True, augment=True, workers=1)
        assert batches.seed == (0 if seed is None else seed)
        orders[seed] = [list(batches.image_order(epoch)) for epoch in range(3)]
    assert orders[11] != orders[12]
    assert orders[11] == [list(MaskRCNN("training", TinyConfig(SEED=11), "unused")._batches(
        dataset, True, True, 1).image_order(epoch)) for epoch in range(3)]
