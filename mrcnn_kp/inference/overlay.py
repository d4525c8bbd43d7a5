"""Detections drawn into the frame's own pixels, fast enough for every frame of a video.

    annotated = draw_frame(image, result, min_score=0.5)   # uint8 RGB [H, W, 3], a new array

The same picture as visualize.py (limb colours: left warm, right cool, centre green; joints as
white dots; masks blended at visualize.MASK_ALPHA) drawn with PIL's ImageDraw on the image
itself instead of a matplotlib figure per frame (a few milliseconds at 640 x 360 instead of a
few hundred). Boxes and masks take the colour of the person's track id ("track_ids" in the
result, from tracking.PoseTracker), so a person keeps a colour through the video, and the box
is labelled with "#id score".
"""
import colorsys
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mrcnn_kp import constants
from mrcnn_kp.inference.visualize import (MASK_ALPHA, detections_at_least, limb_colors,
                                          visible_skeleton)

GOLDEN_RATIO = 0.618033988749895


def track_color(track_id):
    """A bright RGB colour (0..255) per id; neighbouring ids get well separated hues."""
    if track_id is None or track_id < 0:
        return (200, 200, 200)
    r, g, b = colorsys.hsv_to_rgb((0.13 + track_id * GOLDEN_RATIO) % 1.0, 0.85, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


@lru_cache(maxsize=1)
def _limb_colors_255():
    return [tuple(int(255 * c) for c in color) for color in limb_colors()]


@lru_cache(maxsize=8)
def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_frame(image, result, min_score=0.5, min_keypoint_score=0.0, keypoint_scores="logit",
               show_boxes=True, show_masks=True, show_keypoints=True):
    """A copy of `image` (uint8 RGB [H, W, 3]) with the detections scoring >= min_score drawn:
    masks, boxes with "#track score", skeletons of the joints scoring above min_keypoint_score.
    """
    result = detections_at_least(result, min_score)
    canvas = np.array(image, np.uint8, copy=True)[:, :, :3]
    height, width = canvas.shape[:2]
    rois = np.asarray(result.get("rois", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    count = len(rois)
    track_ids = result.get("track_ids")
    track_ids = np.full(count, -1) if track_ids is None else np.asarray(track_ids).reshape(-1)
    tracked = bool((track_ids >= 0).any())
    # untracked results: a colour per detection; tracked ones: per id (grey: not tracked)
    colors = [track_color(int(t)) if tracked else track_color(k + 1)
              for k, t in enumerate(track_ids)]
    masks = result.get("masks")
    if show_masks and masks is not None and np.asarray(masks).size:
        masks = np.asarray(masks, bool)  # [H, W, n]
        for i in range(min(count, masks.shape[2])):
            m = masks[:, :, i]
            blend = (1 - MASK_ALPHA) * canvas[m] + MASK_ALPHA * np.array(colors[i], np.float32)
            canvas[m] = blend.astype(np.uint8)
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    line = max(1, round(min(height, width) / 240))
    font = _font(max(10, round(min(height, width) / 30)))
    scores = result.get("scores")
    for i in range(count):
        x1, y1, x2, y2 = (float(v) for v in rois[i])
        if show_boxes:
            draw.rectangle([x1, y1, x2, y2], outline=colors[i], width=line)
            label = f"#{int(track_ids[i])}" if track_ids[i] >= 0 else "person"
            if scores is not None:
                label += f" {float(np.asarray(scores).reshape(-1)[i]):.2f}"
            left, top, right, bottom = draw.textbbox((x1, y1), label, font=font)
            top_y = max(y1 - (bottom - top) - 2, 0)
            draw.rectangle([x1, top_y, x1 + right - left + 4, top_y + bottom - top + 2],
                           fill=colors[i])
            draw.text((x1 + 2, top_y - (top - y1)), label, fill=(0, 0, 0), font=font)
    keypoints = result.get("keypoints")
    if show_keypoints and keypoints is not None:
        _draw_skeletons(draw, np.asarray(keypoints, np.float32), min_keypoint_score,
                        keypoint_scores, line)
    return np.asarray(picture)


def _draw_skeletons(draw, keypoints, min_score, keypoint_scores, line):
    """keypoints [n, K, 3] (x, y, score): limbs between joints both above min_score, then
    joints (radius growing with the joint's confidence)."""
    colors = _limb_colors_255()
    for person in keypoints:
        xy = person[:, :2]
        limbs, joints = visible_skeleton(person, min_score, keypoint_scores)
        for a, b, i, _ in limbs:
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=colors[i], width=2 * line + 1)
        for j, c in joints:
            r = line * (1.0 + 1.5 * c)
            x, y = xy[j]
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0))
