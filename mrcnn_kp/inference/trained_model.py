"""Opening a trained model: from what a user names as weights to a ready Predictor.

    predictor, config, path = open_predictor("last", logs="logs")    # newest checkpoint
    predictor, config, path = open_predictor("torchvision-coco")     # named weights
    predictor, config, path = open_predictor("run/mask_rcnn_tiny_0003.weights.h5",
                                             DETECTION_MIN_CONFIDENCE=0.5)

Weights are named one of four ways (resolve_weights): "last" (the newest checkpoint of a
training run under `logs`, mrcnn_kp.run_directory.find_last), a weights file (ours
`.weights.h5`, a legacy Keras-2 `.h5` such as matterport's, or a `.keras` archive), named
weights (torchvision-coco, matterport-coco, ...: downloaded, checked, converted and cached on
first use) or "none" (random weights). The config comes with the weights (config_for_weights:
stored in the file, else the run's config.json beside it), unless the caller gives one.
"""
import os

from mrcnn_kp import run_directory

NO_WEIGHTS = ("none", "random")
WEIGHTS_EXTENSIONS = (".h5", ".keras")


class WeightsNotFoundError(FileNotFoundError):
    """The weights asked for are not there: no checkpoint for "last", no such file, or a file
    that is not a weights file. `spec` is what was asked for, `reason` what is wrong."""

    def __init__(self, spec, reason):
        super().__init__(f"weights {spec}: {reason}")
        self.spec = spec
        self.reason = reason


def is_named(spec):
    """Whether `spec` names registered named weights (torchvision-coco, ...)."""
    from mrcnn_kp.weights import presets

    return bool(spec) and presets.is_named(spec)


def named_weights():
    """The names of the registered named weights."""
    from mrcnn_kp.weights import presets

    return list(presets.names())


def resolve_weights(spec, logs="logs", name=None, sha256=None, allow_unverified=False,
                    any_name=True):
    """The weights file that `spec` names, or None for "none" (random weights).

    spec: "last" (the newest checkpoint under `logs`: of the runs of `name` when given and any
        hold one, else, with `any_name`, of the newest run of any name), a weights file, named
        weights (fetched:
        downloaded, sha256-checked, converted and cached on first use; sha256 /
        allow_unverified for entries without a recorded hash) or "none".
    Raises WeightsNotFoundError (a FileNotFoundError), or the named weights' NamedWeightsError.
    """
    if spec is None or str(spec).lower() in NO_WEIGHTS:
        return None
    spec = os.fspath(spec)
    if spec == "last":
        try:
            return run_directory.find_last(logs, name, any_name=any_name)
        except FileNotFoundError as missing:
            raise WeightsNotFoundError(
                "last", f"{missing}; train first, or give a weights file") from None
    if is_named(spec):
        from mrcnn_kp.weights import presets

        return str(presets.fetch_weights(spec, sha256=sha256,
                                                 allow_unverified=allow_unverified))
    if not os.path.isfile(spec):
        raise WeightsNotFoundError(spec, "no such file")
    if not spec.endswith(WEIGHTS_EXTENSIONS):
        raise WeightsNotFoundError(spec, "not a weights file")
    return spec


def config_for_weights(path):
    """The Config saved with a weights file (inside it, else config.json of its run
    directory), or None (none saved, a legacy file, or path None)."""
    if path is None:
        return None
    from mrcnn_kp.config import Config

    try:
        from mrcnn_kp.weights import read_config

        config = read_config(path)
    except Exception:  # a legacy file without our attribute
        config = None
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), run_directory.CONFIG_FILE)
    if config is None and os.path.isfile(beside):
        config = Config.from_json(beside)
    return config


def open_config(weights, config=None, logs="logs", sha256=None, allow_unverified=False,
                **overrides):
    """(config, weights path) of `weights` (as resolve_weights reads it): `config` when given
    (its NAME picks the runs "last" searches), else the one saved with the weights, else the
    default preset; `overrides` are config values to change."""
    from mrcnn_kp.config import PRESETS

    path = resolve_weights(weights, logs, name=config.NAME if config is not None else None,
                           sha256=sha256, allow_unverified=allow_unverified)
    if config is None:
        config = config_for_weights(path) or PRESETS["default"]()
    if overrides:
        config = config.copy(**overrides)
    return config, path


def open_predictor(weights, config=None, logs="logs", sha256=None, allow_unverified=False,
                   **overrides):
    """(Predictor, config, weights path) for `weights` (see open_config); the model is built
    for the config and the weights loaded by layer name (random weights for "none")."""
    from mrcnn_kp.inference.predictor import load_predictor

    config, path = open_config(weights, config, logs, sha256=sha256,
                               allow_unverified=allow_unverified, **overrides)
    predictor, _ = load_predictor(config, path)
    return predictor, config, path


def open_errors():
    """The exception types that mean unusable weights or config rather than a bug."""
    from mrcnn_kp.config import ConfigError
    from mrcnn_kp.weights import WeightsError
    from mrcnn_kp.weights.presets import NamedWeightsError

    return (ConfigError, FileNotFoundError, NamedWeightsError, WeightsError)
