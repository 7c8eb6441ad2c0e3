"""l2cocc bench: statistics, the markdown tables, and the engine / agreement measurements on the tiny preset."""
from __future__ import annotations

import os

import numpy as np
import pytest

from l2cocc_ros.tools import bench


def test_stats_ms_median_and_p95():
    s = bench.stats_ms(list(range(1, 101)))
    assert s == {"p50": pytest.approx(50.5), "p95": pytest.approx(95.05), "n": 100}
    assert bench.stats_ms([3.0]) == {"p50": 3.0, "p95": 3.0, "n": 1}


def test_machine_info_names_cpu_and_torch():
    import torch

    info = bench.machine_info()
    assert info["torch"] == torch.__version__ and info["gpu"] == ("none" if not torch.cuda.is_available()
                                                                   else torch.cuda.get_device_name(0))
    assert info["cpu"] and int(info["cores"]) >= 1


def test_tables():
    node = bench._node_table([{"step": "grid message", "voxels": 100000, "p50": 1.234, "p95": 2.0, "n": 50,
                               "bytes": 2097300}, {"step": "image", "voxels": "-", "p50": 1, "p95": 1, "n": 1}])
    assert node.splitlines()[-2] == "| grid message | 100000 | 2097300 | 1.23 | 2.00 | 50 |"
    assert node.splitlines()[-1] == "| image | - | - | 1.00 | 1.00 | 1 |"
    assert bench._split_spec("semantickitti_l2cocc_c:cuda:0:5:bf16", True) == ["semantickitti_l2cocc_c", "cuda:0", "5", "bf16"]
    assert bench._split_spec("tiny_l2cocc_c:cpu:3", True) == ["tiny_l2cocc_c", "cpu", "3"]
    with pytest.raises(ValueError, match="runs"):
        bench.stats_ms([])

    def result(device, gpu=None):
        stages = {k: {"p50": 10.0, "p95": 12.0, "n": 3} for k in ("stereo", "image encoder", "model", "total")}
        r = {"preset": "tiny", "device": device, "precision": "fp32", "stages": stages, "cpu_peak_rss_mb": 812.4}
        if gpu is not None:
            r["gpu_max_allocated_mb"] = gpu
        return r

    lines = bench._engine_table([result("cpu"), result("cuda:0", gpu=2048.0)]).splitlines()
    assert lines[0] == "| stage | tiny cpu fp32 p50 / p95 [ms] | tiny cuda:0 fp32 p50 / p95 [ms] |"
    assert "| image encoder | 10.0 / 12.0 | 10.0 / 12.0 |" in lines
    assert not any(line.startswith("| EVT ") for line in lines)  # stages nobody measured are left out
    assert "| runs | 3 | 3 |" in lines and "| peak CPU RSS [MB] | 812 | 812 |" in lines
    assert "| GPU max allocated [MB] | - | 2048 |" in lines

    agree = bench._agreement_table([{"preset": "p", "device": "cuda", "precision": "bf16", "channels_last": True,
                                     "cuda_graphs": True, "weights": "trained (x.pt)", "frames": 2,
                                     "agreement_pct": 99.91234, "occupancy_iou_pct": 98.5}])
    assert agree.splitlines()[-1] == "| p | cuda | bf16 + channels_last + cuda_graphs | trained (x.pt) | 2 | 99.912 | 98.500 |"
    assert bench._fast_kwargs(["device_preprocess"]) == {"channels_last": False, "cuda_graphs": False,
                                                         "device_preprocess": True}
    with pytest.raises(ValueError, match="unknown fast-path flag"):
        bench._fast_kwargs(["channel_last"])


def test_bench_engine_tiny_every_stage():
    res = bench.bench_engine("tiny_l2cocc_c", runs=1)
    stages = res["stages"]
    model_stages = [name for name, _ in bench.STAGES if name != "LiDAR encoder"]
    for name in ["stereo", "preprocess", *model_stages, "model", "argmax", "total"]:
        assert stages[name]["n"] == 1 and stages[name]["p50"] > 0, name
    assert "LiDAR encoder" not in stages  # the camera model has no LiDAR tokenizer
    inside = sum(stages[name]["p50"] for name in model_stages)
    assert inside <= stages["model"]["p50"] <= stages["total"]["p50"]
    assert res["cpu_peak_rss_mb"] > 100 and res["device"] == "cpu" and "gpu_max_allocated_mb" not in res


def test_bench_agreement_alternates_two_frames_with_trained_weights():
    res = bench.bench_agreement("micro_l2cocc_l", "cpu", "fp32", channels_last=True)
    assert res["weights"] == "trained (micro_l2cocc_l.pt)" and res["frames"] == 2
    assert len(res["agreement_per_call"]) == 4  # A, B, A, B, each against its own fp32 labels
    assert res["agreement_pct"] == min(res["agreement_per_call"]) >= 99.5  # only the conv memory layout differs
    assert 0.0 <= res["occupancy_iou_pct"] <= 100.0
    assert res["channels_last"] is True and res["cuda_graphs"] is False


def test_bench_agreement_sees_a_path_that_replays_a_stale_frame(monkeypatch):
    """A fast path that returns the previous frame's labels (a CUDA graph fed stale inputs) is caught."""
    real = bench._agreement_engines

    def engines(*args, **kwargs):
        make, weights = real(*args, **kwargs)

        def make_stale(**kw):
            engine = make(**kw)
            if kw:  # the fast path: every call answers with the previous call's result
                infer, seen = engine.infer, []
                engine.infer = lambda frame: (seen.append(infer(frame)), seen[max(len(seen) - 2, 0)])[1]
            return engine

        return make_stale, weights

    monkeypatch.setattr(bench, "_agreement_engines", engines)
    res = bench.bench_agreement("tiny_l2cocc_l", "cpu", "fp32", channels_last=True)
    assert res["agreement_pct"] < 99.0, res["agreement_per_call"]


def test_targets_table_verdicts():
    rows = [{"step": "image decode + preprocess (1241x376 -> 384x1280)", "voxels": "-", "p50": 3.0, "p95": 1, "n": 1},
            {"step": "image decode only (fast.device_preprocess)", "voxels": "-", "p50": 0.2, "p95": 1, "n": 1},
            {"step": "grid message (fill + publish)", "voxels": 100000, "p50": 0.5, "p95": 1, "n": 1},
            {"step": "markers encode", "voxels": 100000, "p50": 9.0, "p95": 1, "n": 1},
            {"step": "markers encode + publish", "voxels": 100000, "p50": 1.0, "p95": 1, "n": 1},
            {"step": "grid message (fill + publish)", "voxels": 20000, "p50": 99.0, "p95": 1, "n": 1}]
    lines = bench._targets_table(rows, [], []).splitlines()
    assert "| 4.5 ms (3.0 + 0.5 + 1.0) | met |" in lines[2]
    assert "device_preprocess" in lines[3] and "| 1.7 ms (0.2 + 0.5 + 1.0) | met |" in lines[3]
    assert "not measured (no GPU in this run)" in lines[4]
    gpu = [{"preset": "semantickitti_l2cocc_c", "device": "cuda", "precision": "bf16",
            "stages": {"total": {"p50": 80.0}}, "gpu_max_allocated_mb": 2048.0}]
    lines = bench._targets_table(None, gpu, [{"device": "cuda:0", "agreement_pct": 99.0, "weights": "trained (x.pt)"},
                                             {"device": "cuda:0", "agreement_pct": 90.0, "weights": "random"}]
                                 ).splitlines()
    assert lines[2].endswith("| missed by 2.0x |") and lines[3].endswith("| met |")
    assert lines[4].endswith("| missed by 0.50 points |")


def test_specs_are_checked_before_anything_runs():
    assert bench._spec_kwargs("semantickitti_l2cocc_c:cuda:0:20:bf16:channels_last:cuda_graphs", with_runs=True) == {
        "preset": "semantickitti_l2cocc_c", "device": "cuda:0", "runs": 20, "precision": "bf16",
        "channels_last": True, "cuda_graphs": True, "device_preprocess": False}
    # the README's form: a number right after cuda is RUNS in an engine spec, the device index in an agreement one
    assert bench._spec_kwargs("semantickitti_l2cocc_c:cuda:20", with_runs=True)["device"] == "cuda"
    assert bench._spec_kwargs("semantickitti_l2cocc_c:cuda:20", with_runs=True)["runs"] == 20
    assert bench._spec_kwargs("x:cuda:1:fp16", with_runs=False)["device"] == "cuda:1"
    assert bench._spec_kwargs("x:cuda:5:torch_census:bf16", with_runs=True)["stereo"] == "torch_census"
    assert bench._spec_kwargs("tiny_l2cocc_c:cpu:3:channels_last", with_runs=True)["precision"] == "fp32"
    assert bench._spec_kwargs("tiny_l2cocc_c:cpu:fp32", with_runs=False)["precision"] == "fp32"
    for spec, phrase in (("tiny_l2cocc_c:cpu:3:cuda_graphs", "needs a CUDA device"),
                         ("tiny_l2cocc_c:cuda:0:3:compile", "unknown fast-path flag"),
                         ("tiny_l2cocc_c:cpu:3:fp8", "unknown fast-path flag"),
                         ("tiny_l2cocc_c:cpu:x", "RUNS must be a positive integer"),
                         ("tiny_l2cocc_c:cpu", "expected PRESET:DEVICE")):
        with pytest.raises(ValueError, match=phrase):
            bench._spec_kwargs(spec, with_runs=True)
    with pytest.raises(ValueError, match="precision must be one of"):
        bench._spec_kwargs("tiny_l2cocc_c:cpu:fp8", with_runs=False)


def test_a_failing_configuration_is_reported_and_the_others_kept(tmp_path, capsys):
    with pytest.raises(SystemExit):  # refused up front: nothing measured, nothing written
        bench.main(["--sections", "engine", "--engine", "tiny_l2cocc_c:cpu:1:cuda_graphs",
                    "--out", str(tmp_path / "a.md")])
    assert "needs a CUDA device" in capsys.readouterr().err and not (tmp_path / "a.md").exists()
    out = tmp_path / "b.md"
    rc = bench.main(["--sections", "agreement", "--agreement", "no_such_preset:cpu:fp32",
                     "tiny_l2cocc_c:cpu:fp32:channels_last", "--out", str(out)])
    text = out.read_text()
    assert rc == 1 and "## Failed configurations" in text and "`no_such_preset:cpu:fp32`" in text
    assert "| tiny_l2cocc_c | cpu | fp32 + channels_last |" in text  # the one that worked is in the report


def test_children_import_this_checkout_without_the_callers_pythonpath(monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = bench.child_env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(bench.REPO)
    out = subprocess.run([sys.executable, "-P", "-c", "import l2cocc_ros, os; print(os.path.dirname(l2cocc_ros.__file__))"],
                         capture_output=True, text=True, cwd="/", env=env, check=True).stdout.strip()
    assert out == str(bench.REPO / "l2cocc_ros")
