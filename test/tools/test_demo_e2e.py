"""End to end over DDS (LOCALHOST): synth -> kitti2bag -> replay -> node -> scorer, as `make demo` runs it.

The scorer's IoU / mIoU must equal `l2cocc eval` on the prediction files it wrote, over the same frames.
"""
import json

import pytest
import torch

from l2cocc_ros.core.checkpoint import save_checkpoint
from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.model.l2cocc import build_model
from l2cocc_ros.tools import evaluate
from l2cocc_ros.tools.demo import run_demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    cfg = get_preset("tiny_l2cocc_c")
    ckpt = out / "tiny_c_random.pt"
    save_checkpoint(ckpt, build_model(cfg.model), cfg, extra={"source": "random init, test only"})
    summary = run_demo(out, ckpt, frames=3, seed=5, rate=0.2, width=310, height=94, renders=1, timeout_s=400)
    return out, summary


def test_grids_arrive_and_are_scored(demo_run):
    out, summary = demo_run
    assert summary["frames_sent"] == 3
    assert 1 <= summary["frames"] <= 3 and summary["dropped"] == 3 - summary["frames"]
    assert summary["scored_frames"] == summary["frames"]
    assert summary["latency_ms_p50"] > 0
    assert 0.0 <= summary["iou"] <= 1.0 and 0.0 <= summary["miou"] <= 1.0
    assert len(summary["renders"]) == 1 and (out / summary["renders"][0].split("/")[-1]).is_file()


def test_scorer_equals_offline_eval(demo_run, capsys):
    out, summary = demo_run
    data, pred = out / "data", out / "predictions"
    have = {p.stem for p in (pred / "sequences/08/predictions").glob("*.label")}
    for label in (data / "sequences/08/voxels").glob("*.label"):
        if label.stem not in have:  # frames the node dropped: not part of "the same frames"
            label.unlink()
    assert evaluate.main(["-d", str(data), "-p", str(pred), "-s", "08", "--json", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{"):])
    assert result["iou"] == pytest.approx(summary["iou"], abs=1e-9)
    assert result["miou"] == pytest.approx(summary["miou"], abs=1e-9)
