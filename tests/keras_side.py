"""Our side of the torchvision equivalence on photos: a converted `.weights.h5` (its config
travels in the file) through `MaskRCNN.detect`, results in original-image pixels, as a user
runs it. tests/test_torchvision_photos.py imports it for the TensorFlow run in its own process
and runs it as a script for the other backends and precisions, each in a process of its own
(Keras fixes its backend at import and the dtype policy is global):

    KERAS_BACKEND=jax python tests/keras_side.py WEIGHTS PHOTOS.npz OUT.npz [--precision P]

PHOTOS.npz holds uint8 RGB images image0, image1, ...; OUT.npz gets, per image i, rois_i
[N, 4] (x1, y1, x2, y2), scores_i [N], class_ids_i [N] and keypoints_i [N, 17, 3] (x, y,
score), in the order of the model's output (score, descending).
"""
import argparse
import sys

import numpy as np


def detect_photos(weights, images, precision="float32"):
    """[{rois, scores, class_ids, keypoints}] per image for the converted file `weights`."""
    from mrcnn_kp.maskrcnn import MaskRCNN
    from mrcnn_kp.weights import read_config

    config = read_config(weights)
    if precision != "float32":
        config = config.copy(MIXED_PRECISION=precision)
    model = MaskRCNN("inference", config, model_dir="unused")
    model.load_weights(weights)
    return [model.detect([image])[0] for image in images]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("photos")
    ap.add_argument("out")
    ap.add_argument("--precision", default="float32")
    args = ap.parse_args(argv)
    with np.load(args.photos) as z:
        images = [z[f"image{i}"] for i in range(len(z.files))]
    results = detect_photos(args.weights, images, args.precision)
    np.savez(args.out, **{f"{key}_{i}": np.asarray(result[key])
                          for i, result in enumerate(results)
                          for key in ("rois", "scores", "class_ids", "keypoints")})
    import keras

    print(f"{len(images)} photos on {keras.backend.backend()} ({args.precision})")


if __name__ == "__main__":
    sys.exit(main())
