"""mrcnn_kp: Mask R-CNN with a human-keypoint head for Keras 3 (TensorFlow or JAX backend)."""
__version__ = "0.1.0"

from mrcnn_kp.config import Config  # noqa: E402,F401
