#!/usr/bin/env bash
# Every GPU figure of the benchmarks in one command, for a machine with an NVIDIA GPU, JAX (CUDA), PyTorch
# and torchvision but no TensorFlow (this project's lent device machine):
#
#     bash benchmarks/run_gpu.sh [infer|train|all]     # JSON lines in $OUT (default /tmp/gpu_bench)
#
# Ours: Keras on the JAX backend (bench_model.py / bench_train.py --torchvision-like), float32 and
# mixed_bfloat16; torchvision's keypointrcnn_resnet50_fpn on the same card
# (torchvision_side.py), float32 and bf16 autocast. Inference at batch 1 with N = 1, 10, 50
# persons, training at batch 2 and 8, 800 x 1067 images. Each line has median seconds, GFLOP,
# GFLOP/s, utilization of a matmul peak measured on the card, MFU against the datasheet peak
# (H100 / H200 SXM dense: TF32 494.7, BF16 989.4 TFLOP/s; set TF32_TFLOPS / BF16_TFLOPS for
# another card) and peak device memory.
# Packages the machine lacks travel as wheels in .whl/ (ignored by git); made here with
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#         --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#         keras==3.15.1 namex optree pycocotools
# and carried with the call (run's `carry: [".whl"]`). mrcnn_kp runs from the checkout.
set -uo pipefail
PART=${1:-all}
OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # peak memory as allocated, not a preallocated pool
TF32=${TF32_TFLOPS:-494.7}
BF16=${BF16_TFLOPS:-989.4}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

run() {  # name command...: the JSON line to $OUT/name.json, the log to $OUT/name.log
    local name=$1
    shift
    echo "== $name ($(date -u +%H:%M:%S))"
    if "$@" --json-out "$OUT/$name.json" > /dev/null 2> "$OUT/$name.log"; then
        head -c 600 "$OUT/$name.json"; echo
    else
        echo "FAILED: $name"; tail -20 "$OUT/$name.log"
    fi
}

SIZE=(--size 800x1067)
if [ "$PART" != train ]; then
    run tv_infer_fp32 python3 benchmarks/torchvision_side.py --device cuda "${SIZE[@]}" \
        --persons 1,10,50 --batches "" --precision float32 --datasheet-tflops "$TF32"
    run tv_infer_bf16 python3 benchmarks/torchvision_side.py --device cuda "${SIZE[@]}" \
        --persons 1,10,50 --batches "" --precision amp_bf16 --datasheet-tflops "$BF16"
    run ours_infer_fp32 python3 benchmarks/bench_model.py --torchvision-like "${SIZE[@]}" \
        --persons 1,10,50 --repeats 5 --precision float32 --datasheet-tflops "$TF32"
    run ours_infer_bf16 python3 benchmarks/bench_model.py --torchvision-like "${SIZE[@]}" \
        --persons 1,10,50 --repeats 5 --precision mixed_bfloat16 --datasheet-tflops "$BF16"
fi
if [ "$PART" != infer ]; then
    run tv_train_fp32 python3 benchmarks/torchvision_side.py --device cuda "${SIZE[@]}" \
        --persons "" --batches 2,8 --precision float32 --datasheet-tflops "$TF32"
    run tv_train_bf16 python3 benchmarks/torchvision_side.py --device cuda "${SIZE[@]}" \
        --persons "" --batches 2,8 --precision amp_bf16 --datasheet-tflops "$BF16"
    run ours_train_fp32 python3 benchmarks/bench_train.py --torchvision-like "${SIZE[@]}" \
        --batches 2,8 --repeats 5 --precision float32 --datasheet-tflops "$TF32"
    run ours_train_bf16 python3 benchmarks/bench_train.py --torchvision-like "${SIZE[@]}" \
        --batches 2,8 --repeats 5 --precision mixed_bfloat16 --datasheet-tflops "$BF16"
fi
