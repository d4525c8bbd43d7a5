"""mrcnn_kp: Mask R-CNN with a human-keypoint head for Keras 3 (TensorFlow or JAX backend)."""
__version__ = "0.1.0"

import os as _os

# TensorFlow's BFC allocator on the CPU reuses its buffers between steps instead of asking the
# system for fresh pages each time: training steps ~1.5x faster on 2 cores (benchmarks/README).
# Takes effect when mrcnn_kp is imported before TensorFlow allocates; set it to "false" to opt out.
_os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from mrcnn_kp.config import Config  # noqa: E402,F401


def __getattr__(name):
    """`mrcnn_kp.MaskRCNN` (matterport's `modellib.MaskRCNN`) without importing TensorFlow on
    `import mrcnn_kp`: the model class loads on first use."""
    if name == "MaskRCNN":
        from mrcnn_kp.maskrcnn import MaskRCNN

        return MaskRCNN
    raise AttributeError(f"module 'mrcnn_kp' has no attribute {name!r}")
