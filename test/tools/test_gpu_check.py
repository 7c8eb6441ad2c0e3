"""bench/gpu_check: the plan covers what a GPU must show, the GPU plan is full size on cuda and the dry run tiny
on the CPU, a training step reports finite loss and gradients, and the report marks a dry run and keeps errors."""
from __future__ import annotations

import math

from l2cocc_ros.tools import gpu_check


def test_plan_covers_every_required_check():
    gpu, dry = gpu_check.plan(dry_run=False), gpu_check.plan(dry_run=True)
    names = " | ".join(c["name"] for c in gpu)
    for needed in ("fp32 eager -C", "fp16 channels_last device_preprocess", "bf16 channels_last device_preprocess",
                   "cuda_graphs", "torch_census stereo", "msnet3d stereo", "msnet2d stereo", "end to end", "-L", "agreement", "train step -C",
                   "train step -D", "train step -L", "frames A, B, A, B"):
        assert needed in names, needed
    assert [c["name"] for c in gpu] == [c["name"] for c in dry]  # the dry run exercises every step
    for c in gpu:
        assert c["kwargs"]["device"] == "cuda" and c["fn"] in gpu_check._FUNCTIONS
        assert "tiny" not in c["kwargs"].get("preset", "") or "trained tiny" in c["name"]
    assert any(c["kwargs"].get("cuda_graphs") for c in gpu) and not any(c["kwargs"].get("cuda_graphs") for c in dry)
    assert all(c["kwargs"]["device"] == "cpu" and "semantickitti" not in c["kwargs"].get("preset", "") for c in dry)
    assert all(0 < c["timeout_s"] <= 300 for c in gpu)  # every check bounded; the 8-minute budget cuts the tail


def test_train_step_tiny_lidar_on_cpu():
    res = gpu_check.train_step("tiny_l2cocc_l", "cpu", steps=1)
    assert res["finite"] and math.isfinite(res["loss"]) and res["loss"] > 0
    assert res["params_with_grad"] > 10 and res["step_ms"] > 0 and res["terms"] >= 3


def test_report_marks_a_dry_run_and_keeps_the_whole_error():
    checks = [{"name": "train step -C", "fn": "train", "status": "ok", "wall_s": 3.0,
               "result": {"loss": 1.5, "params_with_grad": 40, "step_ms": 120.0}},
              {"name": "cuda_graphs", "fn": "engine", "status": "failed", "wall_s": 1.0,
               "error": "exit 1:\nTraceback ...\nRuntimeError: CUDA error: device-side assert triggered"}]
    text = gpu_check.report(checks, {"gpu": "none", "cpu": "x"}, dry_run=True, wall_s=4.0)
    assert text.startswith("# CPU dry run of bench/gpu_check (NOT GPU numbers)")
    assert "| train step -C | ok | 3 | loss 1.500 finite, grads finite (40), step 120 ms |" in text
    assert "device-side assert triggered" in text.split("## Errors")[1]


def test_msnet_stereo_step_measures_on_cpu():
    res = gpu_check.stereo_backend_step("msnet2d", "cpu", runs=1, width=208, height=32)
    assert res["case"] == "msnet2d:32x208" and res["device"] == "cpu"
    assert res["ms_p50"] > 0 and res["peak_mb"] > 0 and res["gflops"] > 0
