"""FLOP counts: each layer kind by hand, published counts of known networks, and torchvision's
own counter (torch.utils.flop_counter) on the same network, part by part."""
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from mrcnn_kp.config import TinyConfig, TorchvisionKeypointConfig
from mrcnn_kp.model.flops import count_flops, layer_flops, part_of
from mrcnn_kp.model.heads import WholeInputConv2D
from mrcnn_kp.model.keypoint_rcnn import build_inference_model, build_training_model

TESTS = Path(__file__).resolve().parents[1]


def _count(layer, input_shape):
    inputs = keras.Input(batch_shape=input_shape)
    return count_flops(keras.Model(inputs, layer(inputs)))["total"]


def test_each_layer_kind_counts_two_flops_per_multiply_add():
    # 3x3 conv, 8 -> 16 channels, stride 2 on 10x12: 5 x 6 outputs, each 3*3*8 MACs per filter
    assert _count(keras.layers.Conv2D(16, 3, strides=2, padding="same"), (2, 10, 12, 8)) == \
        2 * 2 * 5 * 6 * 3 * 3 * 8 * 16
    assert _count(keras.layers.Conv2D(16, 3, groups=4, padding="same"), (1, 6, 6, 8)) == \
        2 * 6 * 6 * 3 * 3 * 2 * 16
    assert _count(keras.layers.DepthwiseConv2D(3, padding="same"), (1, 6, 6, 8)) == \
        2 * 6 * 6 * 3 * 3 * 8
    assert _count(keras.layers.SeparableConv2D(16, 3, padding="same"), (1, 6, 6, 8)) == \
        2 * 6 * 6 * (3 * 3 * 8 + 8 * 16)
    # a transposed conv scatters each input pixel over its kernel
    assert _count(keras.layers.Conv2DTranspose(17, 4, strides=2, padding="same"),
                  (3, 14, 14, 32)) == 2 * 3 * 14 * 14 * 4 * 4 * 32 * 17
    assert _count(keras.layers.Dense(10), (4, 5, 7)) == 2 * 4 * 5 * 7 * 10
    assert _count(WholeInputConv2D(64, 7), (9, 7, 7, 16)) == 2 * 9 * 7 * 7 * 16 * 64
    assert _count(keras.layers.TimeDistributed(keras.layers.Conv2D(4, 1)), (2, 5, 3, 3, 8)) == \
        2 * 2 * 5 * 3 * 3 * 8 * 4
    assert _count(keras.layers.ReLU(), (1, 4, 4, 8)) == 0
    assert layer_flops(keras.layers.Add(), (1, 4), (1, 4)) == 0


def test_a_shared_layer_counts_at_each_call_and_the_batch_multiplies():
    conv = keras.layers.Conv2D(4, 3, padding="same", name="rpn_conv_shared")
    inputs = [keras.Input((16, 16, 8)), keras.Input((8, 8, 8))]
    model = keras.Model(inputs, [conv(x) for x in inputs])
    per_image = 2 * (16 * 16 + 8 * 8) * 3 * 3 * 8 * 4
    assert count_flops(model)["by_layer"] == {"rpn_conv_shared": per_image}
    assert count_flops(model, batch=3)["total"] == 3 * per_image
    assert count_flops(model)["by_part"] == {"rpn": per_image}


def test_open_spatial_shapes_are_refused():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c")(inputs))
    with pytest.raises(ValueError, match="c: shape .* is not static"):
        count_flops(model)


@pytest.mark.tf_only  # counting is shape inference: once is enough (JAX: benchmark smoke test)
def test_published_counts_of_resnet50_and_mobilenet_v2():
    # He et al. 2016, Table 1: ResNet-50 3.8e9 FLOPs (multiply-adds) at 224 x 224 (Keras'
    # ResNet50 is that v1 network); Sandler et al. 2018: MobileNetV2 1.0 300 M multiply-adds
    resnet = count_flops(keras.applications.ResNet50(weights=None))["total"] / 2
    assert resnet == pytest.approx(3.86e9, rel=0.005)
    mobilenet = count_flops(keras.applications.MobileNetV2(weights=None))["total"] / 2
    assert mobilenet == pytest.approx(300e6, rel=0.01)


def test_parts_follow_the_layer_names():
    assert [part_of(n) for n in ("res2a_branch2a", "bn_conv1", "lite0_stage2_expand", "fpn_p2",
                                 "rpn_conv_shared", "mrcnn_class_conv1", "mrcnn_bbox_fc",
                                 "mrcnn_mask_deconv", "mrcnn_keypoint_conv3",
                                 "mrcnn_keypoint_mask_deconv")] == \
        ["backbone", "backbone", "backbone", "fpn", "rpn", "box_head", "box_head", "mask_head",
         "keypoint_head", "keypoint_head"]


def test_keypoint_head_flops_grow_with_the_slots_and_training_counts_its_rois():
    flops = {}
    for slots in (2, 6):
        model = build_inference_model(TinyConfig(DETECTION_MAX_INSTANCES=slots))
        flops[slots] = count_flops(model)["by_part"]
    per_person = (flops[6]["keypoint_head"] - flops[2]["keypoint_head"]) / 4
    assert per_person > 0 and flops[2]["keypoint_head"] == 2 * per_person
    assert flops[2]["backbone"] == flops[6]["backbone"]
    assert flops[2]["box_head"] == flops[6]["box_head"]
    config = TinyConfig()
    training = count_flops(build_training_model(config), batch=config.IMAGES_PER_GPU)
    from mrcnn_kp.model.roi_targets import keypoint_slots

    assert training["by_part"]["keypoint_head"] == \
        per_person * keypoint_slots(config) * config.IMAGES_PER_GPU


@pytest.mark.tf_only  # as above; it also starts the torchvision venv
def test_equals_torchvisions_flop_counter_on_the_same_network(tmp_path):
    """Our count of our torchvision-layout model (ResNet-50 v1.5 FPN, TwoMLPHead, 8 x 512
    keypoint head) against torch.utils.flop_counter on keypointrcnn_resnet50_fpn, one 256 x 320
    image (no resizing, no padding on either side): equal part by part, the heads per ROI."""
    sys.path.insert(0, str(TESTS))
    from torchvision_venv import torchvision_python

    out = tmp_path / "tv_flops.json"
    proc = subprocess.run(
        [torchvision_python(), str(TESTS / "torchvision_reference.py"), str(out), "--flops",
         "--shapes", "256x320", "--min-size", "256", "--max-size", "320", "--pre-nms", "500",
         "--post-nms", "300", "--detections", "8", "--score-thresh", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(out.read_text())
    config = TorchvisionKeypointConfig(
        IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=320, IMAGE_RESIZE_MAX_SIDE=320,
        IMAGE_CANVAS_SHAPE=(256, 320), PRE_NMS_LIMIT=500, POST_NMS_ROIS_INFERENCE=300,
        DETECTION_MAX_INSTANCES=8)
    ours = count_flops(build_inference_model(config))["by_part"]
    for part in ("backbone", "fpn", "rpn"):
        assert ours[part] == theirs[part], part
    np.testing.assert_allclose(ours["box_head"] / config.POST_NMS_ROIS_INFERENCE,
                               theirs["box_head"] / theirs["box_head_rois"], rtol=1e-6)
    np.testing.assert_allclose(ours["keypoint_head"] / config.DETECTION_MAX_INSTANCES,
                               theirs["keypoint_head"] / theirs["keypoint_head_rois"], rtol=1e-6)


def test_backward_counts_weight_gradients_of_trainable_layers_and_input_gradients_after_them():
    inputs = keras.Input((8, 8, 4))
    frozen_first = keras.layers.Conv2D(4, 3, padding="same", name="a")
    trained = keras.layers.Conv2D(4, 3, padding="same", name="b")
    frozen_last = keras.layers.Conv2D(4, 3, padding="same", name="c")
    x = frozen_last(keras.layers.ReLU()(trained(frozen_first(inputs))))
    model = keras.Model(inputs, x)
    frozen_first.trainable = frozen_last.trainable = False
    one = 2 * 8 * 8 * 3 * 3 * 4 * 4
    flops = count_flops(model)
    assert flops["total"] == 3 * one
    # a: nothing (frozen, nothing trainable before it); b: weight gradient only (its input
    # depends on no trainable weight); c: input gradient only (frozen, after b)
    assert flops["backward"] == 2 * one
    trained.trainable = False
    assert count_flops(model)["backward"] == 0
    frozen_first.trainable = trained.trainable = frozen_last.trainable = True
    assert count_flops(model)["backward"] == 5 * one  # all but a's input gradient


def test_nested_sequential_and_time_distributed_layers_are_counted():
    inner = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(8, 3, name="s_conv"),
                              keras.layers.BatchNormalization()])
    inputs = keras.Input((3, 6, 6, 4))
    x = keras.layers.TimeDistributed(keras.layers.BatchNormalization(), name="td_bn")(inputs)
    x = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 1), name="td_conv")(x)
    out = inner(keras.layers.Reshape((6, 6, 4))(x[:, 0]))
    flops = count_flops(keras.Model(inputs, out))["by_layer"]
    assert flops == {"td_conv": 2 * 3 * 6 * 6 * 4 * 4, "s_conv": 2 * 4 * 4 * 3 * 3 * 4 * 8}
