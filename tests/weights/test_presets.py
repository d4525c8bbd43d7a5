"""mrcnn_kp.weights.presets: named weights fetched from a local mirror (file:// through
$MRCNN_KP_WEIGHTS_URL, or an unreachable 127.0.0.1 port), checked, converted once and cached;
the commands' --weights NAME and MaskRCNN.from_preset.

The real entries are 226-250 MB files on the internet: their download is not run here. The
conversion paths run on small stand-ins registered for the test: "tiny-test" (a TinyConfig
.weights.h5, the "keras" path) and, in one test, a torchvision-layout state_dict with
torchvision's key set and narrow heads (the "torchvision" path, ResNet-50 sized: ~95 MB).
"""
import dataclasses
import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrcnn_kp import cli
from mrcnn_kp.weights import presets
from mrcnn_kp.config import TinyConfig, TorchvisionKeypointConfig
from mrcnn_kp.utils import get_logger
from mrcnn_kp.weights.presets import NamedWeightsError, WeightsPreset, fetch_weights

get_logger()  # bind the package logger's handler to the real stderr before capsys runs

TINY = "tiny-test"


def sha256_file(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/models"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A folder (the mirror) holding tiny_coco.weights.h5: TinyConfig weights, seeded."""
    import keras

    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.weights import save_weights

    folder = tmp_path_factory.mktemp("mirror")
    keras.utils.set_random_seed(3)
    save_weights(build_inference_model(TinyConfig()), folder / "tiny_coco.weights.h5")
    return folder


def tiny_entry(mirror, **changes):
    values = dict(name=TINY, summary="TinyConfig weights for the tests",
                  filename="tiny_coco.weights.h5", url="https://example.invalid/tiny.h5",
                  page="https://example.invalid", sha256=sha256_file(
                      mirror / "tiny_coco.weights.h5"),
                  source_format="keras", make_config=TinyConfig)
    values.update(changes)
    return WeightsPreset(**values)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("MRCNN_KP_CACHE", str(root))
    for name in ("MRCNN_KP_WEIGHTS_URL", "MRCNN_KP_WEIGHTS_SHA256", "MRCNN_KP_ALLOW_UNVERIFIED"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture(scope="module")
def converted(mirror, tmp_path_factory):
    """The module's cache after one fetch of "tiny-test" from the mirror (shared, read-only)."""
    root = tmp_path_factory.mktemp("shared_cache")
    messages = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MRCNN_KP_CACHE", str(root))
        patch.setenv("MRCNN_KP_WEIGHTS_URL", mirror.as_uri())
        patch.setitem(presets.WEIGHTS_PRESETS, TINY, tiny_entry(mirror))
        path = fetch_weights(TINY, progress=False, echo=messages.append)
    return root, path, messages


@pytest.fixture
def use_converted(converted, mirror, monkeypatch):
    """Commands see the converted cache, with the network out of reach."""
    root, path, _ = converted
    monkeypatch.setenv("MRCNN_KP_CACHE", str(root))
    monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", closed_port_url())
    monkeypatch.setitem(presets.WEIGHTS_PRESETS, TINY, tiny_entry(mirror))
    return path


# ------------------------------------------------------------------------------ the registry
def test_registry_records_the_published_files():
    registry = presets.WEIGHTS_PRESETS
    tv = registry["torchvision-coco"]
    assert tv.sha256 == "fc266e953d2b302cdcbb9ae66f71f6b0d4649928bf02dc573961e361e4918926"
    assert tv.url == ("https://download.pytorch.org/models/"
                      "keypointrcnn_resnet50_fpn_coco-fc266e95.pth")
    for name in ("torchvision-coco", "torchvision-coco-legacy"):  # torchvision's naming rule:
        entry = registry[name]                                     # name-<sha256[:8]>.pth
        assert entry.url.endswith("/" + entry.filename)
        assert entry.filename.rsplit("-", 1)[1] == entry.sha256[:8] + ".pth"
        assert entry.make_config().LAYOUT == "torchvision"
    assert registry["matterport-coco"].url.endswith("/v2.0/mask_rcnn_coco.h5")
    assert registry["matterport-coco"].make_config().NUM_CLASSES == 81
    humanpose = registry["humanpose-coco"]
    assert humanpose.url is None and humanpose.sha256 is None
    assert humanpose.make_config().KEYPOINT_HEAD == "humanpose"
    assert {p.source_format for p in registry.values()} <= set(presets.SOURCE_FORMATS)
    assert "matterport-coco [no hash recorded]" in presets.describe()


def test_an_entry_without_a_hash_is_refused_unless_given_or_allowed(cache):
    with pytest.raises(NamedWeightsError) as caught:
        fetch_weights("matterport-coco")
    message = str(caught.value)
    assert "no sha256 is recorded for mask_rcnn_coco.h5" in message and "\n" not in message
    assert "--sha256 HEX" in message and "--allow-unverified" in message
    # allowed, but the humanpose file has no recorded address: the release page is named
    with pytest.raises(NamedWeightsError) as caught:
        fetch_weights("humanpose-coco", allow_unverified=True)
    message = str(caught.value)
    assert "address of mask_rcnn_coco_humanpose.h5 is not recorded" in message
    assert "github.com/Superlee506/Mask_RCNN_Humanpose/releases" in message
    assert "MRCNN_KP_WEIGHTS_URL" in message
    with pytest.raises(NamedWeightsError, match="contradicts the published"):
        fetch_weights("torchvision-coco", sha256="ab" * 32)
    with pytest.raises(NamedWeightsError, match="unknown named weights 'nope'"):
        fetch_weights("nope")
    assert cache_files(cache) == []


def test_offline_gives_one_line_naming_the_file_url_and_manual_route(cache, monkeypatch):
    base = closed_port_url()
    monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", base)
    with pytest.raises(NamedWeightsError) as caught:
        fetch_weights("torchvision-coco", progress=False, echo=lambda *_: None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot download keypointrcnn_resnet50_fpn_coco-fc266e95.pth "
                              f"from {base}/keypointrcnn_resnet50_fpn_coco-fc266e95.pth: ")
    assert "mrcnn-kp convert --from torchvision keypointrcnn_resnet50_fpn_coco-fc266e95.pth" \
        in message
    assert str(cache / "downloads" / "keypointrcnn_resnet50_fpn_coco-fc266e95.pth") in message
    assert cache_files(cache) == []


def test_a_wrong_hash_is_refused_and_nothing_is_cached(cache, mirror, monkeypatch):
    monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", mirror.as_uri())
    monkeypatch.setitem(presets.WEIGHTS_PRESETS, TINY,
                        tiny_entry(mirror, sha256="0123abcd" * 8))
    with pytest.raises(NamedWeightsError, match=r"expected 0123abcd.*refused, nothing was kept"):
        fetch_weights(TINY, progress=False, echo=lambda *_: None)
    assert cache_files(cache) == []


def test_an_interrupted_download_keeps_nothing(cache, mirror, monkeypatch):
    """A server on 127.0.0.1 announces the whole file, sends half of it and hangs up."""
    import http.server
    import threading

    body = (mirror / "tiny_coco.weights.h5").read_bytes()

    class HalfHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HalfHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", f"http://127.0.0.1:{httpd.server_port}/m")
        monkeypatch.setitem(presets.WEIGHTS_PRESETS, TINY, tiny_entry(mirror))
        with pytest.raises(NamedWeightsError) as caught:
            fetch_weights(TINY, progress=False, echo=lambda *_: None)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    message = str(caught.value)
    assert "\n" not in message and "cannot download tiny_coco.weights.h5 from http://" in message
    assert f"of {len(body) / 1e6:.1f} MB" in message
    assert cache_files(cache) == []


# ------------------------------------------------------------------------------ first and later use
def test_first_use_converts_and_caches_with_the_config(converted, mirror):
    from mrcnn_kp.weights import read_config, read_weight_file

    root, path, messages = converted
    assert path == root / "weights" / TINY / f"{TINY}.weights.h5"
    assert cache_files(root) == ["downloads/tiny_coco.weights.h5",
                                 f"weights/{TINY}/config.json", f"weights/{TINY}/source.json",
                                 f"weights/{TINY}/{TINY}.weights.h5"]
    source = json.loads((path.parent / "source.json").read_text())
    assert source["sha256"] == sha256_file(mirror / "tiny_coco.weights.h5")
    assert source["verified"] is True and source["cache_format"] == presets.CACHE_FORMAT
    assert source["downloaded_from"] == (mirror / "tiny_coco.weights.h5").as_uri()
    assert source["published_at"] == "https://example.invalid/tiny.h5"
    assert read_config(path).NAME == "tiny"
    assert json.loads((path.parent / "config.json").read_text())["NAME"] == "tiny"
    assert any(m.startswith(f"{TINY}: downloading file:") for m in messages)
    ours = {u.name: u.flat for u in read_weight_file(path)[1]}
    theirs = {u.name: u.flat for u in read_weight_file(mirror / "tiny_coco.weights.h5")[1]}
    assert ours.keys() == theirs.keys()
    np.testing.assert_array_equal(ours["rpn_class_raw"][0], theirs["rpn_class_raw"][0])


def test_a_later_use_reads_the_cache_without_downloading(converted, use_converted):
    messages = []
    assert fetch_weights(TINY, echo=messages.append) == use_converted  # network unreachable
    assert messages == []


def test_an_unfinished_cache_is_converted_again_from_the_kept_download(
        converted, mirror, cache, monkeypatch):
    import shutil

    shutil.copytree(converted[0], cache)
    (cache / "weights" / TINY / "source.json").unlink()  # as if killed while converting
    monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", closed_port_url())
    monkeypatch.setitem(presets.WEIGHTS_PRESETS, TINY,
                        tiny_entry(mirror, sha256=None))
    messages = []
    with pytest.raises(NamedWeightsError, match="no sha256 is recorded"):
        fetch_weights(TINY, echo=messages.append)
    path = fetch_weights(TINY, allow_unverified=True, echo=messages.append)  # no network needed
    digest = sha256_file(mirror / "tiny_coco.weights.h5")
    assert messages[0] == f"{TINY}: using {cache / 'downloads' / 'tiny_coco.weights.h5'}"
    assert f"sha256 of tiny_coco.weights.h5 is {digest} (not verified" in messages[1]
    assert f"--sha256 {digest}" in messages[1]
    source = json.loads((path.parent / "source.json").read_text())
    assert source["verified"] is False and source["downloaded_from"] is None


# ------------------------------------------------------------------------------ commands and API
def test_predict_with_named_weights_needs_no_config(use_converted, tmp_path, capsys,
                                                    monkeypatch):
    """The command resolves the name to the cached file and builds the stored config; the
    network stays unreachable. The model is a stand-in (tests/commands/test_predict_evaluate);
    loading the cached weights into the real model is test_from_preset_... below."""
    from mrcnn_kp.inference import predictor as predictor_lib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "commands"))
    from test_predict_evaluate import OnePersonModel

    built = []

    def load(config, weights=None):
        built.append((config, weights))
        return predictor_lib.Predictor(OnePersonModel(config), config), None

    monkeypatch.setattr(predictor_lib, "load_predictor", load)
    image = tmp_path / "person.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 120, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    status = cli.main(["predict", str(image), "--weights", TINY, "--output", str(out),
                       "--no-pictures"])
    assert status == 0
    assert f"weights: {use_converted}" in capsys.readouterr().out
    (config, weights), = built
    assert weights == str(use_converted) and config.NAME == "tiny"
    assert config.TOP_DOWN_PYRAMID_SIZE == TinyConfig.TOP_DOWN_PYRAMID_SIZE
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 1 and len(records[0]["keypoints"]) == 51


def test_commands_report_a_refused_download_in_one_line(cache, tmp_path, capsys):
    image = tmp_path / "person.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    status = cli.main(["predict", str(image), "--weights", "matterport-coco",
                       "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1].startswith("mrcnn-kp predict: error: matterport-coco: no sha256 is recorded")
    with pytest.raises(SystemExit, match="mrcnn-kp train: error: matterport-coco: no sha256"):
        cli.main(["train", "--synthetic", "--weights", "matterport-coco"])
    assert cli.main(["convert", "matterport-coco", str(tmp_path / "x.weights.h5")]) == 1
    assert "no sha256 is recorded" in capsys.readouterr().err
    assert cache_files(cache) == []


def test_from_preset_and_train_take_the_stored_config(use_converted):
    from mrcnn_kp.commands import train
    from mrcnn_kp.maskrcnn import MaskRCNN

    from mrcnn_kp.weights import read_weight_file

    model = MaskRCNN.from_preset(TINY, DETECTION_MIN_CONFIDENCE=0.25)
    assert model.config.NAME == "tiny" and model.config.DETECTION_MIN_CONFIDENCE == 0.25
    saved = {u.name: u.flat for u in read_weight_file(use_converted)[1]}
    for name in ("rpn_class_raw", "mrcnn_keypoint_deconv"):  # the cached weights are loaded
        for variable, array in zip(model.keras_model.get_layer(name).weights, saved[name]):
            np.testing.assert_array_equal(np.asarray(variable), array)
    parser = cli.build_parser()
    config = train.build_config(parser.parse_args(["train", "--weights", TINY]))
    assert config.NAME == "tiny"
    assert train.build_config(parser.parse_args(["train"])).NAME == "coco_keypoints"
    with pytest.raises(NamedWeightsError, match="neither named weights"):
        MaskRCNN.from_preset("no-such-weights")


def test_convert_writes_named_weights_to_a_file_of_ones_own(use_converted, tmp_path, capsys):
    from mrcnn_kp.weights import read_config

    out = tmp_path / "mine.weights.h5"
    assert cli.main(["convert", TINY, str(out)]) == 0
    assert read_config(out).NAME == "tiny"
    assert "loaded" in capsys.readouterr().out


# ------------------------------------------------------------------------------ torchvision files
@pytest.mark.slow  # a ResNet-50-sized state_dict (95 MB) written, hashed and converted: ~15 s
def test_a_torchvision_file_is_converted_with_the_torchvision_converter(cache, tmp_path,
                                                                         monkeypatch):
    torch = pytest.importorskip("torch", reason="torch (test extra) writes the .pth")
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.weights.torchvision import torchvision_weight_map
    from mrcnn_kp.weights import read_config, read_weight_file

    config = TorchvisionKeypointConfig(
        IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, IMAGE_RESIZE_MAX_SIDE=128,
        TOP_DOWN_PYRAMID_SIZE=16, RPN_CONV_CHANNELS=16, FPN_CLASSIF_FC_LAYERS_SIZE=32,
        KEYPOINT_HEAD_CONV_CHANNELS=16, KEYPOINT_HEAD_NUM_CONVS=1, PRE_NMS_LIMIT=64,
        POST_NMS_ROIS_INFERENCE=16, DETECTION_MAX_INSTANCES=4)
    model = build_inference_model(config)
    rng = np.random.default_rng(0)
    state = {}
    for row in torchvision_weight_map(config):  # torchvision's keys, in torch's layouts
        shape = tuple({w.name.split("/")[-1]: w for w in model.get_layer(row.layer).weights}[
            row.weight].shape)
        if row.layout in ("conv", "conv_delta", "deconv"):
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif row.layout == "fc_conv":
            shape = (shape[3], shape[0] * shape[1] * shape[2])
        elif row.layout in ("dense", "dense_delta"):
            shape = shape[::-1]
        value = rng.standard_normal(shape).astype(np.float32)
        state[row.key] = torch.from_numpy(np.abs(value) + 1 if "running_var" in row.key
                                          else value)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    torch.save(state, mirror / "kp_tiny-0000.pth")
    monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", mirror.as_uri())
    monkeypatch.setitem(presets.WEIGHTS_PRESETS, "tv-tiny", dataclasses.replace(
        presets.WEIGHTS_PRESETS["torchvision-coco"], name="tv-tiny",
        filename="kp_tiny-0000.pth", sha256=sha256_file(mirror / "kp_tiny-0000.pth")[:8],
        make_config=lambda: config))
    messages = []
    path = fetch_weights("tv-tiny", progress=False, echo=messages.append)
    assert any("299 tensors loaded" in m and "0 tensors not used" in m for m in messages)
    assert read_config(path).LAYOUT == "torchvision"
    units = {u.name: u.flat for u in read_weight_file(path)[1]}
    np.testing.assert_array_equal(units["rpn_class_raw"][1],  # the objectness bias, as it was
                                  state["rpn.head.cls_logits.bias"].numpy())
    np.testing.assert_array_equal(units["conv1"][0],
                                  state["backbone.body.conv1.weight"].numpy().transpose(2, 3, 1, 0))
    # `convert --from torchvision NAME` converts the kept .pth into a config of one's own
    (tmp_path / "tv_tiny.json").write_text(config.copy(DETECTION_MIN_CONFIDENCE=0.5).to_json())
    monkeypatch.setenv("MRCNN_KP_WEIGHTS_URL", closed_port_url())
    out = tmp_path / "mine.weights.h5"
    assert cli.main(["convert", "--from", "torchvision", "tv-tiny", str(out),
                     "--config", str(tmp_path / "tv_tiny.json")]) == 0
    assert read_config(out).DETECTION_MIN_CONFIDENCE == 0.5
    assert cli.main(["convert", "--from", "torchvision", "matterport-coco", str(out)]) == 1
