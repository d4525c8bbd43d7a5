"""Drawing of the synthetic people: poses, stick figures, backgrounds, one image at a time.

    image, people = render_image(np.random.default_rng(0), image_size=256)
    # image uint8 [S, S, 3]; people: [{"keypoints": [17, 3] (x, y, v), "mask": bool [S, S]}]

A person is drawn from a pose (standing, arms up, waving, hands on hips, star, walking,
running, reaching, sitting), seen from the front or from the side, mirrored at random, with
thick limbs, a round head with eyes (and a nose in profile), shirt / trousers / skin colours,
and the person's left limbs a shade darker than the right ones so left and right can be told
apart. Each image holds 0-4 people, 60-200 px tall at 256 px; people may overlap and leave the
image: joints covered by a person in front, or hidden behind the body in a side view, get
v = 1; joints outside the image are (0, 0, 0). The mask is the visible part of the drawn body.
Backgrounds are a colour gradient with smooth and fine noise, plus rectangles, ellipses,
triangles and thin lines (no limb-like bars). data.synthetic writes these images as a COCO
set; data.synthetic_video moves the same figures through clips.
"""
import math

import numpy as np
from PIL import Image, ImageDraw

from mrcnn_kp import constants

PEOPLE_PER_IMAGE_PROBS = (0.08, 0.32, 0.27, 0.19, 0.14)  # 0, 1, 2, 3, 4 people

# Body proportions, in units of the person's height (y down, origin at the mid-hip point).
NECK_Y = -0.30
HEAD_ABOVE_NECK = 0.115
HEAD_RADIUS = 0.075
SHOULDER_HALF_WIDTH = 0.12
HIP_HALF_WIDTH = 0.075
UPPER_ARM, FOREARM, THIGH, SHIN = 0.16, 0.15, 0.25, 0.24
ARM_WIDTH, LEG_WIDTH, NECK_WIDTH = 0.07, 0.09, 0.055
# Side view: half-widths shrink to this fraction, the torso keeps a minimum width.
SIDE_SQUEEZE = 0.15
MIN_TORSO_HALF_WIDTH = 0.085
LEFT_SHADE = 0.7  # left limbs are darker: the left/right cue

# Poses: limb angles in degrees from straight down, (upper arm, forearm, thigh, shin), for the
# person's left and right side. Front view: positive points away from the body's midline.
# Side view: positive points the way the person faces.
FRONT_POSES = {
    "standing": ((15, 8, 6, 2), (15, 8, 6, 2)),
    "arms_up": ((150, 165, 8, 3), (150, 165, 8, 3)),
    "waving": ((140, 172, 6, 2), (15, 8, 6, 2)),
    "hands_on_hips": ((45, -55, 8, 2), (45, -55, 8, 2)),
    "star": ((100, 110, 25, 25), (100, 110, 25, 25)),
    "sitting": ((20, 10, 8, 3), (20, 10, 8, 3)),  # thighs foreshortened towards the viewer
}
SIDE_POSES = {
    "standing": ((4, 12, 2, 0), (-4, 8, -2, 0)),
    "walking": ((-25, -10, 25, 10), (25, 45, -20, -35)),
    "running": ((-40, 50, 40, -10), (40, 110, -30, -75)),
    "reaching": ((80, 88, 3, 0), (70, 85, -3, 0)),
    "sitting": ((20, 70, 88, 0), (15, 65, 92, 2)),
}
SIDE_VIEW_PROBABILITY = 0.35
ANGLE_JITTER_DEGREES = 9.0
TILT_JITTER_DEGREES = 7.0

SKIN_TONES = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66),
              (141, 85, 36), (92, 56, 30))


# ------------------------------------------------------------------ geometry of one person
def _direction(theta_degrees, sign):
    t = math.radians(theta_degrees)
    return np.array([sign * math.sin(t), math.cos(t)])


def _rotate(points, degrees):
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return points @ rot.T


def pose_keypoints(rng, height):
    """A random pose -> (joints float64 [17, 2] relative to the mid-hip point, in pixels,
    side_visibility int [17] (2 visible, 1 hidden behind the body), view dict)."""
    side_view = rng.random() < SIDE_VIEW_PROBABILITY
    facing = 1 if rng.random() < 0.5 else -1  # side view: +1 faces image right
    poses = SIDE_POSES if side_view else FRONT_POSES
    name = list(poses)[rng.integers(len(poses))]
    left_angles, right_angles = poses[name]
    if rng.random() < 0.5:  # mirrored pose: the other side does it
        left_angles, right_angles = right_angles, left_angles
    jitter = rng.normal(0.0, ANGLE_JITTER_DEGREES, size=(2, 4))
    left_angles = np.array(left_angles, float) + jitter[0]
    right_angles = np.array(right_angles, float) + jitter[1]

    # Image-x sign of "outward/forward" for the left and right limbs.
    left_sign, right_sign = (facing, facing) if side_view else (1, -1)
    # Which side is nearer the viewer (drawn last, fully visible).
    near_left = side_view and facing < 0
    joints = np.zeros((constants.NUM_KEYPOINTS, 2))
    neck = np.array([0.0, NECK_Y])
    for side, angles, sign, shoulder_i, elbow_i, wrist_i, hip_i, knee_i, ankle_i in (
            ("left", left_angles, left_sign, 5, 7, 9, 11, 13, 15),
            ("right", right_angles, right_sign, 6, 8, 10, 12, 14, 16)):
        if side_view:  # shoulders and hips nearly overlap; the far one sits a bit forward
            near = (side == "left") == near_left
            dx = (-facing if near else facing) * SIDE_SQUEEZE
        else:  # facing the viewer: the person's left is on the image's right
            dx = 1.0 if side == "left" else -1.0
        shoulder = neck + np.array([dx * SHOULDER_HALF_WIDTH, 0.0])
        hip = np.array([dx * HIP_HALF_WIDTH, 0.0])
        thigh_length = THIGH
        if not side_view and name == "sitting":
            thigh_length = THIGH * 0.45
        elbow = shoulder + UPPER_ARM * _direction(angles[0], sign)
        wrist = elbow + FOREARM * _direction(angles[1], sign)
        knee = hip + thigh_length * _direction(angles[2], sign)
        ankle = knee + SHIN * _direction(angles[3], sign)
        for index, point in ((shoulder_i, shoulder), (elbow_i, elbow), (wrist_i, wrist),
                             (hip_i, hip), (knee_i, knee), (ankle_i, ankle)):
            joints[index] = point

    head = neck + np.array([0.0, -HEAD_ABOVE_NECK])
    r = HEAD_RADIUS
    if side_view:
        near_eye, far_eye = (1, 2) if near_left else (2, 1)
        near_ear, far_ear = (3, 4) if near_left else (4, 3)
        joints[0] = head + [facing * 1.05 * r, 0.15 * r]
        joints[near_eye] = head + [facing * 0.55 * r, -0.2 * r]
        joints[far_eye] = head + [facing * 0.75 * r, -0.22 * r]
        joints[near_ear] = head + [-facing * 0.15 * r, 0.0]
        joints[far_ear] = head + [-facing * 0.05 * r, -0.05 * r]
    else:
        joints[0] = head + [0.0, 0.15 * r]
        joints[1] = head + [0.38 * r, -0.15 * r]
        joints[2] = head + [-0.38 * r, -0.15 * r]
        joints[3] = head + [0.95 * r, 0.0]
        joints[4] = head + [-0.95 * r, 0.0]

    tilt = rng.normal(0.0, TILT_JITTER_DEGREES)
    joints = _rotate(joints, tilt)
    head = _rotate(head[None], tilt)[0]
    neck = _rotate(neck[None], tilt)[0]
    visibility = np.full(constants.NUM_KEYPOINTS, 2, dtype=np.int64)
    if side_view:
        far = [2, 4, 6, 8, 10, 12, 14, 16] if near_left else [1, 3, 5, 7, 9, 11, 13, 15]
        visibility[far] = 1
    view = {"side_view": side_view, "facing": facing, "near_left": near_left, "pose": name,
            "head": head * height, "neck": neck * height}
    return joints * height, visibility, view


def draw_person(draws, joints, view, height, colours):
    """Draw one person with every ImageDraw in draws (the image, then its mask)."""
    side_view, near_left = view["side_view"], view["near_left"]
    head, neck = view["head"], view["neck"]
    pelvis = (joints[11] + joints[12]) / 2

    def limb(draw, a, b, width, colour):
        width = max(int(round(width * height)), 2)
        draw.line([tuple(a), tuple(b)], fill=colour, width=width)
        for p in (a, b):  # round joints
            draw.ellipse([p[0] - width / 2, p[1] - width / 2, p[0] + width / 2,
                          p[1] + width / 2], fill=colour)

    def side_limbs(draw, side, fill_for):
        s = {"left": (5, 7, 9, 11, 13, 15), "right": (6, 8, 10, 12, 14, 16)}[side]
        shoulder, elbow, wrist, hip, knee, ankle = (joints[i] for i in s)
        limb(draw, hip, knee, LEG_WIDTH, fill_for("trousers", side))
        limb(draw, knee, ankle, LEG_WIDTH * 0.9, fill_for("trousers", side))
        limb(draw, shoulder, elbow, ARM_WIDTH, fill_for("shirt", side))
        limb(draw, elbow, wrist, ARM_WIDTH * 0.85, fill_for("skin", side))

    def torso(draw, colour):
        spine = pelvis - neck
        normal = np.array([-spine[1], spine[0]]) / (np.linalg.norm(spine) + 1e-9)
        shoulder_half = max(np.linalg.norm(joints[5] - joints[6]) / 2,
                            MIN_TORSO_HALF_WIDTH * height)
        hip_half = max(np.linalg.norm(joints[11] - joints[12]) / 2,
                       MIN_TORSO_HALF_WIDTH * 0.9 * height)
        corners = [neck + normal * shoulder_half, neck - normal * shoulder_half,
                   pelvis - normal * hip_half, pelvis + normal * hip_half]
        draw.polygon([tuple(c) for c in corners], fill=colour)

    def head_shape(draw, colour, face):
        r = HEAD_RADIUS * height
        limb(draw, neck, head, NECK_WIDTH, colour("skin", None))
        draw.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r],
                     fill=colour("skin", None))
        if side_view:  # the nose sticks out of the profile
            n = joints[0]
            nr = 0.28 * r
            draw.ellipse([n[0] - nr, n[1] - nr, n[0] + nr, n[1] + nr],
                         fill=colour("skin", None))
        if face:
            eyes = (1, 2) if not side_view else ((1,) if near_left else (2,))
            er = max(0.14 * r, 1.0)
            for e in eyes:
                p = joints[e]
                draw.ellipse([p[0] - er, p[1] - er, p[0] + er, p[1] + er], fill=(20, 20, 20))
            # hair: a dark cap on the top of the head
            draw.chord([head[0] - r, head[1] - r, head[0] + r, head[1] + r], 190, 350,
                       fill=colours["hair"])

    for draw, is_mask in draws:
        if is_mask:
            def fill_for(part, side):
                return 255
        else:
            def fill_for(part, side):
                base = np.array(colours[part], float)
                if side == "left":
                    base = base * LEFT_SHADE
                return tuple(int(v) for v in base)
        if side_view:
            far_side, near_side = ("right", "left") if near_left else ("left", "right")
            side_limbs(draw, far_side, fill_for)
            torso(draw, fill_for("shirt", None))
            side_limbs(draw, near_side, fill_for)
        else:
            # legs behind the torso, then arms in front
            for side in ("left", "right"):
                s = {"left": (11, 13, 15), "right": (12, 14, 16)}[side]
                limb(draw, joints[s[0]], joints[s[1]], LEG_WIDTH, fill_for("trousers", side))
                limb(draw, joints[s[1]], joints[s[2]], LEG_WIDTH * 0.9,
                     fill_for("trousers", side))
            torso(draw, fill_for("shirt", None))
            for side in ("left", "right"):
                s = {"left": (5, 7, 9), "right": (6, 8, 10)}[side]
                limb(draw, joints[s[0]], joints[s[1]], ARM_WIDTH, fill_for("shirt", side))
                limb(draw, joints[s[1]], joints[s[2]], ARM_WIDTH * 0.85, fill_for("skin", side))
        head_shape(draw, fill_for, face=not is_mask)


# ------------------------------------------------------------------ backgrounds
def draw_background(rng, size):
    """Gradient + smooth noise + fine noise + clutter shapes -> PIL RGB image."""
    c0, c1 = rng.uniform(40, 230, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)  # [S]
    t = np.float32(math.cos(angle)) * ramp[None, :] + np.float32(math.sin(angle)) * ramp[:, None]
    t = (t - t.min()) / (np.ptp(t) + 1e-6)  # [S, S] in 0..1
    cells = int(rng.integers(4, 17))
    smooth = (rng.standard_normal((cells, cells, 3), dtype=np.float32)
              * np.float32(rng.uniform(8, 30)))
    grain = rng.standard_normal((size, size), dtype=np.float32) * np.float32(rng.uniform(2, 9))
    image = np.empty((size, size, 3), dtype=np.float32)
    for c in range(3):  # gradient + smooth blotches + grain, one channel at a time
        image[..., c] = c0[c] + (c1[c] - c0[c]) * t + grain + np.asarray(
            Image.fromarray(smooth[..., c], "F").resize((size, size), Image.BICUBIC))
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    scale = size / 256.0
    for _ in range(int(rng.integers(3, 13))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        kind = rng.integers(4)
        cx, cy = rng.uniform(-10, size + 10, size=2)
        w, h = rng.uniform(8, 70, size=2) * scale
        if kind == 0:
            h = min(h, 3.5 * w)  # no tall thin bars: they would look like limbs
            w = min(w, 3.5 * h)
            draw.rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=colour)
        elif kind == 1:
            draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=colour,
                         outline=None if rng.random() < 0.7 else (0, 0, 0))
        elif kind == 2:
            points = [(cx + rng.uniform(-w, w), cy + rng.uniform(-h, h)) for _ in range(3)]
            draw.polygon(points, fill=colour)
        else:
            points = [(cx + rng.uniform(-2 * w, 2 * w), cy + rng.uniform(-2 * h, 2 * h))
                      for _ in range(int(rng.integers(2, 5)))]
            draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    return pil


# ------------------------------------------------------------------ one image
def _box_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_image(rng, image_size=256, max_people=4):
    """One synthetic image -> (uint8 [S, S, 3], list of people dicts with keys
    "keypoints" float [17, 3] (x, y, v) and "mask" bool [S, S] (visible part))."""
    size = int(image_size)
    scale = size / 256.0
    probs = np.array(PEOPLE_PER_IMAGE_PROBS[:max_people + 1], float)
    count = int(rng.choice(len(probs), p=probs / probs.sum()))
    placed = []  # (joints, visibility, view, height, colours, box)
    for _ in range(count):
        for _attempt in range(20):
            height = float(np.exp(rng.uniform(np.log(60), np.log(200)))) * scale
            joints, visibility, view = pose_keypoints(rng, height)
            lo = joints.min(axis=0) - HEAD_RADIUS * height
            hi = joints.max(axis=0) + HEAD_RADIUS * height
            extent = hi - lo
            # Mostly inside; up to a fifth of the body may leave the image.
            origin = rng.uniform(-lo - 0.2 * extent, size - hi + 0.2 * extent)
            box = (*(lo + origin), *(hi + origin))
            if all(_box_iou(box, p[5]) < 0.3 for p in placed):
                view["head"] = view["head"] + origin
                view["neck"] = view["neck"] + origin
                colours = {
                    "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))],
                    "shirt": tuple(int(v) for v in rng.integers(30, 256, size=3)),
                    "trousers": tuple(int(v) for v in rng.integers(0, 200, size=3)),
                    "hair": tuple(int(v) for v in rng.integers(0, 90, size=3)),
                }
                placed.append((joints + origin, visibility, view, height, colours, box))
                break
    # Far people (higher feet in the picture) first, so nearer ones cover them.
    placed.sort(key=lambda p: p[5][3])

    image = draw_background(rng, size)
    full_masks = []
    for joints, _, view, height, colours, _ in placed:
        mask = Image.new("L", (size, size), 0)
        draw_person([(ImageDraw.Draw(image), False), (ImageDraw.Draw(mask), True)], joints,
                     view, height, colours)
        full_masks.append(np.asarray(mask) > 0)

    people = []
    covered_later = np.zeros((size, size), dtype=bool)
    for index in range(len(placed) - 1, -1, -1):  # front to back
        joints, visibility, _, _, _, _ = placed[index]
        visible_mask = full_masks[index] & ~covered_later
        covered_later |= full_masks[index]
        keypoints = np.zeros((constants.NUM_KEYPOINTS, 3))
        keypoints[:, :2] = joints
        keypoints[:, 2] = visibility
        inside = (joints[:, 0] >= 0) & (joints[:, 0] < size) & (joints[:, 1] >= 0) & \
                 (joints[:, 1] < size)
        for j in np.flatnonzero(inside):
            px, py = int(joints[j, 0]), int(joints[j, 1])
            if full_masks[index][py, px] and not visible_mask[py, px]:
                keypoints[j, 2] = 1  # covered by a person in front
        keypoints[~inside] = 0.0
        people.append({"keypoints": keypoints, "mask": visible_mask})
    people.reverse()
    return np.asarray(image), people
