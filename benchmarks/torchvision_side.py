#!/usr/bin/env python
"""torchvision's keypointrcnn_resnet50_fpn on any torch device (the GPU side of the benchmarks):
one JSON line, the same cases and keys as bench_model.py / bench_train.py.

    python benchmarks/torchvision_side.py --device cuda --persons 1,10,50 --batches 2,8
    python benchmarks/torchvision_side.py --device cuda --precision amp_bf16
    python benchmarks/torchvision_side.py --device cpu --small          # seconds (tests)

Runs where torch and torchvision are installed (a GPU machine's python3, or a torchvision
venv), without mrcnn_kp or Keras (of this folder it needs only _common's plain helpers). On
the CPU, compare_torchvision.py runs bench_torchvision.py from $MRCNN_KP_PEERS instead; this
script builds the same network: ResNet-50 FPN with FrozenBatchNorm2d and
trainable_backbone_layers 3 (as with pretrained weights), random weights (seed 0), 2 classes,
17 keypoints. Inference: batch 1, box_score_thresh 0 and detections_per_img N, so N boxes go
through the keypoint head. Training: SGD(1e-4, momentum 0.9, weight decay 1e-4), 3 persons per
image, 512 box-head ROIs and exactly 32 positive ROIs per image in the keypoint head (jittered
copies of the ground-truth boxes join the proposals, as a trained RPN's would). --precision
amp_bf16 / amp_fp16: torch.autocast around the forward (fp16 with a GradScaler). float32
allows TF32 (torch.set_float32_matmul_precision("high"), as cuDNN's convolutions and JAX's
default precision do).
Each case: _common.time_calls (median_s of --repeats after one warm-up, cpu), gflop
(torch.utils.flop_counter, 2 per multiply-add, on an extra call), gflop_per_s, utilization of a
matmul peak measured here in the compute dtype, mfu with --datasheet-tflops, and peak memory
(CUDA: max_memory_allocated; CPU: peak RSS).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (numpy and the standard library only at import)

COMPUTE_DTYPES = {"float32": "float32", "amp_bf16": "bfloat16", "amp_fp16": "float16"}


def build_model(torch, positives):
    from torchvision.models import resnet50
    from torchvision.models.detection import KeypointRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=misc.FrozenBatchNorm2d), 3)
    model = KeypointRCNN(backbone, num_classes=2, num_keypoints=17)
    sampler = model.roi_heads.fg_bg_sampler
    sampler.positive_fraction = (positives + 0.5) / sampler.batch_size_per_image
    rpn_forward = model.rpn.forward

    def with_positives(images, features, targets=None):
        """The RPN's proposals plus `positives` jittered copies of the ground truth."""
        boxes, losses = rpn_forward(images, features, targets)
        if model.training and targets is not None:
            generator = torch.Generator().manual_seed(7)
            joined = []
            for proposals, target in zip(boxes, targets):
                gt = target["boxes"]
                base = gt[torch.arange(positives, device=gt.device) % gt.shape[0]]
                size = (base[:, 2:] - base[:, :2]).repeat(1, 2)
                jitter = (torch.rand(positives, 4, generator=generator).to(gt.device) - 0.5)
                joined.append(torch.cat([proposals, (base + 0.1 * jitter * size)
                                         .to(proposals.dtype)]))
            boxes = joined
        return boxes, losses

    model.rpn.forward = with_positives
    return model


def image_and_target(torch, height, width, seed, device):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=generator)
    boxes = torch.from_numpy(_common.PERSON_BOXES) * torch.tensor([width, height, width, height])
    keypoints = []
    for x1, y1, x2, y2 in boxes.tolist():
        x = x1 + torch.rand(17, generator=generator) * (x2 - x1)
        y = y1 + torch.rand(17, generator=generator) * (y2 - y1)
        visible = torch.where(torch.rand(17, generator=generator) < 0.2, 0.0, 2.0)
        keypoints.append(torch.stack([x, y, visible], dim=1))
    target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64),
              "keypoints": torch.stack(keypoints)}
    return image.to(device), {k: v.to(device) for k, v in target.items()}


def time_calls(torch, device, fn, repeats):
    """_common.time_calls of fn, waiting for a GPU to finish each call."""
    def synced():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return _common.time_calls(synced, repeats)


def peak_memory_mib(torch, device):
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return _common.rss_mib()


def measure(torch, device, fn, repeats, peak, datasheet_tflops):
    """time_calls of fn with the peak memory of those calls, then its FLOPs counted
    (torch.utils.flop_counter) on one more call, as flop_rate's fields."""
    from torch.utils.flop_counter import FlopCounterMode

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    case = time_calls(torch, device, fn, repeats)
    case["peak_memory_mib"] = peak_memory_mib(torch, device)
    with FlopCounterMode(display=False) as counter:
        fn()
    case.update(_common.flop_rate(counter.get_total_flops(), case["median_s"], peak,
                                  datasheet_tflops))
    return case


def matmul_peak_gflops(torch, device, dtype, size):
    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    best = min(time_calls(torch, device, lambda: torch.matmul(a, b), 5)["all_s"])
    return round(2 * size ** 3 / best / 1e9, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="800x1067", help="image HxW")
    ap.add_argument("--persons", default="1,10,50", help="'' for no inference case")
    ap.add_argument("--batches", default="2,8", help="'' for no training case")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", default="float32", choices=sorted(COMPUTE_DTYPES))
    ap.add_argument("--datasheet-tflops", type=float, help="the device's peak TFLOP/s in the "
                    "compute dtype: adds mfu")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--small", action="store_true", help="96x128, N = 1, batch 1, 1 repeat, "
                    "4 keypoint ROIs")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    import torch
    import torchvision

    if args.threads:
        torch.set_num_threads(args.threads)
    # float32 on a GPU: TF32 tensor cores for matmuls too (torch's convolutions use them by
    # default), as JAX's default precision does for ours
    torch.set_float32_matmul_precision("high")
    device = torch.device(args.device)
    height, width = (96, 128) if args.small else (int(v) for v in args.size.split("x"))
    persons = [1] if args.small else [int(n) for n in args.persons.split(",") if n]
    batches = [1] if args.small else [int(b) for b in args.batches.split(",") if b]
    repeats = 1 if args.small else args.repeats
    dtype = COMPUTE_DTYPES[args.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=getattr(torch, dtype))) \
        if dtype != "float32" else (lambda: torch.autocast(device.type, enabled=False))
    model = build_model(torch, positives=4 if args.small else 32).to(device)
    model.transform.min_size, model.transform.max_size = (min(height, width),), max(height, width)
    result = {"figure": "torchvision keypointrcnn_resnet50_fpn", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "torch": torch.__version__, "torchvision": torchvision.__version__,
              "precision": args.precision, "image_hw": [height, width], "repeats": repeats,
              "weights": "random (seed 0)", "infer": {}, "train": {}}
    size = 1024 if args.small else (8192 if device.type == "cuda" else 4096)
    peak = matmul_peak_gflops(torch, device, dtype, size)
    result["matmul_peak_gflop_per_s"] = peak

    image, _ = image_and_target(torch, height, width, 1, device)
    model.eval()
    model.roi_heads.score_thresh = 0.0
    for n in persons:
        model.roi_heads.detections_per_img = n
        outputs = []

        def infer():
            with torch.inference_mode(), autocast():
                outputs[:] = model([image])

        case = measure(torch, device, infer, repeats, peak, args.datasheet_tflops)
        case["detections"] = int(outputs[0]["boxes"].shape[0])
        result["infer"][f"persons_{n}"] = case
        _common.log(f"N={n}: {case}")

    model.train()
    model.roi_heads.score_thresh = 0.05
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    for batch in batches:
        model.load_state_dict(initial)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")
        pairs = [image_and_target(torch, height, width, 10 + i, device) for i in range(batch)]
        images, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        losses = {}

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss_dict = model(images, targets)
            scaler.scale(sum(loss_dict.values())).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.update({k: float(v.detach()) for k, v in loss_dict.items()})

        case = measure(torch, device, step, repeats, peak, args.datasheet_tflops)
        case.update(batch=batch, images_per_s=round(batch / case["median_s"], 3),
                    loss_finite=all(v == v and abs(v) != float("inf") for v in losses.values()))
        result["train"][f"b{batch}"] = case
        _common.log(f"b{batch}: {case}")
    _common.emit(result, args.json_out)


if __name__ == "__main__":
    main()
