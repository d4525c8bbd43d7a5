"""People tracked across video frames: each detected person keeps an id.

    tracker = PoseTracker()
    for result in predictor_results:          # Predictor.detect() dicts, frame after frame
        result = tracker.update(result)       # the same dict plus "track_ids" int32 [n]

Matching, frame after frame: every live track is moved by its velocity (pixels per frame, from
its last two sightings) to where it should be now; the similarity of a track and a detection is
    oks_weight * OKS(joints) + (1 - oks_weight) * IoU(boxes)
with OKS as COCO computes it (mrcnn_kp.constants.OKS_SIGMAS, the track's box area as the
object's scale, over the joints both score above min_joint_score; IoU alone when they share
none). The pairs are chosen by an optimal assignment (scipy.optimize.linear_sum_assignment,
maximising total similarity); pairs under min_similarity are not matched. An unmatched detection
starts a new track (ids 1, 2, 3, ...); a track that is not seen keeps its id for max_lost frames
(a person behind another or briefly missed), then is forgotten. Detections scoring under
min_score are not tracked (track id -1).

smoothing: None, or a smoothing.OneEuroFilter per track over its joints' (x, y) (the joints
then lag less than an average and jitter less than the raw output); off by default.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

from mrcnn_kp import constants

UNTRACKED = -1


def box_iou_matrix(a, b):
    """IoU of boxes a [N, 4] and b [M, 4] (x1, y1, x2, y2) -> [N, M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def oks_matrix(a, b, areas, min_joint_score=0.0, sigmas=constants.OKS_SIGMAS):
    """COCO object keypoint similarity of poses a [N, K, 3] and b [M, K, 3] (x, y, score).

    areas [N]: the object scale s^2 of each pose of a. Only joints scoring above
    min_joint_score in both poses count. Returns (oks [N, M], shared joint counts [N, M]).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2  # [K]
    d2 = np.sum((a[:, None, :, :2] - b[None, :, :, :2]) ** 2, axis=3)  # [N, M, K]
    scale = np.maximum(np.asarray(areas, np.float64), 1.0)[:, None, None]
    e = d2 / variances / scale / 2.0
    shared = (a[:, None, :, 2] > min_joint_score) & (b[None, :, :, 2] > min_joint_score)
    counts = shared.sum(axis=2)
    oks = np.where(counts > 0, np.sum(np.exp(-e) * shared, axis=2) / np.maximum(counts, 1), 0.0)
    return oks, counts


class _Track:
    def __init__(self, track_id, box, keypoints, frame):
        self.id = track_id
        self.box = box  # [4]
        self.keypoints = keypoints  # [K, 3] or None
        self.velocity = np.zeros(2)  # pixels per frame
        self.last_frame = frame
        self.hits = 1
        self.filter = None

    def predicted(self, frame):
        """(box [4], keypoints [K, 3] or None) moved by the velocity to `frame`."""
        shift = self.velocity * (frame - self.last_frame)
        box = self.box + np.tile(shift, 2)
        keypoints = None
        if self.keypoints is not None:
            keypoints = self.keypoints.copy()
            keypoints[:, :2] += shift
        return box, keypoints

    def observe(self, box, keypoints, frame):
        gap = max(frame - self.last_frame, 1)
        motion = ((box[:2] + box[2:]) - (self.box[:2] + self.box[2:])) / 2.0 / gap
        self.velocity = motion if self.hits == 1 else 0.5 * self.velocity + 0.5 * motion
        self.box, self.keypoints, self.last_frame = box, keypoints, frame
        self.hits += 1


class PoseTracker:
    """Gives each person of consecutive Predictor results a track id (see the module doc)."""

    def __init__(self, max_lost=10, min_similarity=0.2, oks_weight=0.5, min_score=0.5,
                 min_joint_score=0.0, smoothing=None):
        if not 0.0 <= oks_weight <= 1.0:
            raise ValueError(f"oks_weight must be in [0, 1], got {oks_weight}")
        self.max_lost = int(max_lost)
        self.min_similarity = float(min_similarity)
        self.oks_weight = float(oks_weight)
        self.min_score = float(min_score)
        self.min_joint_score = float(min_joint_score)
        self.smoothing = smoothing  # None or a callable () -> filter with .filter(values, time)
        self.tracks = []
        self.frame = -1
        self.next_id = 1

    def similarity(self, tracks, boxes, keypoints):
        """[T, D] similarity of the tracks (moved to this frame) and the detections."""
        predicted = [t.predicted(self.frame) for t in tracks]
        track_boxes = np.array([p[0] for p in predicted]).reshape(-1, 4)
        sim = box_iou_matrix(track_boxes, boxes)
        if keypoints is None or any(p[1] is None for p in predicted) or self.oks_weight == 0:
            return sim
        areas = np.prod(np.clip(track_boxes[:, 2:] - track_boxes[:, :2], 0, None), axis=1)
        oks, shared = oks_matrix(np.stack([p[1] for p in predicted]), keypoints, areas,
                                 self.min_joint_score)
        return np.where(shared > 0, self.oks_weight * oks + (1 - self.oks_weight) * sim, sim)

    def update(self, result, time=None):
        """One frame's result dict -> a copy with "track_ids" int32 [n] (UNTRACKED for
        detections under min_score); keypoints smoothed when smoothing is on. time: the
        frame's time in seconds (for the smoothing; default: frame count / 30)."""
        self.frame += 1
        time = self.frame / 30.0 if time is None else float(time)
        rois = np.asarray(result.get("rois", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        scores = result.get("scores")
        scores = np.ones(len(rois)) if scores is None else np.asarray(scores).reshape(-1)
        all_keypoints = result.get("keypoints")
        ids = np.full(len(rois), UNTRACKED, np.int32)
        candidates = np.flatnonzero(scores >= self.min_score)
        boxes = rois[candidates]
        keypoints = None
        if all_keypoints is not None:
            keypoints = np.asarray(all_keypoints, np.float64)[candidates]
        # forget tracks lost for too long, then match
        self.tracks = [t for t in self.tracks if self.frame - t.last_frame <= self.max_lost + 1]
        matched_tracks, matched_dets = [], []
        if self.tracks and len(candidates):
            sim = self.similarity(self.tracks, boxes, keypoints)  # [T, D]
            rows, cols = linear_sum_assignment(-sim)
            for r, c in zip(rows, cols):
                if sim[r, c] >= self.min_similarity:
                    matched_tracks.append(r)
                    matched_dets.append(c)
        for r, c in zip(matched_tracks, matched_dets):
            track = self.tracks[r]
            track.observe(boxes[c], None if keypoints is None else keypoints[c], self.frame)
            ids[candidates[c]] = track.id
        for c in range(len(candidates)):
            if c not in matched_dets:
                track = _Track(self.next_id, boxes[c],
                               None if keypoints is None else keypoints[c], self.frame)
                self.next_id += 1
                self.tracks.append(track)
                ids[candidates[c]] = track.id
        out = dict(result)
        out["track_ids"] = ids
        if self.smoothing is not None and all_keypoints is not None and len(candidates):
            out["keypoints"] = self._smoothed(np.asarray(all_keypoints), ids, time)
        return out

    def _smoothed(self, keypoints, ids, time):
        keypoints = np.array(keypoints, np.float32, copy=True)  # [n, K, 3]
        by_id = {t.id: t for t in self.tracks}
        for i, track_id in enumerate(ids):
            track = by_id.get(int(track_id))
            if track is None:
                continue
            if track.filter is None:
                track.filter = self.smoothing()
            keypoints[i, :, :2] = track.filter.filter(keypoints[i, :, :2], time)
        return keypoints


def track_results(pairs, tracker=None):
    """(key, result) pairs in frame order (Predictor.predict_stream) -> (key, tracked result).

    A key with a `time` attribute (video.Frame) gives the frame's time to the tracker."""
    tracker = tracker or PoseTracker()
    for key, result in pairs:
        yield key, tracker.update(result, time=getattr(key, "time", None))
