"""torchvision's keypointrcnn_resnet50_fpn on seeded random weights: the reference side of
tests/weights/test_torchvision.py. Runs under the torchvision venv (no mrcnn_kp, no keras):

    python tests/torchvision_reference.py OUT_DIR --shapes 224x320,300x224 --min-size 224 ...
    python tests/torchvision_reference.py OUT_DIR --images PHOTOS.npz --min-size 800 ...
    python tests/torchvision_reference.py --decode IN.npz OUT.npz
    python tests/torchvision_reference.py --flops OUT.json --shapes 256x320 --min-size 256 ...

The first writes OUT_DIR/model.pth (the state_dict, torch's zip format), OUT_DIR/images.npz
(the uint8 images, image0, image1, ...) and OUT_DIR/reference.npz, each image run on its own
(so padded to its own multiple of 32): per image the pyramid P2..P6 (HWC; not with
--no-pyramid), the anchors, its resized size, and the RPN proposals (resized pixels) and final
detections (boxes, scores, labels, keypoints, keypoint scores; original pixels), padded, with
per-image counts, plus the keypoint logits of all detections. --images runs the given uint8
photos instead of generated images, each resized as torchvision resizes it. The
second applies torchvision's heatmaps_to_keypoints to IN.npz's `logits` [N, S, S, K] and
`boxes` [N, 4] and writes `keypoints` [N, K, 3] and `scores` [N, K]. The third runs the first
image once under torch.utils.flop_counter.FlopCounterMode and writes its FLOPs per part of the
network (backbone body, FPN, RPN head, box head, keypoint head) with the number of ROIs that
entered each head: the reference of tests/model/test_flops.py.
The weights are torchvision's own initialisation (weights=None, weights_backbone=None), with
the batch-norm affine parameters and statistics and the RPN / predictor layers re-drawn from a
seeded generator, so that every tensor the converter maps changes the outputs.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torchvision
from torchvision.models.detection import keypointrcnn_resnet50_fpn


def make_images(count, size, seed):
    """Smooth random uint8 RGB images [count, size, size, 3] (blobs and stripes plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        image = np.zeros((size, size, 3), np.float32)
        for _ in range(6):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
            colour = rng.uniform(0, 255, 3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            image += blob[..., None] * colour
        image += 40 * np.sin(2 * np.pi * rng.uniform(2, 8) * xx)[..., None]
        image += rng.normal(0, 8, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def randomize(model, seed, spread=1.0):
    """Re-draw the batch-norm parameters and statistics and the RPN / predictor layers from a
    seeded generator; `spread` scales the RPN and box-predictor weights, so that larger values
    spread the scores apart (few near-ties) and the boxes over the whole image, borders
    included."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=gen) * std)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
                uniform(module.weight, 0.3, 0.8)
                normal(module.bias, 0.1)
                normal(module.running_mean, 0.1)
                uniform(module.running_var, 0.5, 1.5)
        head = model.rpn.head
        normal(head.cls_logits.weight, 0.05 * spread)
        normal(head.cls_logits.bias, 0.5)
        normal(head.bbox_pred.weight, 0.01 * spread)
        normal(head.bbox_pred.bias, 0.1 * spread)
        predictor = model.roi_heads.box_predictor
        normal(predictor.cls_score.weight, 0.05 * spread)
        normal(predictor.bbox_pred.weight, 0.02 * spread)
        normal(predictor.bbox_pred.bias, 0.2 * spread)
        normal(model.roi_heads.keypoint_predictor.kps_score_lowres.bias, 0.5)


def pad_rows(arrays, rows):
    """List of [n_i, ...] -> [len, rows, ...] zero padded, and the counts."""
    counts = np.array([len(a) for a in arrays], np.int32)
    out = np.zeros((len(arrays), rows) + arrays[0].shape[1:], np.float32)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return out, counts


def decode(path_in, path_out):
    from torchvision.models.detection.roi_heads import heatmaps_to_keypoints

    with np.load(path_in) as z:
        maps = torch.from_numpy(z["logits"]).permute(0, 3, 1, 2).contiguous()
        boxes = torch.from_numpy(z["boxes"])
    keypoints, scores = heatmaps_to_keypoints(maps, boxes)
    np.savez(path_out, keypoints=keypoints.numpy(), scores=scores.numpy())


def count_flops(model, image, path_out):
    """FlopCounterMode over one forward pass of `image`; JSON {part: FLOPs, "*_rois": count}."""
    from torch.utils.flop_counter import FlopCounterMode

    rois = {}
    model.roi_heads.box_head.register_forward_hook(
        lambda module, inputs, output: rois.__setitem__("box_head_rois", int(output.shape[0])))
    model.roi_heads.keypoint_head.register_forward_hook(
        lambda module, inputs, output: rois.__setitem__("keypoint_head_rois",
                                                        int(output.shape[0])))
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model([tensor])
    per_module = {name: sum(counts.values())
                  for name, counts in counter.get_flop_counts().items()}
    prefix = "KeypointRCNN."
    parts = {"backbone": ["backbone.body"], "fpn": ["backbone.fpn"], "rpn": ["rpn.head"],
             "box_head": ["roi_heads.box_head", "roi_heads.box_predictor"],
             "keypoint_head": ["roi_heads.keypoint_head", "roi_heads.keypoint_predictor"]}
    out = {part: sum(per_module.get(prefix + name, 0) for name in names)
           for part, names in parts.items()}
    out.update(rois, total=per_module["Global"], torch_version=torch.__version__)
    with open(path_out, "w") as f:
        json.dump(out, f)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--decode":
        return decode(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", help="output folder (--flops: the JSON file)")
    ap.add_argument("--flops", action="store_true", help="count FLOPs of the first image")
    ap.add_argument("--shapes", default="224x320,300x224",
                    help="image sizes HxW; each must need no resizing at --min-size/--max-size")
    ap.add_argument("--min-size", type=int, default=224)
    ap.add_argument("--max-size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pre-nms", type=int, default=1000)
    ap.add_argument("--post-nms", type=int, default=1000)
    ap.add_argument("--detections", type=int, default=100)
    ap.add_argument("--score-thresh", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spread", type=float, default=1.0,
                    help="scale of the re-drawn RPN and box-predictor weights (see randomize)")
    ap.add_argument("--bn-eps", type=float, default=None,
                    help="batch-norm epsilon of every batch-norm layer (torchvision runs its "
                         "published COCO_V1 weights with 0: overwrite_eps)")
    ap.add_argument("--no-pyramid", action="store_true",
                    help="leave the pyramid maps P2..P6 out of reference.npz")
    ap.add_argument("--images", metavar="NPZ",
                    help="uint8 RGB images image0, image1, ... to run (resized as torchvision "
                         "resizes them) instead of the generated --shapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=args.min_size, max_size=args.max_size,
        rpn_pre_nms_top_n_test=args.pre_nms, rpn_post_nms_top_n_test=args.post_nms,
        box_detections_per_img=args.detections, box_score_thresh=args.score_thresh)
    randomize(model, args.seed, args.spread)
    if args.bn_eps is not None:
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
                module.eps = args.bn_eps
    model.eval()
    if args.flops:
        h, w = (int(v) for v in args.shapes.split(",")[0].split("x"))
        return count_flops(model, make_images(1, max(h, w), args.seed)[0][:h, :w], args.out_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(args.out_dir, "model.pth"))
    if args.images:
        with np.load(args.images) as z:
            images = [z[f"image{i}"] for i in range(len(z.files))]
    else:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        side = max(max(shape) for shape in shapes)
        squares = make_images(len(shapes), side, args.seed)
        images = [square[:h, :w] for square, (h, w) in zip(squares, shapes)]
    np.savez(os.path.join(args.out_dir, "images.npz"), **{f"image{i}": im
                                                         for i, im in enumerate(images)})

    heatmaps = []  # keypoint logits [N, K, 56, 56] of the detections, all images together
    model.roi_heads.keypoint_predictor.register_forward_hook(
        lambda module, inputs, output: heatmaps.append(output.permute(0, 2, 3, 1).numpy()))
    out, proposals, detections = {}, [], []
    for i, image in enumerate(images):  # one image per batch: its own padded size
        tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        with torch.no_grad():  # GeneralizedRCNN.forward, step by step, keeping what we compare
            batch, _ = model.transform([tensor])
            if not args.images:
                assert tuple(batch.image_sizes[0]) == image.shape[:2], "the image was resized"
            features = model.backbone(batch.tensors)
            image_proposals, _ = model.rpn(batch, features)
            found, _ = model.roi_heads(features, image_proposals, batch.image_sizes)
            found = model.transform.postprocess(found, batch.image_sizes, [image.shape[:2]])
        for level, key in zip(range(2, 7), ("0", "1", "2", "3", "pool")):
            if not args.no_pyramid:
                out[f"P{level}_{i}"] = features[key].permute(0, 2, 3, 1).numpy()[0]
        out[f"batch_shape_{i}"] = np.array(batch.tensors.shape)
        out[f"image_size_{i}"] = np.array(batch.image_sizes[0])
        out[f"anchors_{i}"] = model.rpn.anchor_generator(batch, list(features.values()))[0] \
            .numpy()
        proposals.append(image_proposals[0].numpy())
        detections.append(found[0])
    out["proposals"], out["num_proposals"] = pad_rows(proposals, args.post_nms)
    fields = {"boxes": "boxes", "scores": "scores", "labels": "labels",
              "keypoints": "keypoints", "keypoints_scores": "keypoints_scores"}
    for ours, theirs in fields.items():
        values = [d[theirs].numpy().astype(np.float32) for d in detections]
        out[ours], out["num_detections"] = pad_rows(values, args.detections)
    out["keypoint_logits"] = np.concatenate(heatmaps)  # [sum of detections, 56, 56, K]
    out["torch_version"] = np.array(torch.__version__)
    out["torchvision_version"] = np.array(torchvision.__version__)
    np.savez(os.path.join(args.out_dir, "reference.npz"), **out)

if __name__ == "__main__":
    main()
