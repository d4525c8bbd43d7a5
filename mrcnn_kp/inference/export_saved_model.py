"""The SavedModel export: `serving_default` (one uint8 image of any size, inference.export_graph)
and `serve_molded` (the raw model on molded batches), for tf.saved_model.load and TF Serving.
"""
import os

from mrcnn_kp.inference.export_graph import (make_serving_function, molded_signature,
                                             require_tensorflow)
from mrcnn_kp.utils import get_logger

log = get_logger("mrcnn_kp.export")


def export_saved_model(model, config, path, paste_masks=False):
    """Write a TensorFlow SavedModel with `serving_default` (uint8 image of any size) and
    `serve_molded` (the raw model on molded batches). Returns the path."""
    import keras

    require_tensorflow()
    path = os.fspath(path)
    serve = make_serving_function(model, config, paste_masks=paste_masks)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    archive.add_endpoint("serve_molded", lambda inputs: model(inputs, training=False),
                         input_signature=molded_signature(config))
    archive.write_out(path, verbose=False)
    log.info(f"SavedModel written to {path} (signatures serving_default, serve_molded)")
    return path
