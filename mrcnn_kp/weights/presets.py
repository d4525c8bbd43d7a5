"""Named pretrained weights: downloaded on first use, checked, converted once, cached.

    path = fetch_weights("torchvision-coco")      # the converted .weights.h5 (config inside)
    model = MaskRCNN.from_preset("torchvision-coco")
    mrcnn-kp predict photo.jpg --weights torchvision-coco

Each name in `WEIGHTS_PRESETS` is a published file (its URL, its sha256 where it is known) and
how it becomes our format: "torchvision" files go through mrcnn_kp.weights.torchvision, legacy
Keras-2 "keras" files are loaded by layer name into the entry's config and saved. The first use
downloads the file (mrcnn_kp.download: streamed, hashed, renamed into place only when complete
and matching), converts it, and caches, under cache_root() ($MRCNN_KP_CACHE or
~/.cache/mrcnn_kp):

    downloads/<published file name>                 the file as published
    weights/<name>/<name>.weights.h5                 the converted weights, config stored inside
    weights/<name>/config.json, source.json          the config; what was downloaded, its sha256

source.json is written last: a folder without it is an unfinished conversion and is redone.
Later uses read the cache and need no network, no flag and no --config.

An entry without a recorded sha256 is refused unless the caller gives the hash (`sha256=`,
--sha256, $MRCNN_KP_WEIGHTS_SHA256) or allows an unverified download (`allow_unverified=True`,
--allow-unverified, $MRCNN_KP_ALLOW_UNVERIFIED=1), which prints the hash it computed.
$MRCNN_KP_WEIGHTS_URL names a mirror: a base URL (http(s):// or file://) holding the files
under their published names; it replaces every entry's address.
"""
import collections
import dataclasses
import json
import os
import re

from mrcnn_kp.download import DownloadError, check_sha256, download, sha256_of
from mrcnn_kp.download import cache_root  # noqa: F401  (re-exported: where the cache lives)
from mrcnn_kp.weights.torchvision import TORCHVISION_COCO_V1_BN_EPSILON, TORCHVISION_COCO_V1_SHA256

CACHE_FORMAT = 1  # bump when a conversion changes, so older caches are converted again
URL_ENV = "MRCNN_KP_WEIGHTS_URL"
SHA256_ENV = "MRCNN_KP_WEIGHTS_SHA256"
ALLOW_UNVERIFIED_ENV = "MRCNN_KP_ALLOW_UNVERIFIED"
SOURCE_FORMATS = ("torchvision", "keras")


# fetch_source's answer: the local file, its sha256, whether that was checked against a known
# hash, and the URL it was downloaded from (None: it was already in downloads/)
Source = collections.namedtuple("Source", ["path", "sha256", "verified", "url"])


class NamedWeightsError(ValueError):
    """Named weights that are unknown, refused, or could not be fetched or converted."""


@dataclasses.dataclass(frozen=True)
class WeightsPreset:
    """One published weights file and how it becomes a `.weights.h5` of ours.

    sha256: the file's full sha256, a prefix of at least 8 hex digits (what torchvision puts in
        its file names, the check torch.hub makes), or None when no hash is recorded.
    url: the file's address; None when only the publisher's page is known.
    make_config: () -> the Config of the converted model.
    expected_absent: regular expressions of model layers the file is known not to have (they
        keep their initial values); any other layer the file lacks fails the conversion.
    """

    name: str
    summary: str
    filename: str
    url: object
    page: str
    sha256: object
    source_format: str
    make_config: object
    expected_absent: tuple = ()
    infer_backbone: bool = False  # a legacy .h5 of ResNet-50 or -101: read it from the file


def _torchvision_config():
    from mrcnn_kp.config import TorchvisionKeypointConfig

    return TorchvisionKeypointConfig()


def _torchvision_coco_v1_config():
    """As torchvision runs COCO_V1: batch-norm epsilon 0 (its overwrite_eps)."""
    from mrcnn_kp.config import TorchvisionKeypointConfig

    return TorchvisionKeypointConfig(BACKBONE_BN_EPSILON=TORCHVISION_COCO_V1_BN_EPSILON)


def _matterport_coco_config():
    from mrcnn_kp.config import MatterportConfig

    return MatterportConfig()


def _humanpose_config():
    from mrcnn_kp.config import MatterportConfig

    return MatterportConfig(NUM_CLASSES=2, KEYPOINT_HEAD="humanpose")



WEIGHTS_PRESETS = {
    "torchvision-coco": WeightsPreset(
        name="torchvision-coco",
        summary="torchvision's keypointrcnn_resnet50_fpn trained on COCO person keypoints "
                "(KeypointRCNN_ResNet50_FPN_Weights.COCO_V1: 65.0 keypoint AP, 54.6 box AP on "
                "val2017), converted for --config torchvision",
        filename="keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        url="https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        page="https://pytorch.org/vision/stable/models/keypoint_rcnn.html",
        sha256=TORCHVISION_COCO_V1_SHA256,
        source_format="torchvision",
        make_config=_torchvision_coco_v1_config),
    "torchvision-coco-legacy": WeightsPreset(
        name="torchvision-coco-legacy",
        summary="torchvision's first COCO keypoint weights (KeypointRCNN_ResNet50_FPN_Weights."
                "COCO_LEGACY: 61.1 keypoint AP, 50.6 box AP), converted for --config torchvision; "
                "checked against the sha256 prefix in its file name",
        filename="keypointrcnn_resnet50_fpn_coco-9f466800.pth",
        url="https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-9f466800.pth",
        page="https://pytorch.org/vision/stable/models/keypoint_rcnn.html",
        sha256="9f466800",
        source_format="torchvision",
        make_config=_torchvision_config),
    "matterport-coco": WeightsPreset(
        name="matterport-coco",
        summary="matterport's Mask_RCNN COCO weights (ResNet-101, 81 classes, boxes and masks, "
                "no keypoint head: keypoints stay random), for --config matterport",
        filename="mask_rcnn_coco.h5",
        url="https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5",
        page="https://github.com/matterport/Mask_RCNN/releases/tag/v2.0",
        sha256=None,
        source_format="keras",
        make_config=_matterport_coco_config,
        expected_absent=(r"mrcnn_keypoint_.*",)),
    "humanpose-coco": WeightsPreset(
        name="humanpose-coco",
        summary="Mask_RCNN_Humanpose's COCO person-keypoint weights (matterport layout, 2 "
                "classes, its 8-conv keypoint head), MatterportConfig(NUM_CLASSES=2, "
                "KEYPOINT_HEAD='humanpose') with the file's ResNet depth",
        filename="mask_rcnn_coco_humanpose.h5",
        url=None,
        page="https://github.com/Superlee506/Mask_RCNN_Humanpose/releases",
        sha256=None,
        source_format="keras",
        make_config=_humanpose_config,
        infer_backbone=True),
}


def names():
    return tuple(WEIGHTS_PRESETS)


def is_named(spec):
    """True when `spec` names an entry (and is not an existing file of that name)."""
    return isinstance(spec, str) and spec in WEIGHTS_PRESETS and not os.path.exists(spec)


def get_preset(name):
    try:
        return WEIGHTS_PRESETS[name]
    except KeyError:
        raise NamedWeightsError(f"unknown named weights {name!r}; known: "
                                f"{', '.join(WEIGHTS_PRESETS)}") from None


def weights_dir(name):
    return cache_root() / "weights" / name


def download_path(preset):
    return cache_root() / "downloads" / preset.filename


def cached_weights(name):
    """The converted file of `name` when the cache holds a complete one, else None."""
    folder = weights_dir(name)
    path = folder / f"{name}.weights.h5"
    try:
        with open(folder / "source.json", encoding="utf-8") as f:
            source = json.load(f)
    except (OSError, ValueError):
        return None
    if source.get("cache_format") != CACHE_FORMAT or not path.is_file():
        return None
    return path


def source_url(preset):
    """The URL to fetch: $MRCNN_KP_WEIGHTS_URL/<file name> when set, else the entry's."""
    base = os.environ.get(URL_ENV, "").strip()
    if base:
        return base.rstrip("/") + "/" + preset.filename
    return preset.url


def manual_route(preset):
    """What to do by hand when the file cannot be fetched (one sentence)."""
    where = preset.url or f"the release page {preset.page}"
    route = (f"download {preset.filename} by hand from {where} and put it at "
             f"{download_path(preset)} (it is checked and converted on the next use)")
    if preset.source_format == "torchvision":
        route += (f", or run `mrcnn-kp convert --from torchvision {preset.filename} "
                  f"{preset.name}.weights.h5` and pass --weights {preset.name}.weights.h5")
    else:
        route += f", or pass --weights {preset.filename} with the matching --config"
    return route


def expected_sha256(preset, sha256=None):
    """The hash to check: the entry's, the caller's (or $MRCNN_KP_WEIGHTS_SHA256), the longer
    when both are given (they must agree); None when neither is known."""
    given = sha256 if sha256 is not None else (os.environ.get(SHA256_ENV, "").strip() or None)
    if given is not None:
        given = given.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", given):
            raise NamedWeightsError(f"--sha256 {given!r}: expected 8 to 64 hex digits")
    known = preset.sha256
    if known and given and not (known.startswith(given) or given.startswith(known)):
        raise NamedWeightsError(f"{preset.name}: the given sha256 {given} contradicts the "
                                f"published {known} of {preset.filename}")
    candidates = [h for h in (known, given) if h]
    return max(candidates, key=len) if candidates else None


def _allowed_unverified(allow_unverified):
    if allow_unverified:
        return True
    return os.environ.get(ALLOW_UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes")


def fetch_weights(name, sha256=None, allow_unverified=False, progress=True, echo=print):
    """The converted `.weights.h5` of named weights, downloading and converting on first use.

    sha256: the expected hash of the published file, for entries without one (or to check it
        again); allow_unverified: use a file whose hash cannot be checked (its sha256 is
        printed). echo: where the messages go (print). Raises NamedWeightsError (one line)
        when refused, unreachable, or not convertible; nothing is cached then.
    """
    preset = get_preset(name)
    cached = cached_weights(name)
    if cached is not None:
        return cached
    return _convert(preset, fetch_source(name, sha256, allow_unverified, progress, echo), echo)


def fetch_source(name, sha256=None, allow_unverified=False, progress=True, echo=print):
    """The published file of named weights, as published (downloaded on first use, checked):
    a Source (path, its sha256, whether that was checked against a known hash, the URL)."""
    preset = get_preset(name)
    expected = expected_sha256(preset, sha256)
    if expected is None and not _allowed_unverified(allow_unverified):
        raise NamedWeightsError(
            f"{name}: no sha256 is recorded for {preset.filename}, so it would not be verified; "
            f"pass its sha256 (--sha256 HEX, or ${SHA256_ENV}) or allow an unverified download "
            f"(--allow-unverified, or ${ALLOW_UNVERIFIED_ENV}=1), which prints the hash it "
            f"computed")
    source, url = download_path(preset), None
    if source.is_file():
        actual = sha256_of(source)
        if expected is not None and not check_sha256(actual, expected):
            raise NamedWeightsError(
                f"{name}: {source} has sha256 {actual}, expected {expected}; delete it to "
                f"download the published file again")
        echo(f"{name}: using {source}")
    else:
        url = source_url(preset)
        if url is None:
            raise NamedWeightsError(
                f"{name}: the download address of {preset.filename} is not recorded; "
                f"{manual_route(preset)}, or set ${URL_ENV} to a mirror holding it")
        echo(f"{name}: downloading {url}")
        try:
            _, actual = download(url, source, sha256=expected, progress=progress)
        except DownloadError as exc:
            raise NamedWeightsError(f"{exc}; {manual_route(preset)}") from None
    if expected is None:
        echo(f"{name}: sha256 of {preset.filename} is {actual} (not verified: none is "
             f"recorded; pass --sha256 {actual} to check it next time)")
    return Source(source, actual, expected is not None, url)


def _convert(preset, fetched, echo):
    from mrcnn_kp.utils import atomic_write_text

    source = fetched.path
    folder = weights_dir(preset.name)
    output = folder / f"{preset.name}.weights.h5"
    config = preset.make_config()
    if preset.infer_backbone:
        config = config.copy(BACKBONE=legacy_backbone(source))
    echo(f"{preset.name}: converting {source.name} ({preset.source_format}) for "
         f"{config.NAME}, {config.BACKBONE}")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if preset.source_format == "torchvision":
            summary = _convert_torchvision(source, output, config)
        elif preset.source_format == "keras":
            summary = _convert_keras(preset, source, output, config)
        else:
            raise NamedWeightsError(f"{preset.name}: unknown source format "
                                    f"{preset.source_format!r}; one of {SOURCE_FORMATS}")
    except NamedWeightsError:
        raise
    except Exception as exc:  # unreadable or foreign file: say which, keep nothing converted
        raise NamedWeightsError(f"{preset.name}: cannot convert {source}: "
                                f"{' '.join(str(exc).split())}") from None
    echo(summary)
    atomic_write_text(folder / "config.json", config.to_json())
    atomic_write_text(folder / "source.json", json.dumps({
        "name": preset.name, "file": preset.filename, "published_at": preset.url,
        "downloaded_from": fetched.url, "sha256": fetched.sha256,
        "verified": bool(fetched.verified), "format": preset.source_format,
        "cache_format": CACHE_FORMAT}, indent=1))
    echo(f"{preset.name}: cached {output}")
    return output


def _convert_torchvision(source, output, config):
    from mrcnn_kp.weights.torchvision import convert_torchvision

    report = convert_torchvision(source, output, config)
    if report.layers_not_set:
        os.remove(output)
        raise NamedWeightsError(f"{source.name}: layers left without weights: "
                                f"{', '.join(report.layers_not_set[:8])}; nothing cached")
    return report.summary()


def _convert_keras(preset, source, output, config):
    from mrcnn_kp.model.keypoint_rcnn import build_inference_model
    from mrcnn_kp.weights import load_weights, save_weights

    model = build_inference_model(config)
    report = load_weights(model, source, by_name=True, skip_mismatch=True)
    allowed = [re.compile(p) for p in preset.expected_absent]
    absent = [n for n in report.absent_from_file if not any(p.fullmatch(n) for p in allowed)]
    if report.mismatched or absent:
        shapes = [name for name, _, _ in report.mismatched]
        raise NamedWeightsError(
            f"{source.name} does not fit {config.NAME} ({config.BACKBONE}, {config.NUM_CLASSES} "
            f"classes): {len(shapes)} layers differ in shape ({', '.join(shapes[:5])}), "
            f"{len(absent)} are not in the file ({', '.join(absent[:5])}); nothing cached")
    save_weights(model, output, config=config)
    return report.summary()


def legacy_backbone(path):
    """"resnet101" when a matterport-layout .h5 has ResNet-101's 23 stage-4 blocks, else
    "resnet50" (read from the layer names only)."""
    from mrcnn_kp.weights import read_weight_file

    _, units = read_weight_file(path)
    return "resnet101" if any((u.name or "").startswith("res4w_") for u in units) \
        else "resnet50"


def describe():
    """One line per entry: name, whether its hash is recorded, what it is."""
    lines = []
    for preset in WEIGHTS_PRESETS.values():
        check = "sha256" if preset.sha256 and len(preset.sha256) == 64 else \
            "sha256 prefix" if preset.sha256 else "no hash recorded"
        lines.append(f"{preset.name} [{check}]: {preset.summary}")
    return "\n".join(lines)
