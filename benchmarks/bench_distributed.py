"""Step time of 1 against 2 local workers (TensorFlow MultiWorkerMirroredStrategy, or JAX
processes with --backend jax): the cost of the per-step gradient all-reduce between processes
on one machine, not a speed-up (2 workers share the same cores).

    python benchmarks/bench_distributed.py [--backend tensorflow|jax] [--steps 20]

Both runs train the stand-in model of tests/training/standin_models.py (the training model's
contract and layer names, 16-wide dense layers) with a global batch of 2 images, one CPU
thread per worker, through tests/training/multiworker_run.py, the worker the multi-worker
tests start. Prints one JSON line: median step seconds of each run (steps after the first
epoch), their difference (the communication overhead per step) and the process wall times.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mrcnn_kp.utils import free_localhost_ports

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "training"


def run_job(num_workers, backend, steps, model_dir):
    ports = free_localhost_ports(num_workers)
    procs = []
    started = time.monotonic()
    for index in range(num_workers):
        env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="",
                   TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
                   PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]))
        if num_workers > 1 and backend == "jax":
            env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{ports[0]}",
                       JAX_NUM_PROCESSES=str(num_workers), JAX_PROCESS_ID=str(index))
        elif num_workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}"
                                                                  for p in ports]},
                                           "task": {"type": "worker", "index": index}})
        out = Path(model_dir) / f"worker{index}.json"
        procs.append((subprocess.Popen(
            [sys.executable, str(TESTS / "multiworker_run.py"), str(model_dir), str(out), "2",
             "2", "--steps", str(steps)], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True), out))
    for proc, _ in procs:
        log, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"worker failed ({proc.returncode}):\n{log[-3000:]}")
    wall = time.monotonic() - started
    chief = json.loads(procs[0][1].read_text())
    timed = chief["step_seconds"][steps:]  # the second epoch: traced, warm
    return {"median_step_s": statistics.median(timed), "steps_timed": len(timed),
            "wall_s": round(wall, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (2 epochs)")
    args = parser.parse_args()
    result = {"bench": "distributed", "backend": args.backend, "global_batch": 2,
              "model": "stand-in (tests/training/standin_models.py)",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d")}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as model_dir:
            result[f"workers_{workers}"] = run_job(workers, args.backend, args.steps, model_dir)
    one, two = result["workers_1"]["median_step_s"], result["workers_2"]["median_step_s"]
    result["overhead_per_step_s"] = round(two - one, 6)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
