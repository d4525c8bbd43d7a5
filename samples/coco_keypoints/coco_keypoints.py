"""Keypoint Mask R-CNN on COCO person keypoints, matterport's samples/coco style.

    # train (stages heads -> 4+ -> all), starting from ImageNet / COCO weights or resuming
    python coco_keypoints.py train --dataset /path/to/coco_kp_mini/train --weights last
    # COCO keypoint / bbox / segm AP on a COCO-format json
    python coco_keypoints.py evaluate --dataset /path/to/person_keypoints_val2017.json \
        --images /path/to/val2017 --weights last --limit 500
    # detect people in image files or folders, write PNGs and a COCO-style json
    python coco_keypoints.py predict --weights last --image photo.jpg more_photos/

A thin wrapper: each command is `mrcnn-kp <command>` (mrcnn_kp/commands/<command>.py), so the
options, messages and exit codes are the same; `python coco_keypoints.py <command> --help`
lists them. matterport's `--image FILE` is accepted by predict (it becomes an input).
"""
import argparse
import sys

from mrcnn_kp import cli

COMMANDS = ("train", "evaluate", "predict")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="coco_keypoints.py",
        description="Train, evaluate or run Keypoint Mask R-CNN on COCO person keypoints.",
        epilog="Run `coco_keypoints.py <command> --help` for the options of a command.")
    parser.add_argument("command", choices=COMMANDS, help="'train', 'evaluate' or 'predict'")
    return parser


def translate(command, rest):
    """matterport's spellings -> mrcnn-kp's: predict `--image X` becomes the input X."""
    if command != "predict":
        return rest
    out, inputs, i = [], [], 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--image" and i + 1 < len(rest):
            inputs.append(rest[i + 1])
            i += 2
            continue
        if arg.startswith("--image="):
            inputs.append(arg.split("=", 1)[1])
        else:
            out.append(arg)
        i += 1
    return inputs + out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1])  # prints usage / help, exits
        return 2
    command, rest = argv[0], argv[1:]
    return cli.main([command] + translate(command, rest))


if __name__ == "__main__":
    sys.exit(main())
