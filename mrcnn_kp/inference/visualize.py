"""Pictures of detections: boxes, masks and the COCO skeleton, saved as PNG.

    fig = display_instances(image, result)                     # one panel, returns the Figure
    draw_side_by_side(image, gt, pred, "out/000139.png")       # ground truth | prediction

`result`, `gt` and `pred` are Predictor.detect() dicts (gt from
coco_eval.ground_truth_as_detections). Figures are drawn with matplotlib's Agg canvas
directly, so nothing here touches pyplot's global backend or needs a display.

Each limb of the skeleton has its own colour (left limbs warm, right limbs cool, the middle
green); each joint is a dot whose size and opacity grow with its confidence. The model's joint
score is the heatmap logit at the chosen pixel (mrcnn_kp.ops.keypoints.decode_heatmaps), so
`keypoint_scores="logit"` (the default) shows sigmoid(score); `"probability"` takes scores
already in [0, 1] (ground truth: visibility / 2). Joints whose raw score is at most
`min_keypoint_score` are not drawn, so ground truth's unlabeled joints (score 0) stay hidden.
"""
import numpy as np

from mrcnn_kp import constants
from mrcnn_kp.utils import atomic_path

DEFAULT_CLASS_NAMES = ("BG", "person")
MASK_ALPHA = 0.45


def limb_colors():
    """One RGB colour per limb of constants.SKELETON: left warm, right cool, centre green."""
    from matplotlib import colormaps

    left = set(pair[0] for pair in constants.FLIP_PAIRS)
    right = set(pair[1] for pair in constants.FLIP_PAIRS)
    warm, cool = colormaps["autumn"], colormaps["winter"]
    colors = []
    for k, (a, b) in enumerate(constants.SKELETON):
        shade = 0.15 + 0.7 * k / max(len(constants.SKELETON) - 1, 1)
        if a in left and b in left:
            colors.append(warm(shade)[:3])
        elif a in right and b in right:
            colors.append(cool(shade)[:3])
        else:
            colors.append((0.1, 0.8, 0.2))
    return colors


def instance_colors(count, seed=0):
    """`count` distinct bright RGB colours (evenly spaced hues, shuffled deterministically)."""
    import colorsys

    colors = [colorsys.hsv_to_rgb(i / max(count, 1), 0.9, 1.0) for i in range(count)]
    np.random.default_rng(seed).shuffle(colors)
    return colors


def draw_instances(ax, image, result, class_names=DEFAULT_CLASS_NAMES, title=None,
                   show_boxes=True, show_masks=True, show_keypoints=True,
                   min_keypoint_score=0.0, keypoint_scores="logit", min_score=0.0):
    """Draw one image and its detections on a matplotlib Axes; returns the Axes.

    min_score: draw only the detections scoring at least this (the rest stay in the results:
    COCO AP wants low-confidence detections kept, a picture does not).
    """
    from matplotlib import patches

    result = detections_at_least(result, min_score)
    image = np.asarray(image)
    height, width = image.shape[:2]
    rois = np.asarray(result.get("rois", np.zeros((0, 4)))).reshape(-1, 4)
    count = len(rois)
    colors = instance_colors(count)
    canvas = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(
        np.float32)
    if canvas.ndim == 2:
        canvas = np.repeat(canvas[:, :, None], 3, axis=2)
    canvas = canvas[:, :, :3].copy()
    masks = result.get("masks")
    if show_masks and masks is not None and np.asarray(masks).size:
        masks = np.asarray(masks, bool)  # [H, W, n]
        for i in range(min(count, masks.shape[2])):
            m = masks[:, :, i]
            canvas[m] = (1 - MASK_ALPHA) * canvas[m] + MASK_ALPHA * np.array(colors[i])
    # extent puts pixel i over [i, i + 1]: continuous coordinates, like the predictions.
    ax.imshow(np.clip(canvas, 0, 1), extent=(0, width, height, 0), interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if title:
        ax.set_title(title)
    class_ids = np.asarray(result.get("class_ids", np.ones(count, int))).reshape(-1)
    scores = result.get("scores")
    for i in range(count):
        x1, y1, x2, y2 = rois[i]
        if show_boxes:
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=1.5,
                                           linestyle="--", edgecolor=colors[i], facecolor="none"))
            cid = int(class_ids[i]) if i < len(class_ids) else 1
            name = class_names[cid] if class_names and cid < len(class_names) else str(cid)
            caption = name if scores is None else f"{name} {float(scores[i]):.2f}"
            ax.text(x1, y1 - 2, caption, color="white", fontsize=7, va="bottom",
                    bbox={"facecolor": colors[i], "alpha": 0.6, "pad": 1, "edgecolor": "none"})
    keypoints = result.get("keypoints")
    if show_keypoints and keypoints is not None:
        _draw_skeletons(ax, np.asarray(keypoints, np.float32), min_keypoint_score,
                        keypoint_scores)
    return ax


def detections_at_least(result, min_score):
    """The detections of a detect() result whose score is >= min_score (same keys)."""
    scores = result.get("scores")
    if not min_score or scores is None:
        return result
    keep = np.asarray(scores, np.float64).reshape(-1) >= min_score  # [n]
    kept = dict(result)
    for key in ("rois", "class_ids", "scores", "keypoints"):
        if result.get(key) is not None:
            kept[key] = np.asarray(result[key])[keep]
    if result.get("masks") is not None and np.asarray(result["masks"]).ndim == 3:
        kept["masks"] = np.asarray(result["masks"])[:, :, keep]
    return kept


def joint_confidence(scores, keypoint_scores="logit"):
    """Joint scores -> [0, 1] for drawing: sigmoid of logits, or probabilities clipped."""
    scores = np.asarray(scores, np.float64)
    if keypoint_scores == "logit":
        return 1.0 / (1.0 + np.exp(-np.clip(scores, -50, 50)))
    if keypoint_scores == "probability":
        return np.clip(scores, 0.0, 1.0)
    raise ValueError(f"keypoint_scores must be 'logit' or 'probability', got {keypoint_scores!r}")


def visible_skeleton(person, min_score, keypoint_scores="logit"):
    """What of one person [K, 3] (x, y, score) is drawn: (limbs, joints).

    limbs: [(a, b, limb index, confidence of the weaker joint)] for the SKELETON limbs whose
    joints both score above min_score; joints: [(j, confidence)] for those joints; confidence
    in [0, 1] (joint_confidence). Both drawing back ends (matplotlib here, PIL in overlay) use
    it, so a picture and a video frame show the same joints."""
    score = person[:, 2]
    shown = score > min_score
    confidence = joint_confidence(score, keypoint_scores)
    limbs = [(a, b, i, float(min(confidence[a], confidence[b])))
             for i, (a, b) in enumerate(constants.SKELETON) if shown[a] and shown[b]]
    joints = [(int(j), float(confidence[j])) for j in np.flatnonzero(shown)]
    return limbs, joints


def _draw_skeletons(ax, keypoints, min_score, keypoint_scores):
    """keypoints [n, K, 3] (x, y, score): limbs between joints both above min_score, then joints."""
    colors = limb_colors()
    for person in keypoints:
        xy = person[:, :2]
        limbs, joints = visible_skeleton(person, min_score, keypoint_scores)
        for a, b, i, c in limbs:
            ax.plot([xy[a, 0], xy[b, 0]], [xy[a, 1], xy[b, 1]], color=colors[i], linewidth=2,
                    alpha=0.35 + 0.65 * c, solid_capstyle="round")
        for j, c in joints:
            ax.scatter([xy[j, 0]], [xy[j, 1]], s=8 + 28 * c, color="white",
                       edgecolors="black", linewidths=0.5, alpha=0.3 + 0.7 * c, zorder=3)


def new_figure(panels=1, figsize=None):
    """A matplotlib Figure on an Agg canvas (no pyplot state) and its Axes list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figsize = figsize or (6 * panels, 6)
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, k + 1) for k in range(panels)]
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.94, wspace=0.03)
    return fig, axes


def _fit(image, panel_width, panels=1):
    """A figure size (inches) whose panels follow the image's aspect ratio, room for a title."""
    height, width = np.asarray(image).shape[:2]
    return (panel_width * panels, panel_width * height / max(width, 1) + 0.4)


def save_figure(fig, path, dpi=100):
    """Write the figure as a PNG atomically; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def display_instances(image, result, class_names=DEFAULT_CLASS_NAMES, title=None, ax=None,
                      figsize=None, path=None, **draw_options):
    """Draw detections on an image; returns the Figure (and saves a PNG when path is given).

    draw_options: show_boxes, show_masks, show_keypoints, min_keypoint_score, keypoint_scores
    ("logit" for model output, "probability" for ground truth), min_score (detections below it
    are not drawn).
    """
    if ax is None:
        fig, (ax,) = new_figure(1, figsize or _fit(image, 8.0))
    else:
        fig = ax.figure
    draw_instances(ax, image, result, class_names=class_names, title=title, **draw_options)
    if path is not None:
        save_figure(fig, path)
    return fig


def draw_side_by_side(image, gt, pred, path, class_names=DEFAULT_CLASS_NAMES,
                      titles=("ground truth", "prediction"), figsize=None, **draw_options):
    """Ground truth (left) and prediction (right) on the same image, saved as a PNG at path.

    The ground truth's joint scores are probabilities (ground_truth_as_detections); the
    prediction's follow draw_options' keypoint_scores (default "logit").
    """
    fig, axes = new_figure(2, figsize or _fit(image, 6.0, panels=2))
    gt_options = {**draw_options, "keypoint_scores": "probability"}
    draw_instances(axes[0], image, gt, class_names=class_names, title=titles[0], **gt_options)
    draw_instances(axes[1], image, pred, class_names=class_names, title=titles[1],
                   **draw_options)
    return save_figure(fig, path)
