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


def test_from_preset_last_opens_the_newest_checkpoint_with_its_config(trained, tmp_path):
    model, _, model_dir, _ = trained
    opened = MaskRCNN.from_preset("last", model_dir=model_dir, DETECTION_MIN_CONFIDENCE=0.3)
    assert opened.config.NAME == "facade" and opened.config.DETECTION_MIN_CONFIDENCE == 0.3
    assert opened.log_dir == model.log_dir and opened.epoch >= 1
    from mrcnn_kp.weights.presets import NamedWeightsError

    with pytest.raises(NamedWeightsError, match="weights last: no checkpoint in a run "
                                                "directory of any name"):
        MaskRCNN.from_preset("last", model_dir=tmp_path)


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


# ------------------------------------------------------------------ the matterport preset
def matterport_heads(model, pooled, mask_pooled=None):
    """matterport's classifier / mask heads (conv -> BN -> relu ..., softmax,
    sigmoid) wired here from the loaded model's layers by name: -> (probs [N, C], deltas
    [N, C, 4]) or the mask probabilities [N, 28, 28, C]."""
    from keras import ops

    layer = model.get_layer
    if mask_pooled is not None:
        x = mask_pooled
        for i in range(1, 5):
            x = ops.relu(layer(f"mrcnn_mask_bn{i}")(layer(f"mrcnn_mask_conv{i}")(x),
                                                    training=False))
        return np.asarray(ops.sigmoid(layer("mrcnn_mask")(layer("mrcnn_mask_deconv")(x))))
    x = ops.relu(layer("mrcnn_class_bn1")(layer("mrcnn_class_conv1")(pooled), training=False))
    x = ops.relu(layer("mrcnn_class_bn2")(layer("mrcnn_class_conv2")(x), training=False))
    x = ops.reshape(x, (len(pooled), -1))
    probs = ops.softmax(layer("mrcnn_class_logits")(x))
    deltas = ops.reshape(layer("mrcnn_bbox_fc")(x), (len(pooled), -1, 4))
    return np.asarray(probs), np.asarray(deltas)


def calibrate_heads(model, inputs, seed=1):
    """New random class, box and mask outputs scaled to the features this untrained network
    makes on `inputs` (its raw activations are huge): logits of spread ~3 around the mean
    feature, so scores are distinct (no float32 ties at 1.0), boxes move by ~1 std and masks
    have clear insides and outsides."""
    rng = np.random.default_rng(seed)
    taps = keras.Model(model.input, [model.get_layer("mrcnn_class_relu2").output,
                                     model.get_layer("mrcnn_mask_deconv").output])
    box_features, mask_features = [np.asarray(t) for t in taps.predict_on_batch(inputs)]
    for name, features, spread in (("mrcnn_class_logits", box_features, 3.0),
                                   ("mrcnn_bbox_fc", box_features, 1.0),
                                   ("mrcnn_mask", mask_features, 4.0)):
        features = features.reshape(-1, features.shape[-1])
        mean, std = features.mean(0), features.std() + 1e-6
        kernel, bias = model.get_layer(name).get_weights()
        kernel = rng.normal(0, spread / (std * np.sqrt(len(mean))), kernel.shape)
        flat = kernel.reshape(len(mean), -1)
        model.get_layer(name).set_weights([kernel.astype(np.float32),
                                           (-mean @ flat).astype(np.float32)])


def test_matterport_preset_detect_equals_the_matterport_reference_chain(tmp_path):
    """A matterport-layout .h5 loaded into the preset; detect() against matterport's chain
    (tests/matterport_reference.py) run on the same network's pyramid and RPN outputs:
    resize/pad/mold, ProposalLayer, PyramidROIAlign, refine_detections, mask head,
    unmold_detections and unmold_mask."""
    import matterport_reference as ref
    from mrcnn_kp.config import MatterportConfig
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from standin_weights import write_matterport_layout_from_names

    config = MatterportConfig(NAME="mp", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, NUM_CLASSES=3,
                              BACKBONE="resnet50", TOP_DOWN_PYRAMID_SIZE=32,
                              FPN_CLASSIF_FC_LAYERS_SIZE=64, MASK_HEAD_CHANNELS=32,
                              KEYPOINT_HEAD_CONV_CHANNELS=32, KEYPOINT_HEAD_NUM_CONVS=2)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:100]
    image = (127 + 100 * np.sin(xx[..., None] / rng.uniform(3, 9, 3) + yy[..., None] / 7)
             ).astype(np.uint8)  # 80 x 100: scale 1.28, window (13, 0, 115, 128)
    molded, window, scale = ref.resize_image(image, 128)
    meta = np.array([0, 80, 100, 3, 128, 128, 3, *window, scale, 0, 0, 0], np.float32)
    inputs = {"input_image": molded[None].astype(np.float32), "input_image_meta": meta[None]}
    keras.utils.set_random_seed(3)
    source = build_inference_model(config)
    calibrate_heads(source, inputs)
    path = write_matterport_layout_from_names(source, tmp_path / "mask_rcnn_standin.h5")
    keras.utils.set_random_seed(4)
    model = MaskRCNN(mode="inference", config=config, model_dir=tmp_path)
    report = model.load_weights(str(path))
    assert report.file_format == "legacy" and not report.mismatched
    assert not report.absent_from_file
    r = model.detect([image])[0]

    net = model.keras_model
    trunk = keras.Model(net.input, [net.get_layer(n).output for n in (
        "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6", "rpn_probs", "rpn_bbox")])
    *pyramid, rpn_probs, rpn_bbox = [np.asarray(t) for t in trunk.predict_on_batch(inputs)]
    # matterport's RPN: per level P2..P6 the shared 3x3 conv, then (H, W, 6) logits
    # reshaped to (H * W * 3, 2) and softmaxed, (H, W, 12) deltas to (H * W * 3, 4)
    layer = net.get_layer
    shared = [layer("rpn_conv_shared")(p) for p in pyramid]
    logits = np.concatenate([np.reshape(layer("rpn_class_raw")(x), (1, -1, 2)) for x in shared], 1)
    np.testing.assert_allclose(rpn_probs, keras.ops.softmax(logits), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rpn_bbox, np.concatenate(
        [np.reshape(layer("rpn_bbox_pred")(x), (1, -1, 4)) for x in shared], 1), atol=1e-4)
    anchors = ref.anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                          config.BACKBONE_SHAPES, config.BACKBONE_STRIDES, 128)
    assert rpn_probs.shape == (1, len(anchors), 2) == (1, 4092, 2)  # one row per anchor
    pyramid = [p[0] for p in pyramid[:4]]
    rois, _ = ref.proposals(rpn_probs, rpn_bbox, anchors, 6000, 1000, 0.7,
                            config.RPN_BBOX_STD_DEV)
    probs, deltas = matterport_heads(net, ref.pyramid_roi_align(rois[0], pyramid, 7, (128, 128)))
    window_n = ref.norm_window_graph(window, 128)
    detections = ref.refine_detections(rois[0], probs, deltas, window_n, config)
    mask_probs = matterport_heads(
        net, None, ref.pyramid_roi_align(detections[:, :4], pyramid, 14, (128, 128)))
    class_masks = mask_probs[np.arange(100), :, :, detections[:, 4].astype(int)]
    boxes, class_ids, scores, masks = ref.unmold_detections(detections, class_masks,
                                                            image.shape, window, 128)

    n = len(boxes)
    assert n >= 5 and set(class_ids.tolist()) == {1, 2}  # both foreground classes
    np.testing.assert_array_equal(r["class_ids"], class_ids)
    box_diff = np.abs(r["rois"] - boxes[:, [1, 0, 3, 2]]).max()  # ours are (x1, y1, x2, y2)
    score_diff = np.abs(r["scores"] - scores).max()
    inter = (r["masks"] & masks).sum(axis=(0, 1))
    union = (r["masks"] | masks).sum(axis=(0, 1))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    print(f"{n} detections; max box diff {box_diff} px, max score diff {score_diff:.2e}, "
          f"min mask IoU {iou.min():.4f}")
    assert box_diff <= 1 and score_diff <= 1e-3 and iou.min() >= 0.98
    assert r["masks"].shape == (80, 100, n) and r["keypoints"].shape == (n, 17, 3)
