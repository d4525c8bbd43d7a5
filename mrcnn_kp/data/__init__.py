"""mrcnn_kp.data: datasets (COCO, the synthetic people set, your own), transforms, training targets
and the batch generator. See docs/DESIGN.md for the batch format."""
from mrcnn_kp.data.coco import CocoKeypointDataset  # noqa: F401
from mrcnn_kp.data.dataset import Dataset  # noqa: F401
from mrcnn_kp.data.pipeline import DataGenerator  # noqa: F401
from mrcnn_kp.data.synthetic import generate_synthetic_coco, synthetic_dataset  # noqa: F401
