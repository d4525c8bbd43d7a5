"""The MaskRCNN facade on the real model (TinyConfig): train, checkpoint, resume, detect."""
import os

import keras
import numpy as np
import pytest

from mrcnn_kp.config import LOSS_NAMES, TinyConfig
from mrcnn_kp.data.synthetic import synthetic_dataset
from mrcnn_kp.maskrcnn import MaskRCNN


def tiny_config():
    return TinyConfig(NAME="facade", STEPS_PER_EPOCH=2, VALIDATION_STEPS=1, LR_WARMUP_STEPS=2,
                      LR_SCHEDULE="cosine")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    train = synthetic_dataset("train", num_images=6, image_size=128, out_dir=root)
    val = synthetic_dataset("val", num_images=2, image_size=128, out_dir=root)
    return train, val


class WithoutTargets(keras.utils.PyDataset):
    """The batches of a DataGenerator, except batch `index`: every target zeroed (no person,
    no anchor to learn): the all-invalid batch that must not crash or poison the weights."""

    TARGETS = ("input_rpn_match", "input_rpn_bbox", "input_gt_class_ids", "input_gt_boxes",
               "input_gt_masks", "input_gt_keypoints")

    def __init__(self, source, index):
        super().__init__()
        self.source, self.index = source, index

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        batch = self.source[index]
        if index == self.index:
            batch = {k: np.zeros_like(v) if k in self.TARGETS else v for k, v in batch.items()}
        return batch


class StepLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in (logs or {}).items()})


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A training-mode facade after one epoch of "all"; its second step had no targets."""
    from mrcnn_kp.data.pipeline import DataGenerator

    model_dir = tmp_path_factory.mktemp("logs")
    keras.utils.set_random_seed(0)
    config = tiny_config()
    model = MaskRCNN("training", config, model_dir=model_dir)
    steps = StepLogs()
    batches = WithoutTargets(DataGenerator(data[0], config, shuffle=False), index=1)
    history = model.train(batches, None, learning_rate=0.01, epochs=1, layers="all",
                          custom_callbacks=[steps], verbose=0)
    return model, history, model_dir, steps.logs


def test_train_writes_a_run_with_a_checkpoint_per_epoch(trained):
    model, history, model_dir, _ = trained
    assert model.epoch == 1
    assert os.path.dirname(model.log_dir) == str(model_dir)
    assert os.path.basename(model.log_dir).startswith("facade")
    assert model.find_last() == os.path.join(model.log_dir, "mask_rcnn_facade_0001.weights.h5")
    assert model.checkpoint_path.endswith("mask_rcnn_facade_{epoch:04d}.weights.h5")
    for name in LOSS_NAMES:  # (validation is covered by tests/training with a stand-in)
        assert np.isfinite(history.history[name][0]), name
    assert "learning_rate" in history.history


def test_a_batch_without_any_valid_target_trains_without_nan(trained):
    model, _, _, step_logs = trained
    assert len(step_logs) == 2  # step 2 saw the batch without targets
    for name in LOSS_NAMES:
        assert all(np.isfinite(logs[name]) for logs in step_logs), name
    # running means: the empty batch adds a 0 keypoint loss, so the mean halves
    assert step_logs[1]["keypoint_loss"] == pytest.approx(step_logs[0]["keypoint_loss"] / 2)
    optimizer = model.keras_model.optimizer
    assert int(keras.ops.convert_to_numpy(optimizer.skipped_steps)) == 0
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2


def test_load_last_in_training_mode_resumes_epoch_and_optimizer(trained, data):
    model, _, model_dir, _ = trained
    resumed = MaskRCNN("training", tiny_config(), model_dir=model_dir)
    resumed.load_weights("last")
    assert resumed.epoch == 1 and resumed.log_dir == model.log_dir
    resumed.train(data[0], None, learning_rate=0.01, epochs=2, layers="heads", verbose=0)
    assert resumed.epoch == 2
    assert int(keras.ops.convert_to_numpy(resumed.keras_model.optimizer.iterations)) == 4
    assert resumed.find_last().endswith("mask_rcnn_facade_0002.weights.h5")


def test_inference_mode_loads_the_checkpoint_and_detects(trained, data):
    model, _, model_dir, _ = trained
    checkpoint = os.path.join(model.log_dir, "mask_rcnn_facade_0001.weights.h5")
    inference = MaskRCNN("inference", tiny_config(), model_dir=model_dir)
    report = inference.load_weights(checkpoint)
    assert "mrcnn_keypoint_conv1" in report.loaded
    assert inference.log_dir == model.log_dir and inference.epoch == 1
    name = "mrcnn_keypoint_conv1"
    np.testing.assert_array_equal(inference.keras_model.get_layer(name).get_weights()[0],
                                  _checkpoint_kernel(checkpoint, model, name))
    image = np.asarray(data[1].load_image(0))
    results = inference.detect([image, image[:100]])
    assert len(results) == 2
    assert results[0]["keypoints"].shape[1:] == (17, 3)
    assert results[1]["masks"].shape[:2] == (100, image.shape[1])
    assert len(results[0]["scores"]) == len(results[0]["rois"]) == len(results[0]["class_ids"])


def _checkpoint_kernel(path, training_facade, name):
    """The kernel of `name` as saved in the checkpoint (loaded into a fresh training model)."""
    fresh = MaskRCNN("training", training_facade.config, model_dir=os.path.dirname(path))
    fresh.load_weights(path)
    return fresh.keras_model.get_layer(name).get_weights()[0]


def test_modes_are_checked(trained, data):
    model = trained[0]
    with pytest.raises(ValueError, match="mode must be 'training' or 'inference'"):
        MaskRCNN("evaluation", tiny_config())
    with pytest.raises(ValueError, match=r"detect\(\) needs a model created with mode='inference'"):
        model.detect([np.zeros((64, 64, 3), np.uint8)])
