"""`MaskRCNN`: matterport's friendly API over the training and inference packages.

    model = MaskRCNN(mode="training", config=config, model_dir="logs")
    model.load_weights("mask_rcnn_coco.h5", exclude=["mrcnn_class_logits", "mrcnn_bbox_fc",
                                                     "mrcnn_bbox", "mrcnn_mask"])
    model.train(dataset_train, dataset_val, learning_rate=config.LEARNING_RATE,
                epochs=20, layers="heads")
    model.train(dataset_train, dataset_val, learning_rate=config.LEARNING_RATE / 10,
                epochs=40, layers="all")            # continues at epoch 21

    model = MaskRCNN(mode="inference", config=config, model_dir="logs")
    model.load_weights("last")                      # = model.find_last()
    results = model.detect([image])                 # rois, class_ids, scores, masks, keypoints
    for result in model.track("clip.mp4"):          # per frame, plus "track_ids"
        ...

    model = MaskRCNN.from_preset("torchvision-coco")  # named weights: downloaded, checked,
                                                      # converted and cached on first use

It lives at the top of the package because it uses both mrcnn_kp.training and
mrcnn_kp.inference (training never imports inference). Resume a killed run with
`model.load_weights("last")` in training mode: weights, epoch, run directory and optimizer
state (momenta, iteration count) come back, and the next `train()` continues exactly there.
"""
import os

import keras

from mrcnn_kp import run_directory
from mrcnn_kp.runtime import apply_mixed_precision
from mrcnn_kp.training import checkpoints, distribute
from mrcnn_kp.training.determinism import seed_everything
from mrcnn_kp.training.trainer import Trainer
from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp")

MODES = ("training", "inference")


class MaskRCNN:
    """Mask R-CNN with the keypoint head, matterport-style.

    mode: "training" (the model outputs the six losses) or "inference" (detections).
    config: a mrcnn_kp Config. config.MIXED_PRECISION sets Keras' global dtype policy before
        the model is built; config.GPU_COUNT > 1 trains data-parallel (training.distribute).
    model_dir: parent of the run directories, logs/<name><YYYYmmddTHHMM>/.
    strategy: "auto" (from config.GPU_COUNT), None, or a tf.distribute strategy /
        keras.distribution.DataParallel made by the caller.
    """

    def __init__(self, mode, config, model_dir="logs", strategy="auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be 'training' or 'inference', got {mode!r}")
        self.mode = mode
        self.config = config
        self.model_dir = os.fspath(model_dir)
        # first: a multi-worker strategy must exist before any other TensorFlow op runs
        self.strategy = distribute.make_strategy(config) if strategy == "auto" else strategy
        apply_mixed_precision(config)
        if config.SEED is not None:  # before the build: the initializers draw from it
            seed_everything(config.SEED)
        from mrcnn_kp.model.keypoint_rcnn import build_inference_model, build_training_model

        build = build_training_model if mode == "training" else build_inference_model
        with distribute.scope(self.strategy):
            self.keras_model = build(config)
        self._trainer = Trainer(self.keras_model, config, self.model_dir, self.strategy)
        self._predictor = None

    @classmethod
    def from_preset(cls, preset, mode="inference", model_dir="logs", sha256=None,
                    allow_unverified=False, **config_overrides):
        """The model of named weights ("torchvision-coco", ...), of a `.weights.h5` that
        stores its config (or has its run's config.json beside it) or of "last" (the newest
        checkpoint under model_dir), with those weights loaded
        (mrcnn_kp.inference.trained_model opens them).

        Named weights are downloaded on first use, their sha256 checked, converted once and
        cached ($MRCNN_KP_CACHE or ~/.cache/mrcnn_kp); later calls read the cache. sha256 /
        allow_unverified: for entries without a recorded hash (see mrcnn_kp.weights.presets).
        config_overrides: config values to change, e.g. DETECTION_MIN_CONFIDENCE=0.5.
        """
        from mrcnn_kp.inference import trained_model
        from mrcnn_kp.weights.presets import NamedWeightsError

        try:
            path = trained_model.resolve_weights(preset, logs=model_dir, sha256=sha256,
                                                 allow_unverified=allow_unverified)
        except trained_model.WeightsNotFoundError as missing:
            if missing.spec == "last":
                raise NamedWeightsError(str(missing)) from None
            path = None
        if path is None:
            raise NamedWeightsError(
                f"{preset!r} is neither named weights "
                f"({', '.join(trained_model.named_weights())}) nor a weights file")
        config = trained_model.config_for_weights(path)
        if config is None:
            raise NamedWeightsError(
                f"{path} stores no config; build MaskRCNN(mode, config) and load_weights() it")
        if config_overrides:
            config = config.copy(**config_overrides)
        model = cls(mode, config, model_dir=model_dir)
        model.load_weights(path)
        return model

    # ------------------------------------------------------------------ run directory
    @property
    def epoch(self):
        """Epochs trained so far in this run (what the next train() continues from)."""
        return self._trainer.epoch

    @property
    def log_dir(self):
        return self._trainer.log_dir

    @property
    def checkpoint_path(self):
        return self._trainer.checkpoint_path

    def set_log_dir(self, model_path=None):
        """New run directory, or the run directory and epoch of a checkpoint (matterport)."""
        return self._trainer.set_log_dir(model_path)

    def find_last(self):
        """Path of the last checkpoint of config.NAME under model_dir (FileNotFoundError if
        there is none; mrcnn_kp.run_directory.find_last)."""
        return run_directory.find_last(self.model_dir, self.config.NAME, any_name=False)

    # ------------------------------------------------------------------ weights
    def load_weights(self, filepath, by_name=True, exclude=()):
        """Load weights by layer name from ours (.weights.h5), matterport's .h5 or "last".

        In training mode a checkpoint of ours also restores the epoch, the run directory and
        the optimizer state, so the next train() continues where that run stopped.
        Returns the loader's report (what loaded, what was skipped).
        """
        if filepath == "last":
            filepath = self.find_last()
        if self.mode == "training":
            return self._trainer.load_checkpoint(filepath, by_name=by_name, exclude=exclude)
        report = checkpoints.load_model_weights(self.keras_model, filepath, by_name=by_name,
                                                exclude=exclude)
        self.set_log_dir(filepath)
        return report

    def save_weights(self, filepath):
        """Write the weights (Keras 3 .weights.h5, atomically, with the config inside)."""
        return checkpoints.save_model_weights(self.keras_model, filepath, config=self.config)

    # ------------------------------------------------------------------ training
    def train(self, train_dataset, val_dataset, learning_rate, epochs, layers,
              augmentation=None, custom_callbacks=None, deadline=None, workers=1,
              verbose="auto"):
        """Train `layers` up to epoch `epochs` (matterport semantics: a later call continues
        the count). Returns the Keras History (None when there was nothing to do).

        train_dataset, val_dataset: mrcnn_kp Datasets (val may be None), or ready PyDatasets.
        layers: "heads", "3+", "4+", "5+", "all" or a regex over layer names.
        augmentation: None or True = flips / scale jitter as the config sets them
            (AUGMENT_FLIP, AUGMENT_SCALE_RANGE); False = none.
        deadline: time.monotonic() value or training.callbacks.TimeBudget shared by stages.
        Ctrl-C / SIGTERM: a checkpoint is written, then TrainingInterrupted is raised.
        """
        if self.mode != "training":
            raise ValueError("train() needs a model created with mode='training'")
        augment = augmentation is None or bool(augmentation)
        train_batches = self._batches(train_dataset, shuffle=True, augment=augment,
                                      workers=workers)
        val_batches = None
        if val_dataset is not None:
            val_batches = self._batches(val_dataset, shuffle=False, augment=False,
                                        workers=workers)
        return self._trainer.train(train_batches, val_batches, learning_rate, epochs, layers,
                                   custom_callbacks=custom_callbacks, verbose=verbose,
                                   deadline=deadline)

    def _batches(self, dataset, shuffle, augment, workers):
        if isinstance(dataset, keras.utils.PyDataset):
            return dataset
        from mrcnn_kp.data.pipeline import DataGenerator

        seed = self.config.SEED if self.config.SEED is not None else 0
        num_workers, worker_index = distribute.worker_shard(self.strategy)
        return DataGenerator(dataset, self.config, shuffle=shuffle, augment=augment, seed=seed,
                             workers=workers, num_shards=num_workers, shard_index=worker_index)

    # ------------------------------------------------------------------ inference
    def detect(self, images, verbose=0):
        """One result dict per image (rois, class_ids, scores, masks, keypoints in
        original-image pixels); see mrcnn_kp.inference.predictor."""
        if self.mode != "inference":
            raise ValueError("detect() needs a model created with mode='inference'")
        return self._inference_predictor().detect(images, verbose=verbose)

    def track(self, frames, batch_size=None, **tracker_options):
        """People tracked through a video, lazily: one result dict per frame, as detect() plus
        "track_ids" int32 [n] (a person's id through the video; -1: scoring under min_score).

        frames: an iterable of images in order, or a video file / folder of numbered frames
            (mrcnn_kp.inference.video.open_video; a truncated file raises VideoError after the
            frames read before the damage).
        tracker_options: of mrcnn_kp.inference.tracking.PoseTracker (max_lost, min_score,
            min_similarity, oks_weight, smoothing).
        """
        from mrcnn_kp.inference.tracking import PoseTracker, track_results

        predictor = self._inference_predictor()
        reader = None
        if isinstance(frames, (str, os.PathLike)):
            from mrcnn_kp.inference.video import open_video

            reader = open_video(frames)
            frames = ((frame, frame.image) for frame in reader)
        pairs = predictor.predict_stream(frames, batch_size=batch_size)
        for _, result in track_results(pairs, PoseTracker(**tracker_options)):
            yield result
        if reader is not None and reader.error:
            from mrcnn_kp.inference.video import VideoError

            raise VideoError(reader.error)

    def _inference_predictor(self):
        if self.mode != "inference":
            raise ValueError("detect() and track() need a model created with mode='inference'")
        if self._predictor is None:
            from mrcnn_kp.inference.predictor import Predictor

            self._predictor = Predictor(self.keras_model, self.config)
        return self._predictor
