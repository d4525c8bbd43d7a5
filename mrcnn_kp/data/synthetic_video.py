"""Clips of synthetic people walking across a still background, with their true tracks.

    walkers = [Walker(start=(40, 250), velocity=(6, 0), height=150),
               Walker(start=(600, 260), velocity=(-6, 0), height=140, hidden=range(10, 13))]
    frames, truth = moving_people_clip(walkers, num_frames=30, size=(640, 360), seed=0)
    frames[t]        uint8 [H, W, 3]
    truth[t]         [{"id": walker index + 1, "keypoints": [17, 3] (x, y, v), "box": [4]}, ...]

Each walker is one person of mrcnn_kp.data.synthetic_people (a pose, clothes and skin colours
drawn from `seed`), moved rigidly by `velocity` pixels per frame from `start` (the mid-hip
point) with a small walking bob; it is not drawn (and not in `truth`) on the frames of
`hidden`. People lower in the picture are drawn over the others (ties: the later walker in
front). Joints outside the frame are (0, 0, 0), as in COCO.
"""
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import ImageDraw

from mrcnn_kp import constants
from mrcnn_kp.data.synthetic_people import (HEAD_RADIUS, SKIN_TONES, draw_background, draw_person,
                                             pose_keypoints)


@dataclass
class Walker:
    start: tuple  # (x, y) of the mid-hip point on frame 0, pixels
    velocity: tuple = (4.0, 0.0)  # pixels per frame
    height: float = 140.0  # pixels
    hidden: tuple = field(default_factory=tuple)  # frame indices where the person is absent


def moving_people_clip(walkers, num_frames, size=(640, 360), seed=0):
    """(frames, truth) for `walkers` over `num_frames` frames of size (width, height)."""
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    people = []
    for walker in walkers:
        joints, _, view = pose_keypoints(rng, float(walker.height))
        colours = {
            "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))],
            "shirt": tuple(int(v) for v in rng.integers(30, 256, size=3)),
            "trousers": tuple(int(v) for v in rng.integers(0, 200, size=3)),
            "hair": tuple(int(v) for v in rng.integers(0, 90, size=3)),
        }
        people.append((joints, view, colours))
    # the background has its own generator: the same seed gives it with any walkers
    background = draw_background(np.random.default_rng([seed, 1]), max(width, height))
    background = background.crop((0, 0, width, height))
    frames, truth = [], []
    for t in range(num_frames):
        image = background.copy()
        draw = ImageDraw.Draw(image)
        placed = []
        for k, (walker, (joints, view, colours)) in enumerate(zip(walkers, people)):
            if t in set(walker.hidden):
                continue
            bob = 0.015 * walker.height * math.sin(2 * math.pi * t / 12.0)
            origin = np.asarray(walker.start, float) + t * np.asarray(walker.velocity, float)
            origin = origin + [0.0, bob]
            placed.append((origin[1], k, joints + origin, view, origin, colours, walker))
        placed.sort(key=lambda p: (p[0], p[1]))
        people_now = []
        for _, k, moved, view, origin, colours, walker in placed:
            moved_view = dict(view, head=view["head"] + origin, neck=view["neck"] + origin)
            draw_person([(draw, False)], moved, moved_view, float(walker.height), colours)
            pad = HEAD_RADIUS * walker.height
            box = np.concatenate([moved.min(axis=0) - pad, moved.max(axis=0) + pad])
            box = np.clip(box, 0, [width, height, width, height])
            keypoints = np.zeros((len(moved), 3))
            inside = ((moved[:, 0] >= 0) & (moved[:, 0] < width) & (moved[:, 1] >= 0)
                      & (moved[:, 1] < height))
            keypoints[inside, :2] = moved[inside]
            keypoints[inside, 2] = 2
            people_now.append({"id": k + 1, "keypoints": keypoints, "box": box})
        people_now.sort(key=lambda p: p["id"])
        frames.append(np.asarray(image))
        truth.append(people_now)
    return frames, truth


def truth_as_result(people, score=0.99):
    """One frame's truth -> a Predictor.detect()-style dict (rois, scores, class_ids,
    keypoints with v as the joint score), the tracker's input on ground truth."""
    count = len(people)
    return {"rois": np.array([p["box"] for p in people], np.float32).reshape(count, 4),
            "scores": np.full(count, score, np.float32),
            "class_ids": np.ones(count, np.int32),
            "keypoints": np.array([p["keypoints"] for p in people],
                                  np.float32).reshape(count, constants.NUM_KEYPOINTS, 3)}
