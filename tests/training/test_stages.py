import re

import pytest

from mrcnn_kp.training.stages import HEADS_REGEX, layers_regex, set_trainable
from standin_models import build_standin_training_model, standin_config

HEADS = ["fpn_c5p5", "rpn_conv_shared", "rpn_class_raw", "mrcnn_class_logits",
         "mrcnn_mask_conv1", "mrcnn_keypoint_mask_conv1"]
BATCH_NORMS = ["bn_conv1", "bn2a_branch2a", "bn3a_branch2a", "bn4a_branch2a", "bn5a_branch2a",
               "mrcnn_class_bn1"]
EXPECTED = {
    "heads": HEADS,
    "5+": ["res5a_branch2a"] + HEADS,
    "4+": ["res4a_branch2a", "res5a_branch2a"] + HEADS,
    "3+": ["res3a_branch2a", "res4a_branch2a", "res5a_branch2a"] + HEADS,
    "all": ["conv1", "res2a_branch2a", "res3a_branch2a", "res4a_branch2a", "res5a_branch2a"]
           + HEADS,
    r"mrcnn\_keypoint.*": ["mrcnn_keypoint_mask_conv1"],
}


@pytest.fixture(scope="module")
def model_and_config():
    config = standin_config()
    return build_standin_training_model(config), config


def find_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return model.get_layer("rpn_model").get_layer(name)


def weights_of(model, names):
    """Every trainable-kind weight (not moving statistics) of the named layers."""
    return {id(w) for n in names for w in find_layer(model, n).weights
            if "moving" not in w.name}


@pytest.mark.parametrize("layers", list(EXPECTED))
def test_each_stage_trains_exactly_its_layers(model_and_config, layers):
    model, config = model_and_config
    trained = set_trainable(model, layers, config)
    assert sorted(trained) == sorted(EXPECTED[layers])
    assert {id(w) for w in model.trainable_weights} == weights_of(model, EXPECTED[layers])


def test_batch_norm_trains_only_with_train_bn(model_and_config):
    model, config = model_and_config
    trained = set_trainable(model, "all", config.copy(TRAIN_BN=True))
    assert sorted(trained) == sorted(EXPECTED["all"] + BATCH_NORMS)
    names = {w.path for w in model.trainable_weights}
    assert "bn4a_branch2a/gamma" in names and "bn4a_branch2a/moving_mean" not in names
    set_trainable(model, "all", config)
    assert not any(w.path.startswith("bn") for w in model.trainable_weights)


def test_stage_regexes_follow_the_backbone():
    lite = standin_config(BACKBONE="efficientnet_lite0")
    pattern = re.compile(layers_regex("4+", lite))
    assert pattern.fullmatch("lite0_stage4_block9_project_conv")
    assert pattern.fullmatch("lite0_stage5_head_conv")
    assert not pattern.fullmatch("lite0_stage3_block4_project_conv")
    assert pattern.fullmatch("mrcnn_keypoint_mask_conv1")
    resnet = re.compile(layers_regex("5+", standin_config()))
    assert resnet.fullmatch("res5c_branch2c") and resnet.fullmatch("bn5a_branch1")
    assert not resnet.fullmatch("res4f_branch2c")
    assert layers_regex("heads", lite) == HEADS_REGEX and layers_regex("all", lite) == ".*"


def test_a_bad_regex_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"layers must be one of heads, 3\+, 4\+, 5\+, all"):
        layers_regex("(unclosed", standin_config())
