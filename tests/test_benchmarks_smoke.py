"""The benchmark scripts run end to end with --small (TinyConfig, eager) and print the JSON
keys docs/RESULTS.md relies on; the torchvision side is covered by --skip-torchvision (its venv is
not part of the test environment)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import _common  # noqa: E402
import compare_torchvision  # noqa: E402


def run_script(name, *args, out, env=None):
    proc = subprocess.run([sys.executable, str(BENCH / name), *args, "--json-out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert json.loads(out.read_text()) == json.loads(line)
    return json.loads(line)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    infer = run_script("bench_model.py", "--small", "--persons", "1,3", "--repeats", "1",
                       "--torchvision-like", out=folder / "infer.json")
    train = run_script("bench_train.py", "--small", "--batches", "1", "--repeats", "1",
                       "--torchvision-like", out=folder / "train.json")
    compare = run_script("compare_torchvision.py", "--small", "--skip-torchvision",
                         "--ours-infer-json", str(folder / "infer.json"),
                         "--ours-train-json", str(folder / "train.json"),
                         out=folder / "compare.json")
    return infer, train, compare


def test_bench_model_reports_latency_per_person_count(outputs):
    infer = outputs[0]
    assert infer["preset"] == "tiny" and infer["mask_head"] is False
    assert infer["torchvision_like"] is True and infer["rpn_conv_channels"] == 256
    assert infer["canvas"] == [128, 128] and infer["precision"] == "float32"
    assert sorted(infer["infer"]) == ["persons_1", "persons_3"]
    for n in (1, 3):
        case = infer["infer"][f"persons_{n}"]
        assert case["keypoint_head_boxes"] == n and case["detections"] == n
        assert case["median_s"] > 0 and len(case["all_s"]) == 1 and len(case["warmup_s"]) == 1
        assert set(case["cpu"]) == {"self_util", "foreign_frac"}
    # arithmetic: the keypoint head's slots add FLOPs; rate and share of the measured peak
    one, three = infer["infer"]["persons_1"], infer["infer"]["persons_3"]
    assert three["gflop"] > one["gflop"] > 0
    assert infer["matmul_peak_gflop_per_s"] > 0
    for case in (one, three):
        assert case["gflop_per_s"] == pytest.approx(case["gflop"] / case["median_s"], rel=0.02)
        assert case["utilization"] == pytest.approx(
            case["gflop_per_s"] / case["matmul_peak_gflop_per_s"], rel=0.02)
        assert 100 < case["peak_rss_mib"] <= infer["peak_rss_mib"]  # one process per N
        assert case["device_peak_mib"] is None  # no accelerator here
    assert set(infer["gflop_by_part"]) == {"backbone", "fpn", "rpn", "box_head", "keypoint_head"}
    ratio = infer["infer"]["persons_3"]["median_s"] / infer["infer"]["persons_1"]["median_s"]
    assert infer["flatness_max_over_min"] == pytest.approx(ratio, abs=1e-3)
    assert infer["peak_rss_mib"] > 100 and infer["machine"]["nproc"] >= 1


def test_bench_train_reports_step_time_images_per_second_and_memory(outputs):
    train = outputs[1]
    case = train["train"]["b1"]
    assert train["torchvision_like"] is True and case["mask_head"] is False
    assert case["layers"] == "3+" and case["precision"] == "float32"
    assert case["images_per_s"] == pytest.approx(1 / case["median_s"], rel=1e-2)
    assert case["loss_finite"] is True and "keypoint_loss" in case["losses_last"]
    # TinyConfig: 64 proposals cap the 512 box-head RoIs; 32 keypoint RoIs fit 16 positives.
    assert case["box_head_rois_per_image"] == 64 and case["keypoint_head_rois_per_image"] == 16
    assert train["peak_rss_mib"] == case["peak_rss_mib"] > 100
    # a step's FLOPs: the forward and the backward of the trainable layers (3+: not all)
    assert case["forward_gflop"] < case["gflop"] < 3 * case["forward_gflop"]
    assert case["utilization"] == pytest.approx(
        case["gflop_per_s"] / case["matmul_peak_gflop_per_s"], rel=0.02)
    # the package's CPU runtime, as the commands set it (2 cores here: intra 1, inter 2)
    assert case["runtime"]["bfc_allocator"] == "true"
    assert case["runtime"]["tf_threads"] in ("default", [1, os.cpu_count()])


def test_compare_without_torchvision_has_null_ratios(outputs):
    compare = outputs[2]
    assert compare["torchvision"] == {"error": "skipped (--skip-torchvision)"}
    assert compare["ratios"] == {"infer": {"persons_1": None}, "train": {"b1": None},
                                 "peak_rss_infer": None, "peak_rss_train": None}
    assert compare["targets_met"] is None and compare["targets"]["infer"] == 0.6
    assert compare["ours_precision"] == "float32"
    assert compare["ours_infer"]["infer"]["persons_1"]["keypoint_head_boxes"] == 1
    assert compare["flops"]["train_b1"]["gflop"] == {
        "ours": compare["ours_train"]["train"]["b1"]["gflop"], "torchvision": None}
    assert compare["flops"]["infer_persons_1"]["utilization"]["ours"] > 0


def test_flop_rate_and_the_matmul_peak():
    assert _common.flop_rate(2e9, 0.5, peak_gflops=8.0, datasheet_tflops=0.01) == {
        "gflop": 2.0, "gflop_per_s": 4.0, "utilization": 0.5, "mfu": 0.4}
    assert _common.flop_rate(2e9, 0.5) == {"gflop": 2.0, "gflop_per_s": 4.0}
    assert _common.matmul_peak_gflops("float32", size=128, repeats=2) > 0


def test_bench_model_runs_on_jax_without_tensorflow(tmp_path):
    """The GPU machine has JAX and PyTorch but no TensorFlow: our GPU figures are
    bench_model/bench_train under KERAS_BACKEND=jax, which must not import TensorFlow."""
    pytest.importorskip("jax")
    blocker = tmp_path / "no_tensorflow"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        'import sys\nsys.modules["tensorflow"] = None  # any import of it fails\n')
    env = dict(os.environ, KERAS_BACKEND="jax",
               PYTHONPATH=os.pathsep.join(filter(None, [str(blocker),
                                                        os.environ.get("PYTHONPATH")])))
    infer = run_script("bench_model.py", "--small", "--persons", "2", "--repeats", "1",
                       "--torchvision-like", "--datasheet-tflops", "0.001", out=tmp_path / "j.json",
                       env=env)
    case = infer["infer"]["persons_2"]
    assert infer["machine"]["backend"] == "jax" and "tensorflow" not in infer["machine"]
    assert case["detections"] == 2 and case["gflop"] > 0
    assert case["mfu"] == pytest.approx(case["gflop_per_s"], abs=0.06)  # of 1 GFLOP/s


def test_torchvision_side_reports_the_same_keys_on_any_device(tmp_path):
    """torchvision's GPU side of the benchmarks (run there by benchmarks/run_gpu.sh), here on
    the CPU in the torchvision venv: the cases, FLOPs and memory it reports."""
    sys.path.insert(0, str(BENCH.parent / "tests"))
    from torchvision_venv import torchvision_python

    out = tmp_path / "tv.json"
    proc = subprocess.run([torchvision_python(), str(BENCH / "torchvision_side.py"), "--device",
                           "cpu", "--small", "--threads", "2", "--json-out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tv = json.loads(out.read_text())
    assert tv["device"] == "cpu" and tv["precision"] == "float32" and tv["image_hw"] == [96, 128]
    infer, train = tv["infer"]["persons_1"], tv["train"]["b1"]
    assert infer["detections"] == 1 and train["loss_finite"] is True
    for case in (infer, train):
        assert case["gflop"] > 0 and case["peak_memory_mib"] > 100
        assert case["gflop_per_s"] == pytest.approx(case["gflop"] / case["median_s"], rel=0.02)
        assert case["utilization"] == pytest.approx(
            case["gflop_per_s"] / tv["matmul_peak_gflop_per_s"], rel=0.02)
    assert train["gflop"] > 2 * infer["gflop"]  # forward and backward, 4 keypoint ROIs


def test_ratio_is_ours_over_torchvision():
    assert compare_torchvision.ratio(3.0, 6.0) == 0.5
    assert compare_torchvision.ratio(None, 6.0) is None


def test_training_batch_places_three_persons_in_the_window():
    config = _common.make_config("tiny", IMAGES_PER_GPU=2)
    batch = _common.training_batch(config, 96, 128)
    assert batch["input_image"].shape == (2, 128, 128, 3)
    assert batch["input_rpn_match"].shape == (2, config.NUM_ANCHORS)
    assert (batch["input_gt_class_ids"] == 1).sum(axis=1).tolist() == [3, 3]
    y1, x1, y2, x2 = batch["input_image_meta"][0, 7:11]
    assert (y1, x1, y2, x2) == (16, 0, 112, 128)  # 96 x 128 centred in 128 x 128
    boxes = batch["input_gt_boxes"][0, :3]
    np.testing.assert_allclose(boxes[0], [0.09 * 128, 16 + 0.19 * 96, 0.28 * 128, 16 + 0.88 * 96],
                               rtol=1e-5)
    kps = batch["input_gt_keypoints"][0, :3]
    assert np.all((kps[..., 0] >= boxes[:, None, 0]) & (kps[..., 0] <= boxes[:, None, 2]))
    assert (batch["input_rpn_match"] == 1).sum() > 0


def test_profile_train_step_ranks_kernels_and_layers(tmp_path):
    import profile_train_step

    prof = run_script("profile_train_step.py", "--small", "--warmup", "1", "--steps", "1",
                      "--top", "5", out=tmp_path / "prof.json")
    assert prof["preset"] == "tiny" and prof["canvas"] == [128, 128]
    assert len(prof["top"]) == 5 and len(prof["by_layer"]) == 5
    shares = [row["share"] for row in prof["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0
    assert prof["kernel_s_per_step"] > 0 and prof["wall_s_per_step"] > 0
    # layer names come out without the model prefix and Keras' call-count suffix
    kernel = "gradient_tape/coco_cpu_training_1/mrcnn_class_conv1_1/MatMul:MatMul"
    assert profile_train_step.layer_of(kernel) == "mrcnn_class_conv1"
    assert profile_train_step.layer_of("tiny_training_1/fpn_p2_1/BiasAdd:_FusedConv2D") == "fpn_p2"
    assert any(row["name"].startswith(("mrcnn_", "rpn_", "fpn_", "res", "conv1", "bn"))
               for row in prof["by_layer"])


def test_bench_box_head_fc_times_both_variants(tmp_path):
    fc = run_script("bench_box_head_fc.py", "--small", out=tmp_path / "fc.json")
    assert fc["input"] == [16, 7, 7, 8] and fc["filters"] == 16
    assert set(fc["median_s"]) == {"conv2d", "whole_input_conv2d"}
    assert all(v > 0 for v in fc["median_s"].values())
    assert fc["speedup"] == pytest.approx(
        fc["median_s"]["conv2d"] / fc["median_s"]["whole_input_conv2d"], rel=0.05)


def test_canvas_for_the_benchmark_sizes_and_the_config_it_makes():
    assert _common.canvas_for(800, 1067) == (832, 1088)  # torchvision pads to 800 x 1088
    assert _common.canvas_for(800, 1067, square=True) == (1088, 1088)
    assert _common.canvas_for(1024, 1024) == (1024, 1024)
    config = _common.make_config("default", (832, 1088))
    assert tuple(config.IMAGE_SHAPE) == (832, 1088, 3)
    assert (config.IMAGE_MAX_DIM, config.IMAGE_MIN_DIM) == (1088, 800)
    images, metas = _common.molded_images(config, 800, 1067, batch=1)
    assert images.shape == (1, 832, 1088, 3)
    assert tuple(metas[0, 7:12]) == (16, 10, 816, 1077, 1.0)  # unscaled, centred
    square = _common.make_config("default", 1088)
    assert tuple(square.IMAGE_SHAPE) == (1088, 1088, 3) and square.IMAGE_CANVAS_SHAPE == ()


def test_bench_video_reports_frames_per_second(tmp_path, av):
    result = run_script("bench_video.py", "--small", out=tmp_path / "video.json")
    assert result["size"] == [160, 90] and result["frames"] == 4
    tiny = result["presets"]["tiny"]
    # both are rounded to 3 decimals: a fast tiny model's 0.0216 s per frame prints as 0.022
    assert tiny["frames"] == 4 and tiny["s_per_frame"] == pytest.approx(1 / tiny["fps"], abs=6e-4)
    assert tiny["detections_per_frame"] >= tiny["tracked_per_frame"] >= 0
    assert set(result["parts_ms_per_frame"]) == {"decode", "track", "draw", "encode"}
