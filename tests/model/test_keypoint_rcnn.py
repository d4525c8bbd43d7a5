"""The assembled models: contract of docs/DESIGN.md, shared layers, a model.fit of two
steps, graph-mode inference, the debug outputs, the no-mask variant and the parameter counts
against matterport's file and torchvision's keypointrcnn_resnet50_fpn."""
import keras
import numpy as np
import pytest
from keras import ops

from mrcnn_kp.config import LOSS_NAMES, Config, TinyConfig
from mrcnn_kp.model.keypoint_rcnn import (INFERENCE_OUTPUTS, build_inference_model, build_models)

from model_batches import BATCH_KEYS, make_batch

TORCHVISION_KEYPOINTRCNN_R50_FPN = 59_137_258  # sum(p.numel() for p in model.parameters())
MATTERPORT_R50_2_CLASSES = 44_662_942  # mask_rcnn_coco.h5 layout, 2 classes (docs/MATTERPORT.md)


@pytest.fixture(scope="module")
def tiny():
    config = TinyConfig()
    return config, build_models(config)


def numpy(tree):
    return {k: np.asarray(ops.convert_to_numpy(v)) for k, v in tree.items()}


def image_inputs(batch):
    return {k: batch[k] for k in ("input_image", "input_image_meta")}


# ------------------------------------------------------------------------------ contract
def test_inputs_outputs_and_shared_layers(tiny):
    config, models = tiny
    training, inference = models
    assert sorted(t.name for t in training.inputs) == sorted(BATCH_KEYS)
    assert sorted(t.name for t in inference.inputs) == ["input_image", "input_image_meta"]
    assert set(training.output) == set(LOSS_NAMES) | {"positive_rois", "trained_joints"}
    b, d = None, config.DETECTION_MAX_INSTANCES
    specs = {k: (tuple(v.shape), keras.backend.standardize_dtype(v.dtype))
             for k, v in inference.output.items()}
    assert specs == {"boxes": ((b, d, 4), "float32"), "class_ids": ((b, d), "int32"),
                     "scores": ((b, d), "float32"), "masks": ((b, d, 28, 28), "float32"),
                     "keypoints": ((b, d, 17, 3), "float32"), "num_detections": ((b,), "int32")}
    for name in ("lite0_stem_conv", "fpn_p2", "rpn_conv_shared", "mrcnn_class_conv1",
                 "mrcnn_mask_conv1", "mrcnn_keypoint_conv1", "mrcnn_keypoint_deconv"):
        assert training.get_layer(name) is inference.get_layer(name)
    assert {id(w) for w in training.weights} == {id(w) for w in inference.weights}


@pytest.mark.tf_only  # op-by-op on JAX compiles every primitive: minutes; fit covers JAX
def test_eager_training_losses_are_finite_and_counted(tiny):
    config, (training, _) = tiny
    out = numpy(training(make_batch(config, seed=1), training=True))
    losses = np.array([out[name] for name in LOSS_NAMES])
    assert np.all(np.isfinite(losses)) and np.all(losses >= 0)
    assert out["keypoint_loss"] > 0 and out["mrcnn_mask_loss"] > 0
    # Every person's own box is a candidate ROI, so each image has >= 2 positives.
    assert out["positive_rois"] >= 2 and out["trained_joints"] > 0


def check_inference_outputs(out, config):
    """Padding, order, boxes inside the image, joints inside their box, masks in [0, 1]."""
    d, (height, width) = config.DETECTION_MAX_INSTANCES, config.IMAGE_SHAPE[:2]
    assert out["boxes"].shape == (config.BATCH_SIZE, d, 4)
    for b, count in enumerate(out["num_detections"]):
        assert 0 <= count <= d
        assert np.all(out["class_ids"][b, :count] == 1) and np.all(out["class_ids"][b, count:] == 0)
        assert np.all(np.diff(out["scores"][b, :count]) <= 0)
        boxes, kps = out["boxes"][b, :count], out["keypoints"][b, :count]
        assert np.all(boxes[:, 2:] > boxes[:, :2]) and np.all(boxes >= 0)
        assert np.all(boxes[:, 0::2] <= width) and np.all(boxes[:, 1::2] <= height)
        inside = ((kps[..., 0] >= boxes[:, None, 0]) & (kps[..., 0] <= boxes[:, None, 2])
                  & (kps[..., 1] >= boxes[:, None, 1]) & (kps[..., 1] <= boxes[:, None, 3]))
        assert inside.all()  # decoded joints lie in their box
        assert np.all(out["keypoints"][b, count:] == 0) and np.all(out["masks"][b, count:] == 0)
    assert np.all((out["masks"] >= 0) & (out["masks"] <= 1))


# ------------------------------------------------------------------------------ fit / predict
def test_fit_two_steps_then_predict(tiny):
    config, (training, inference) = tiny
    batch = make_batch(config, seed=3)
    before = [np.array(w) for w in training.get_layer("mrcnn_keypoint_deconv").get_weights()]
    training.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, clipnorm=5.0))
    history = training.fit(batch, batch_size=config.BATCH_SIZE, epochs=2, verbose=0).history
    assert set(history) == set(LOSS_NAMES) | {"loss"}
    assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in history.values())
    assert min(history["keypoint_loss"]) > 0 and min(history["mrcnn_mask_loss"]) > 0
    # "loss" is the LOSS_WEIGHTS-weighted sum of the six (all weights are 1 here).
    np.testing.assert_allclose(history["loss"], np.sum([history[n] for n in LOSS_NAMES], 0),
                               rtol=1e-4)
    after = training.get_layer("mrcnn_keypoint_deconv").get_weights()
    assert not np.allclose(before[0], after[0])
    out = inference.predict_on_batch(image_inputs(batch))  # graph mode, trained weights
    check_inference_outputs({k: np.asarray(v) for k, v in out.items()}, config)
    assert np.all(np.isfinite(out["keypoints"]))


@pytest.mark.tf_only  # the model code is the same on JAX (fit there: the test above); saves
def test_a_non_square_canvas_trains_and_predicts_inside_it():  # the JAX re-run ~1 min
    """IMAGE_CANVAS_SHAPE (64, 128): anchors, targets, ROIAlign and detection all take the
    canvas' height and width; people placed anywhere in the wide canvas are learnt from, and
    every detection stays inside 128 x 64."""
    config = TinyConfig(IMAGE_CANVAS_SHAPE=(64, 128), DETECTION_MIN_CONFIDENCE=0.0)
    training, inference = build_models(config)
    assert tuple(training.get_layer("input_image").output.shape) == (None, 64, 128, 3)
    batch = make_batch(config, seed=5)
    assert batch["input_rpn_match"].shape == (config.BATCH_SIZE, config.NUM_ANCHORS)
    assert (batch["input_rpn_match"] == 1).any()
    training.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, clipnorm=5.0))
    history = training.fit(batch, batch_size=config.BATCH_SIZE, epochs=1, verbose=0).history
    assert all(np.all(np.isfinite(v)) for v in history.values())
    assert history["keypoint_loss"][0] > 0
    out = inference.predict_on_batch(image_inputs(batch))
    out = {k: np.asarray(v) for k, v in out.items()}
    assert out["boxes"].shape == (config.BATCH_SIZE, config.DETECTION_MAX_INSTANCES, 4)
    check_inference_outputs(out, config)
    assert out["num_detections"].min() > 0
    assert out["boxes"][..., 2].max() > 64  # the canvas' width is used, not its height


def test_loss_weights_scale_the_total():
    from mrcnn_kp.model.keypoint_rcnn import KeypointRCNNTrainingModel

    inputs = {n: keras.Input((), name=n) for n in LOSS_NAMES}
    weights = {n: float(i) for i, n in enumerate(LOSS_NAMES)}
    model = KeypointRCNNTrainingModel(inputs=inputs, outputs=dict(inputs), loss_weights=weights)
    y_pred = {n: ops.convert_to_tensor(1.0 + i) for i, n in enumerate(LOSS_NAMES)}
    total = float(ops.convert_to_numpy(model.compute_loss(y_pred=y_pred)))
    assert total == sum(i * (1.0 + i) for i in range(6))
    with pytest.raises(ValueError, match="loss_weights lacks keypoint_loss"):
        KeypointRCNNTrainingModel(inputs=inputs, outputs=dict(inputs),
                                  loss_weights={n: 1.0 for n in LOSS_NAMES[:5]})


# ------------------------------------------------------------------------------ variants
def test_debug_outputs():
    model = build_inference_model(TinyConfig(), debug=True)
    names = list(model.output)
    assert names[:len(INFERENCE_OUTPUTS)] == list(INFERENCE_OUTPUTS)
    for name in ("rpn_rois", "rpn_scores", "rpn_valid", "rpn_probs", "mrcnn_class",
                 "keypoint_logits", "P2", "P6"):
        assert name in names
    assert tuple(model.output["rpn_rois"].shape) == (None, 32, 4)
    assert tuple(model.output["P6"].shape) == (None, 2, 2, 32)


def test_without_mask_head():
    config = TinyConfig(USE_MASK_HEAD=False)
    training, inference = build_models(config)
    assert "masks" not in inference.output
    assert not [layer.name for layer in training.layers
                if layer.name.startswith("mrcnn_mask") and layer.weights]
    mask_loss = training.get_layer("mrcnn_mask_loss")
    assert not mask_loss.enabled
    assert float(ops.convert_to_numpy(mask_loss([np.ones((2, 10), "int32")]))) == 0.0


# ------------------------------------------------------------------------------ sizes
def _count(model, keep):
    return sum(int(np.prod(w.shape)) for layer in model.layers if keep(layer.name)
               for w in layer.weights)


def test_parameter_counts_against_matterport_and_torchvision():
    """ResNet-50-FPN: ours vs the published 59.1 M of torchvision's keypointrcnn_resnet50_fpn.

    Same FPN (3,344,384), box-head convs-as-FC (= fc6/fc7), keypoint head (8 x 512 convs +
    4x4 deconv, 17,838,097). Ours has 736,451 more, all from matterport's layout:
      backbone convs with biases                         +26,560
      backbone batch-norm: gamma, beta (torchvision's FrozenBatchNorm2d holds them as buffers)
      and the moving mean / variance                     +106,240
      RPN: 512-channel shared 3x3 conv and 2 softmax logits per anchor
      (torchvision: 256 channels, 1 sigmoid logit)       +595,459
      box head batch-norms mrcnn_class_bn1/bn2           +8,192
    """
    model = build_inference_model(Config(IMAGE_MAX_DIM=256, IMAGE_MIN_DIM=256))
    total = _count(model, lambda n: True)
    keypoint = _count(model, lambda n: n.startswith("mrcnn_keypoint"))
    mask = _count(model, lambda n: n.startswith("mrcnn_mask"))
    backbone = _count(model, lambda n: not n.startswith(("fpn_", "rpn_", "mrcnn_")))
    assert keypoint == 17_698_816 + 139_281
    assert backbone == 23_454_912 + 26_560 + 106_240
    assert _count(model, lambda n: n.startswith("rpn_")) == 593_935 + 595_459
    # Without the keypoint head, the model is matterport's: 131 layers (its nested rpn_model
    # is our 3 top-level rpn_* layers, hence 133 here), 384 arrays.
    assert total - keypoint == MATTERPORT_R50_2_CLASSES
    weighted = [layer for layer in model.layers
                if layer.weights and not layer.name.startswith("mrcnn_keypoint")]
    assert (len(weighted), sum(len(layer.weights) for layer in weighted)) == (133, 384)
    # Without the mask head, it is the keypoint R-CNN of the published figure (+736,451).
    assert total - mask == 59_873_709 == TORCHVISION_KEYPOINTRCNN_R50_FPN + 736_451



@pytest.mark.tf_only  # dynamic shapes: TensorFlow graphs only
def test_dynamic_heads_run_on_the_detections_only_and_change_nothing(tiny):
    config, (_, static) = tiny
    x = image_inputs(make_batch(config, seed=6))
    scores = np.sort(np.asarray(static(x)["scores"]).reshape(-1))[::-1]
    # A threshold between the 3rd and 4th best score: 3 detections in the batch.
    cut = TinyConfig(DETECTION_MIN_CONFIDENCE=float(scores[2] + scores[3]) / 2)
    reference = build_inference_model(cut)
    dynamic = build_inference_model(cut, dynamic_heads=True)
    reference.set_weights(static.get_weights())
    dynamic.set_weights(static.get_weights())
    want = {k: np.asarray(v) for k, v in reference.predict_on_batch(x).items()}
    got = {k: np.asarray(v) for k, v in dynamic.predict_on_batch(x).items()}
    assert got["num_detections"].sum() == 3
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-4, err_msg=name)
    trim = dynamic.get_layer("mrcnn_detection_trim").output[0]
    heads_rois = keras.Model(dynamic.inputs, trim).predict_on_batch(x)
    assert heads_rois.shape == (2, got["num_detections"].max(), 4)


def test_dynamic_heads_need_tensorflow():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("the error is for the other backends")
    with pytest.raises(ValueError, match="dynamic_heads needs the TensorFlow backend"):
        build_inference_model(TinyConfig(), dynamic_heads=True)


# ------------------------------------------------------------------------------ matterport preset
def tiny_matterport():
    """MatterportConfig with TinyConfig's sizes (the light backbone, 128 px, narrow heads)."""
    from mrcnn_kp.config import MatterportConfig

    sizes = ("BACKBONE", "IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "RPN_ANCHOR_SCALES",
             "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE", "MASK_HEAD_CHANNELS",
             "KEYPOINT_HEAD_CONV_CHANNELS", "KEYPOINT_HEAD_NUM_CONVS",
             "RPN_TRAIN_ANCHORS_PER_IMAGE", "PRE_NMS_LIMIT", "POST_NMS_ROIS_TRAINING",
             "POST_NMS_ROIS_INFERENCE", "TRAIN_ROIS_PER_IMAGE", "MAX_GT_INSTANCES",
             "DETECTION_MAX_INSTANCES", "MINI_MASK_SHAPE")
    return MatterportConfig(NUM_CLASSES=2, IMAGES_PER_GPU=2, DETECTION_MIN_CONFIDENCE=0.0,
                            **{name: getattr(TinyConfig, name) for name in sizes})


def test_matterport_normalisation_is_float64_then_float32():
    from mrcnn_kp.model.keypoint_rcnn import NormalizeImage

    mean = (123.7, 116.8, 103.9)
    image = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    want = (image.astype(np.float64) - np.array(mean)).astype(np.float32)  # mold_image, fed
    got = np.asarray(NormalizeImage(mean, (1, 1, 1), float64=True)(image))
    plain = np.asarray(NormalizeImage(mean, (1, 1, 1))(image))
    if keras.backend.backend() == "tensorflow":
        np.testing.assert_array_equal(got, want)
        assert np.any(plain != want)  # float32(x) - float32(mean): 1 ulp apart in places
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


@pytest.mark.tf_only  # ~2 min of op-by-op compiling on JAX; its layers are tested on JAX apart
def test_matterport_preset_trains_and_keeps_normalised_boxes_inside():
    from mrcnn_kp.model.proposals import NormalizedToPixels

    config = tiny_matterport()
    keras.utils.set_random_seed(0)
    models = build_models(config)
    logits = models.inference.get_layer("mrcnn_class_logits")
    kernel, _ = logits.get_weights()
    logits.set_weights([kernel, np.array([0.0, 20.0], np.float32)])  # person wins the argmax
    batch = make_batch(config, seed=3)
    losses = numpy(models.training(batch, training=False))
    assert all(np.isfinite(losses[name]) for name in LOSS_NAMES)
    out = {k: np.asarray(v) for k, v in
           models.inference.predict_on_batch(image_inputs(batch)).items()}
    assert set(out) == set(INFERENCE_OUTPUTS) | {"normalized_boxes"}
    filled = out["class_ids"] > 0
    assert filled.any() and np.all(out["boxes"][~filled] == 0)
    norm = out["normalized_boxes"]  # matterport's (y1, x1, y2, x2), (side - 1) and far edge + 1
    np.testing.assert_allclose(out["boxes"][filled], np.stack(
        [norm[..., 1] * 127, norm[..., 0] * 127, norm[..., 3] * 127 + 1,
         norm[..., 2] * 127 + 1], -1)[filled], atol=1e-4)
    layer = NormalizedToPixels.from_config(
        models.inference.get_layer("mrcnn_detection_pixels").get_config())
    assert layer.image_shape == (128, 128, 3)
    dynamic = build_inference_model(config, dynamic_heads=True)  # the same outputs
    dynamic.set_weights(models.inference.get_weights())
    got = {k: np.asarray(v) for k, v in dynamic.predict_on_batch(image_inputs(batch)).items()}
    for name, value in out.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-4, err_msg=name)
