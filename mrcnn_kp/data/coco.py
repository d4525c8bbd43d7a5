"""COCO person keypoints (or any COCO-format person-keypoint json) through pycocotools.

    dataset = CocoKeypointDataset("person_keypoints_train2017.json", "train2017/")
    dataset.summary      # images, persons (with keypoints), crowd regions, skipped, converted
    dataset.coco         # the pycocotools COCO object, for COCOeval
    dataset.image_info[i]["id"]   # the original COCO image id of image i

What it does with each kind of record:
- polygon, RLE and uncompressed-RLE masks through pycocotools; a person without a segmentation
  gets its box as mask (counted);
- crowd regions (iscrowd = 1) come back with class id -1: never positives, never background;
- persons with num_keypoints = 0 keep their box and mask with every v = 0 (no keypoint loss);
- images without persons are kept as negatives unless include_negatives=False.
Bad input never reaches training: a missing or unreadable image file, an image whose size
differs from the json, an annotation for an image that is not in the json, a malformed
annotation or a zero-size box is logged and skipped; keypoints outside the image are set to
v = 0, a keypoint array of the wrong length is dropped (the person stays, without keypoints),
grayscale / RGBA / 16-bit images are converted to RGB uint8. Every case is counted in
`summary`, which is logged once after loading.

Keypoints are used as stored: COCO's integer pixel indices are taken as continuous
coordinates, with no +0.5 (torchvision's convention, and the one
mrcnn_kp.inference.coco_eval.KEYPOINT_OFFSET = 0 assumes when it writes results).

The held-out split (subset="train" | "val") is a seeded permutation of the sorted image ids of
the whole json, so the two subsets are disjoint and the same on every machine.
"""
import contextlib
import io
import json
import math
import os
from collections import Counter

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn_kp import constants
from mrcnn_kp.data.dataset import Dataset, conversion_for_mode
from mrcnn_kp.utils import get_logger

SUBSETS = (None, "all", "train", "val")
# How many examples of each problem are logged one by one before only the count goes on.
MAX_LOGGED_PER_REASON = 5

# Reasons, as they appear in summary["skipped"] / summary["converted"] and in the log.
MISSING_FILE = "missing image file"
UNREADABLE_FILE = "unreadable image file"
SIZE_MISMATCH = "image size differs from the json"
MALFORMED_IMAGE = "malformed image record"
UNKNOWN_IMAGE = "annotation for an image not in the json"
MALFORMED_ANNOTATION = "malformed annotation"
OTHER_CATEGORY = "annotation of another category"
INVALID_BOX = "invalid box"
ZERO_SIZE_BOX = "zero-size box"
NO_PERSONS = "image without persons"
KEYPOINT_OUTSIDE = "keypoint outside the image (set to v = 0)"
WRONG_KEYPOINT_LENGTH = "wrong keypoint array length (person kept without keypoints)"
NO_SEGMENTATION = "no segmentation (box used as mask)"


def split_image_ids(image_ids, subset, val_fraction=0.1, seed=0):
    """The image ids of one subset of a deterministic train / val split.

    Sorted ids are permuted with numpy's seeded generator; the first round(n * val_fraction)
    are "val", the rest "train". subset None or "all" returns every id. Returned sorted.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    ids = sorted(image_ids)
    if subset in (None, "all"):
        return ids
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(ids))
    num_val = int(round(len(ids) * val_fraction))
    chosen = order[:num_val] if subset == "val" else order[num_val:]
    return sorted(ids[i] for i in chosen)


class CocoKeypointDataset(Dataset):
    """Persons with keypoints from a COCO-format json and an image folder."""

    source = "coco"

    def __init__(self, annotation_json, image_dir, subset=None, val_fraction=0.1, split_seed=0,
                 include_negatives=True, verify_images=True, max_images=None, name=None):
        """
        annotation_json: path to a COCO json (or the already-parsed dict).
        image_dir: folder holding the images' file_name paths.
        subset: None / "all", or "train" / "val" of split_image_ids(val_fraction, split_seed).
        include_negatives: keep images without (non-crowd) persons as negatives.
        verify_images: open every image header once (size, mode, readable) while loading;
            without it, files are only checked for existence and problems surface in the
            pipeline, which skips the image and counts it.
        max_images: stop after this many usable images (quick experiments, tests).
        """
        super().__init__()
        self.annotation_json = annotation_json if isinstance(annotation_json, dict) \
            else os.fspath(annotation_json)
        self.image_dir = os.fspath(image_dir)
        self.subset = subset
        self.name = name or (os.path.basename(self.annotation_json)
                             if isinstance(self.annotation_json, str) else "coco dict")
        self._logger = get_logger("mrcnn_kp.data.coco")
        self._skipped = Counter()
        self._converted = Counter()

        self.coco = self._load_coco(annotation_json)
        self.person_category_id = self._person_category_id()
        self.add_class(self.source, self.person_category_id, "person")
        self._count_unknown_image_annotations()
        keep_ids = split_image_ids(self.coco.imgs.keys(), subset, val_fraction, split_seed)
        for coco_id in keep_ids:
            if max_images is not None and len(self.image_info) >= max_images:
                break
            self._add_coco_image(coco_id, include_negatives, verify_images)
        self.prepare()
        self.summary = self._make_summary()
        self._logger.info(self.summary_text())

    # ------------------------------------------------------------------ loading the json
    def _load_coco(self, annotation_json):
        if isinstance(annotation_json, dict):
            data = json.loads(json.dumps(annotation_json))  # private copy
        else:
            try:
                with open(annotation_json, encoding="utf-8") as f:
                    data = json.load(f)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"COCO annotation file not found: {annotation_json}") \
                    from err
            except json.JSONDecodeError as err:
                raise ValueError(f"{annotation_json} is not valid JSON: {err}") from err
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError(f"{self.name}: not a COCO json (no 'images' list)")
        data.setdefault("annotations", [])
        data.setdefault("categories", [{"id": constants.PERSON_CATEGORY_ID, "name": "person"}])
        images = []
        for image in data["images"]:
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                self._note("skipped", MALFORMED_IMAGE, f"{str(image)[:80]}")
                continue
            images.append(image)
        data["images"] = images
        annotations = []
        for ann in data["annotations"]:
            if not isinstance(ann, dict) or any(k not in ann for k in ("id", "image_id",
                                                                       "category_id")):
                self._note("skipped", MALFORMED_ANNOTATION, f"{str(ann)[:80]}")
                continue
            ann.setdefault("iscrowd", 0)
            annotations.append(ann)
        data["annotations"] = annotations
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        return coco

    def _person_category_id(self):
        cats = self.coco.dataset["categories"]
        persons = [c["id"] for c in cats if c.get("name") == "person"]
        if persons:
            return persons[0]
        if len(cats) == 1:
            return cats[0]["id"]
        raise ValueError(f"{self.name}: no 'person' category among "
                         f"{[c.get('name') for c in cats]}")

    def _count_unknown_image_annotations(self):
        for image_id, anns in self.coco.imgToAnns.items():
            if image_id not in self.coco.imgs:
                for ann in anns:
                    self._note("skipped", UNKNOWN_IMAGE,
                               f"annotation {ann['id']} refers to image {image_id}")

    # ------------------------------------------------------------------ one image
    def _add_coco_image(self, coco_id, include_negatives, verify_images):
        image = self.coco.imgs[coco_id]
        path = os.path.join(self.image_dir, image["file_name"])
        if not os.path.isfile(path):
            self._note("skipped", MISSING_FILE, path)
            return
        height, width = image.get("height"), image.get("width")
        if verify_images or not height or not width:
            try:
                with Image.open(path) as pil:
                    file_width, file_height = pil.size
                    conversion = conversion_for_mode(pil.mode)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
                self._note("skipped", UNREADABLE_FILE, f"{path}: {err}")
                return
            if height and width and (int(height), int(width)) != (file_height, file_width):
                self._note("skipped", SIZE_MISMATCH,
                           f"{path} is {file_width}x{file_height}, the json says "
                           f"{width}x{height}")
                return
            height, width = file_height, file_width
            image["height"], image["width"] = height, width  # annToMask needs them
            if conversion:
                self._note("converted", conversion, path, level="debug")
        records = []
        for ann in self.coco.imgToAnns.get(coco_id, []):
            record = self._clean_annotation(ann, int(height), int(width))
            if record is not None:
                records.append(record)
        num_persons = sum(not r["crowd"] for r in records)
        if num_persons == 0 and not include_negatives:
            self._note("skipped", NO_PERSONS, path, level="debug")
            return
        self.add_image(self.source, image_id=coco_id, path=path, width=int(width),
                       height=int(height), annotations=records)

    def _clean_annotation(self, ann, height, width):
        """A usable annotation -> record dict, or None (counted) when it cannot be used."""
        where = f"annotation {ann['id']} (image {ann['image_id']})"
        if ann["category_id"] != self.person_category_id:
            self._note("skipped", OTHER_CATEGORY, where, level="debug")
            return None
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            self._note("skipped", INVALID_BOX, f"{where}: bbox {bbox!r}")
            return None
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            self._note("skipped", INVALID_BOX, f"{where}: bbox {bbox!r}")
            return None
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x2 - x1 < 1.0 or y2 - y1 < 1.0:
            self._note("skipped", ZERO_SIZE_BOX, f"{where}: bbox {bbox!r} in a {width}x{height} "
                                                 f"image")
            return None
        crowd = bool(ann.get("iscrowd", 0))
        keypoints = None if crowd else self._clean_keypoints(ann, height, width, where)
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            segmentation = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not segmentation:
            self._note("converted", NO_SEGMENTATION, where, level="debug")
            segmentation = None
        return {"ann_id": ann["id"], "crowd": crowd, "box": (x1, y1, x2, y2),
                "keypoints": keypoints, "segmentation": segmentation}

    def _clean_keypoints(self, ann, height, width, where):
        """float32 [K, 3] (x, y, v) with every labelled joint inside the image, or None."""
        values = ann.get("keypoints")
        if values is None or len(values) == 0:
            return None
        k = constants.NUM_KEYPOINTS
        if len(values) != 3 * k:
            self._note("converted", WRONG_KEYPOINT_LENGTH,
                       f"{where}: {len(values)} numbers, expected {3 * k}")
            return None
        keypoints = np.asarray(values, dtype=np.float32).reshape(k, 3)
        labelled = keypoints[:, 2] > 0
        inside = (np.isfinite(keypoints[:, :2]).all(axis=1)
                  & (keypoints[:, 0] >= 0) & (keypoints[:, 0] <= width)
                  & (keypoints[:, 1] >= 0) & (keypoints[:, 1] <= height))
        outside = labelled & ~inside
        for j in np.flatnonzero(outside):
            self._note("converted", KEYPOINT_OUTSIDE,
                       f"{where}: {constants.KEYPOINT_NAMES[j]} at ({keypoints[j, 0]:g}, "
                       f"{keypoints[j, 1]:g}) outside the {width}x{height} image")
        keypoints[~(labelled & inside)] = 0.0
        keypoints[:, 2] = np.where(keypoints[:, 2] > 0, np.minimum(keypoints[:, 2], 2), 0)
        return keypoints

    # ------------------------------------------------------------------ bookkeeping
    def _note(self, kind, reason, detail, level="warning"):
        counter = self._skipped if kind == "skipped" else self._converted
        counter[reason] += 1
        if level == "debug" or counter[reason] > MAX_LOGGED_PER_REASON:
            self._logger.debug("%s: %s %s: %s", self.name, kind, reason, detail)
            return
        log = self._logger.info if level == "info" else self._logger.warning
        suffix = " (further cases are counted, not logged)" \
            if counter[reason] == MAX_LOGGED_PER_REASON else ""
        log("%s: %s %s: %s%s", self.name, kind, reason, detail, suffix)

    def _make_summary(self):
        persons = with_keypoints = crowd = negatives = 0
        for info in self.image_info:
            records = info["annotations"]
            n = sum(not r["crowd"] for r in records)
            persons += n
            crowd += len(records) - n
            negatives += n == 0
            with_keypoints += sum(r["keypoints"] is not None and bool((r["keypoints"][:, 2] > 0)
                                                                      .any())
                                  for r in records if not r["crowd"])
        return {"images": len(self.image_info), "persons": persons,
                "persons_with_keypoints": with_keypoints, "crowd_regions": crowd,
                "negative_images": negatives, "skipped": dict(self._skipped),
                "converted": dict(self._converted)}

    def summary_text(self):
        s = self.summary
        subset = f" [{self.subset}]" if self.subset not in (None, "all") else ""

        def listing(counts):
            return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "none"

        return (f"{self.name}{subset}: {s['images']} images, {s['persons']} persons "
                f"({s['persons_with_keypoints']} with keypoints), {s['crowd_regions']} crowd "
                f"regions, {s['negative_images']} images without persons; skipped: "
                f"{listing(s['skipped'])}; converted: {listing(s['converted'])}")

    # ------------------------------------------------------------------ ids
    @property
    def coco_image_ids(self):
        """Original COCO image id of every image, in dataset order."""
        return [info["id"] for info in self.image_info]

    def image_index(self, coco_image_id):
        """Dataset index of an original COCO image id."""
        return self.image_from_source_map[f"{self.source}.{coco_image_id}"]

    def image_reference(self, image_id):
        info = self.image_info[image_id]
        return f"{info['path']} (COCO id {info['id']})"

    # ------------------------------------------------------------------ annotations
    def _record_mask(self, record, height, width):
        if record["segmentation"] is not None:
            segm = record["segmentation"]
            try:
                if isinstance(segm, list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
                elif isinstance(segm.get("counts"), list):
                    rle = mask_utils.frPyObjects(segm, height, width)
                else:
                    rle = segm
                mask = mask_utils.decode(rle).astype(bool)
                if mask.shape == (height, width):
                    return mask
            except Exception as err:  # a corrupt RLE must not stop training
                self._logger.warning("%s: bad segmentation of annotation %s (%s); the box is "
                                     "used as mask", self.name, record["ann_id"], err)
        mask = np.zeros((height, width), dtype=bool)
        x1, y1, x2, y2 = record["box"]
        mask[int(math.floor(y1)):int(math.ceil(y2)), int(math.floor(x1)):int(math.ceil(x2))] = True
        return mask

    def load_mask(self, image_id):
        """(masks bool [H, W, N], class_ids int32 [N]): 1 for persons, -1 for crowd regions."""
        info = self.image_info[image_id]
        height, width = info["height"], info["width"]
        records = info["annotations"]
        masks = np.zeros((height, width, len(records)), dtype=bool)
        for i, record in enumerate(records):
            masks[:, :, i] = self._record_mask(record, height, width)
        class_id = self.map_source_class_id(f"{self.source}.{self.person_category_id}")
        class_ids = np.array([-class_id if r["crowd"] else class_id for r in records],
                             dtype=np.int32)
        return masks, class_ids

    def load_keypoints(self, image_id):
        """float32 [N, 17, 3] (x, y, v); all zero for crowd regions and persons without any."""
        records = self.image_info[image_id]["annotations"]
        out = np.zeros((len(records), constants.NUM_KEYPOINTS, 3), dtype=np.float32)
        for i, record in enumerate(records):
            if record["keypoints"] is not None:
                out[i] = record["keypoints"]
        return out

    def load_boxes(self, image_id, masks=None):
        """float32 [N, 4] (x1, y1, x2, y2): COCO's bbox, clipped to the image."""
        records = self.image_info[image_id]["annotations"]
        return np.array([r["box"] for r in records], dtype=np.float32).reshape(-1, 4)
