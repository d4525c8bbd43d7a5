"""mrcnn_kp.inference: run a trained model, evaluate it on COCO, draw what it found.

- predictor.py   Predictor(inference_model, config).detect(images) -> one dict per image in
                 original pixels (rois, class_ids, scores, masks [H, W, n], keypoints [n, 17, 3])
- trained_model.py  open_predictor("last" | a weights file | named weights | "none"): the
                 weights file, its saved config and a Predictor (what every command opens)
- coco_eval.py   detections -> COCO results json -> pycocotools COCOeval -> summary dicts
- visualize.py   boxes, masks and the COCO skeleton with matplotlib, saved as PNG
- export.py      deployment formats: export_saved_model.py, export_tflite.py, export_onnx.py,
                 each wrapping export_graph.py's serving function (molding in the graph);
                 exported.py runs the files
- video.py       frames from video files, numbered-frame folders and cameras; video writing (PyAV)
- tracking.py    PoseTracker: a person's id across frames (OKS + box IoU, optimal assignment)
- smoothing.py   the One-Euro filter for joints over time
- overlay.py     detections drawn into a frame's pixels (fast enough for every frame)

Importing this package does not import Keras or TensorFlow.
"""
from mrcnn_kp.inference.coco_eval import (detections_to_coco, evaluate_coco,  # noqa: F401
                                          evaluate_results, evaluate_results_file)
from mrcnn_kp.inference.predictor import Predictor, load_predictor, read_image  # noqa: F401
from mrcnn_kp.inference.visualize import display_instances, draw_side_by_side  # noqa: F401
