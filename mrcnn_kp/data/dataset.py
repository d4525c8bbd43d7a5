"""The Dataset base class, in matterport's spirit: subclass it for your own data.

    class MyPeople(Dataset):
        def __init__(self, records):
            super().__init__()
            self.add_class("mine", 1, "person")
            for r in records:
                self.add_image("mine", image_id=r["id"], path=r["file"], record=r)
            self.prepare()

        def load_mask(self, image_id):          # bool [H, W, N], int32 [N]
            ...
        def load_keypoints(self, image_id):     # float32 [N, K, 3] (x, y, v), same order
            ...

`image_id` everywhere is the dataset's own index 0..num_images-1 (matterport's convention);
`image_info[image_id]["id"]` keeps the source's id. Instances of a crowd region carry the
negative class id (-1 for person), as in matterport. Coordinates are continuous pixels of the
original image (docs/DESIGN.md).
"""
import numpy as np
from PIL import Image, UnidentifiedImageError

from mrcnn_kp import constants


class ImageReadError(RuntimeError):
    """An image file is missing, unreadable, or has an unusable format."""


def read_image(path):
    """Read an image file as RGB uint8 [H, W, 3]; returns (image, conversion).

    conversion names what had to be changed to get there ("grayscale image", "RGBA image",
    "16-bit image", "palette image", ...) or is None. Raises ImageReadError with the path for a
    missing or undecodable file.
    """
    try:
        with Image.open(path) as pil:
            pil.load()
            return to_rgb_uint8(pil)
    except FileNotFoundError as err:
        raise ImageReadError(f"missing image file {path}") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"unreadable image file {path}: {err}") from err


def conversion_for_mode(mode):
    """What to_rgb_uint8 will do to a Pillow image of this mode (None: nothing)."""
    if mode == "RGB":
        return None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return "16-bit image"
    if mode in ("L", "1", "LA"):
        return "grayscale image"
    if mode in ("RGBA", "RGBa"):
        return "RGBA image"
    return f"{mode} image"


def to_rgb_uint8(pil):
    """Pillow image of any mode -> (uint8 [H, W, 3], conversion or None)."""
    conversion = conversion_for_mode(pil.mode)
    if conversion == "16-bit image":
        values = np.asarray(pil).astype(np.float64)  # [H, W]
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), conversion
    if pil.mode != "RGB":
        pil = pil.convert("RGB")  # grayscale replicated, alpha dropped, palette expanded
    return np.asarray(pil, dtype=np.uint8), conversion


def boxes_from_masks(masks):
    """Tight boxes of masks bool [H, W, N] -> float32 [N, 4] (x1, y1, x2, y2), continuous
    pixels (a mask covering pixel columns 3..5 gives x1 = 3, x2 = 6); 0 for empty masks."""
    count = masks.shape[-1]
    boxes = np.zeros((count, 4), dtype=np.float32)
    for i in range(count):
        rows = np.flatnonzero(masks[:, :, i].any(axis=1))
        cols = np.flatnonzero(masks[:, :, i].any(axis=0))
        if rows.size and cols.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


class Dataset:
    """Images and their person instances; subclass and override the load_* methods."""

    def __init__(self):
        self._image_ids = []
        self.image_info = []
        # Background is always the first class.
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}

    # ------------------------------------------------------------------ building
    def add_class(self, source, class_id, class_name):
        if "." in source:
            raise ValueError(f"source name cannot contain a dot, got {source!r}")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return  # already added
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source, image_id, path, **kwargs):
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def prepare(self):
        """Finish building: number the classes and images. Call once after adding them."""

        def clean_name(name):
            return ",".join(name.split(",")[:1])

        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)
        self.class_from_source_map = {f"{info['source']}.{info['id']}": i
                                      for i, info in enumerate(self.class_info)}
        self.image_from_source_map = {f"{info['source']}.{info['id']}": i
                                      for i, info in enumerate(self.image_info)}
        self.sources = sorted({i["source"] for i in self.class_info})
        self.source_class_ids = {
            source: [i for i, info in enumerate(self.class_info)
                     if i == 0 or source == info["source"]]
            for source in self.sources}
        return self

    @property
    def image_ids(self):
        return self._image_ids

    def map_source_class_id(self, source_class_id):
        """"coco.1" -> internal class id."""
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id, source):
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(f"class {class_id} comes from {info['source']!r}, not {source!r}")
        return info["id"]

    def active_class_ids(self, image_id):
        """int32 [num_classes]: 1 for the classes of this image's source (and background)."""
        active = np.zeros(self.num_classes, dtype=np.int32)
        source = self.image_info[image_id]["source"]
        active[self.source_class_ids.get(source, list(range(self.num_classes)))] = 1
        return active

    def image_reference(self, image_id):
        """A string that tells a human where the image comes from (path or URL)."""
        return str(self.image_info[image_id].get("path", ""))

    # ------------------------------------------------------------------ loading
    def load_image(self, image_id):
        """RGB uint8 [H, W, 3]; grayscale, RGBA and 16-bit files are converted."""
        image, _ = read_image(self.image_info[image_id]["path"])
        return image

    def load_mask(self, image_id):
        """(masks bool [H, W, N], class_ids int32 [N]); crowd regions have negative ids.

        The base class has no annotations: an empty set for an image of the info's size.
        """
        info = self.image_info[image_id]
        shape = (int(info.get("height", 0)), int(info.get("width", 0)), 0)
        return np.zeros(shape, dtype=bool), np.zeros((0,), dtype=np.int32)

    def load_keypoints(self, image_id):
        """float32 [N, K, 3] (x, y, v) in the order of load_mask; v = 0 everywhere by default."""
        _, class_ids = self.load_mask(image_id)
        return np.zeros((len(class_ids), constants.NUM_KEYPOINTS, 3), dtype=np.float32)

    def load_boxes(self, image_id, masks=None):
        """float32 [N, 4] (x1, y1, x2, y2); by default the tight box of each mask."""
        if masks is None:
            masks, _ = self.load_mask(image_id)
        return boxes_from_masks(masks)

    def load_instances(self, image_id):
        """Everything about one image's instances, in one order.

        Returns a dict: class_ids int32 [N], boxes float32 [N, 4], masks bool [H, W, N],
        keypoints float32 [N, K, 3].
        """
        masks, class_ids = self.load_mask(image_id)
        return {
            "class_ids": np.asarray(class_ids, dtype=np.int32),
            "boxes": np.asarray(self.load_boxes(image_id, masks), dtype=np.float32),
            "masks": masks,
            "keypoints": np.asarray(self.load_keypoints(image_id), dtype=np.float32),
        }
