#!/usr/bin/env python
"""The box head's 7x7 "conv-as-FC" (mrcnn_class_conv1): Conv2D against WholeInputConv2D,
forward + backward, one JSON line.

    python benchmarks/bench_box_head_fc.py                          # 512 x 7x7x256 -> 1024
    python benchmarks/bench_box_head_fc.py --rois 128 --channels 64 --filters 256   # coco_cpu
    python benchmarks/bench_box_head_fc.py --small                  # seconds (tests)

Each variant is one tf.function (or, on JAX, a jitted value_and_grad) computing the layer on
[rois, 7, 7, channels] random inputs and the gradients of sum(output) with respect to the input
and the weights; one untimed call, then --repeats calls alternating the two variants, median.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def gradient_step(layer, x):
    """A compiled fn() -> gradients of sum(layer(x)) w.r.t. x and the layer's weights."""
    import keras

    layer.build(x.shape)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = tf.reduce_sum(layer(inputs))
            return tape.gradient(loss, [inputs] + layer.trainable_weights)

        return lambda: [g.numpy() for g in step(x)]
    import jax

    def loss(weights, inputs):
        out, _ = layer.stateless_call(weights, [], inputs)
        return out.sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    weights = [w.value for w in layer.trainable_weights]
    return lambda: jax.block_until_ready(grad(weights, x))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rois", type=int, default=512)
    ap.add_argument("--pool", type=int, default=7)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--filters", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="16 x 7x7x8 -> 16")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if args.small:
        args.rois, args.channels, args.filters, args.repeats = 16, 8, 16, 1

    import keras
    import numpy as np

    from mrcnn_kp.model.heads import WholeInputConv2D

    runtime = _common.cpu_runtime(0)  # small ops: the threads the commands use for small models
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.normal(size=(args.rois, args.pool, args.pool, args.channels)).astype("float32"))
    steps = {"conv2d": gradient_step(keras.layers.Conv2D(args.filters, args.pool), x),
             "whole_input_conv2d": gradient_step(WholeInputConv2D(args.filters, args.pool), x)}
    for step in steps.values():
        step()  # trace / compile
    import time

    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    median = {name: float(np.median(t)) for name, t in times.items()}
    _common.emit({
        "script": "bench_box_head_fc", "backend": keras.backend.backend(),
        "input": [args.rois, args.pool, args.pool, args.channels], "filters": args.filters,
        "median_s": {k: round(v, 5) for k, v in median.items()},
        "all_s": {k: [round(t, 5) for t in v] for k, v in times.items()},
        "runtime": runtime,
        "speedup": round(median["conv2d"] / max(median["whole_input_conv2d"], 1e-9), 2),
        "machine": _common.machine(),
    }, args.json_out)


if __name__ == "__main__":
    main()
