"""Full-size L2COcc-L forward against the original code's reference statistics (refvec, README §1-§3, §6).

Builds lidar_tokenizer -> voxel_backbone -> voxel_neck -> tpv_generator -> tpv_aggregator -> pts_bbox_head from
our modules, regenerates the deterministic weights and the 20 000 synthetic LiDAR points, and compares every
recorded block output (sum / abs_sum / sq_sum / min / max / sampled values) and the prediction histogram.
Takes ~30-60 s on 2 CPU cores and ~6 GB RAM.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from l2cocc_ros.core.model.lidar_encoder import LidarEncoder, lidar_preprocess
from l2cocc_ros.core.model.occ_head import OccHead
from l2cocc_ros.core.model.tpv import TPVAggregator, TPVGenerator
from l2cocc_ros.core.model.voxel_backbone import CustomResNet3D, GeneralizedLSSFPN

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402

CFG = "semantickitti_l2cocc_l"
REFVEC = refvec_util.REFVEC / f"{CFG}.json"



def build_lidar_chain() -> nn.Module:
    m = nn.Module()
    m.lidar_tokenizer = LidarEncoder()
    m.voxel_backbone = CustomResNet3D(num_layer=(2, 2, 2))
    m.voxel_neck = GeneralizedLSSFPN(dims=3)
    m.tpv_generator = TPVGenerator()
    m.tpv_aggregator = TPVAggregator()
    m.pts_bbox_head = OccHead(num_classes=20)
    return m


def stats(t: torch.Tensor, idx) -> dict:
    d = t.detach().double().reshape(-1)
    return {"sum": d.sum().item(), "abs_sum": d.abs().sum().item(), "sq_sum": (d * d).sum().item(),
            "min": d.min().item(), "max": d.max().item(), "sample_val": d[torch.as_tensor(idx)].numpy()}


def check(name: str, t: torch.Tensor, rec: dict, rel: float, failures: list) -> None:
    if list(t.shape) != rec["shape"]:
        failures.append(f"{name}: shape {list(t.shape)} != {rec['shape']}")
        return
    st = stats(t, rec["sample_idx"])
    scale = max(abs(rec["min"]), abs(rec["max"]))
    if abs(st["sum"] - rec["sum"]) > rel * rec["abs_sum"] + 1e-6:
        failures.append(f"{name}: sum {st['sum']} vs {rec['sum']}")
    for key in ("abs_sum", "sq_sum"):
        if abs(st[key] - rec[key]) > rel * abs(rec[key]) + 1e-9:
            failures.append(f"{name}: {key} {st[key]} vs {rec[key]}")
    for key in ("min", "max"):
        if abs(st[key] - rec[key]) > rel * scale + 1e-7:
            failures.append(f"{name}: {key} {st[key]} vs {rec[key]}")
    err = np.abs(st["sample_val"] - np.asarray(rec["sample_val"])).max()
    if err > 10 * rel * scale + 1e-6:
        failures.append(f"{name}: sample values differ by {err}")


def test_lidar_model_matches_reference_vectors():
    ref = json.loads(REFVEC.read_text())
    blocks = {(b["module"], b["call"], b["output"]): b for b in ref["blocks"]}
    torch.manual_seed(0)
    model = build_lidar_chain().eval()
    counts = refvec_util.apply_weight_rule(model, CFG)
    assert dict(counts) == ref["weight_rule_counts"]
    raw = refvec_util.lidar_points()
    check("raw_points", raw, ref["raw_points"], 1e-6, fails := [])
    feats, grid_ind = lidar_preprocess(raw)
    check("points", feats.view(1, 1, -1, 6), ref["inputs"]["['points'][0]"], 1e-6, fails)
    check("grid_ind", grid_ind.view(1, 1, -1, 3), ref["inputs"]["['grid_ind'][0]"], 1e-6, fails)
    assert not fails, fails
    out = {}
    with torch.no_grad():
        # The original shuffles the points (randperm after manual_seed(0)) before its MLP; order only matters
        # for the per-point record, not for the pooled grid.
        torch.manual_seed(0)
        perm = torch.randperm(feats.shape[0])
        out[("lidar_tokenizer.point_mlp", 0, ".")] = model.lidar_tokenizer.point_mlp(feats[perm])
        vox = model.lidar_tokenizer(feats, grid_ind)
        out[("lidar_tokenizer", 0, ".")] = vox
        bb = model.voxel_backbone(vox)
        del vox
        for i, b in enumerate(bb):
            out[("voxel_backbone", 0, f"[{i}]")] = b
        neck = model.voxel_neck(bb)
        del bb
        for i, n in enumerate(neck):
            out[("voxel_neck", 0, f"[{i}]")] = n
        f3d = neck[0]
        del neck
        tpv, feats_all = model.tpv_generator(f3d)
        for i, t in enumerate(tpv):
            out[("tpv_generator", 0, f"[0][{i}]")] = t
        for key in ("tpv_backbone", "tpv_neck"):
            for p, maps in enumerate(feats_all[key]):
                for j, m in enumerate(maps):
                    out[("tpv_generator", 0, f"[1]['{key}'][{p}][{j}]")] = m
        fagg, logits4 = model.tpv_aggregator(tpv, f3d)
        out[("tpv_aggregator", 0, "[0][0]")] = fagg
        out[("tpv_aggregator", 0, "[1]")] = logits4
        logits = model.pts_bbox_head(fagg)
        del fagg, f3d
        out[("pts_bbox_head", 0, "['output_voxels']")] = logits
    failures = []
    for key, t in out.items():
        assert key in blocks, f"no reference record {key}"
        # 1e-4 for blocks of exact functions; BN with batch statistics of small variance downstream: 1e-3.
        rel = 1e-4 if key[0].startswith(("lidar_tokenizer", "voxel_")) else 1e-3
        check(str(key), t, blocks[key], rel, failures)
    assert not failures, "\n".join(failures)
    pred = logits.argmax(1)
    hist = torch.bincount(pred.reshape(-1), minlength=20).tolist()
    ref_hist = ref["final"]["pred_hist"]
    diff = sum(abs(a - b) for a, b in zip(hist, ref_hist))
    # The TPV neck's batch-statistics BN sees |mean|/std ~ 100-200 under this weight rule, so float32
    # rounding is amplified ~1e4x: our own float32 and float64 runs differ in ~13.7k argmax voxels, while we
    # differ from the reference histogram by ~3.1k (0.15 % of 2 097 152). A real defect moves far more.
    assert diff <= 5000, f"pred_hist differs by {diff} voxels: {hist} vs {ref_hist}"
    rec = ref["final"]["['pred']"]
    same = (pred.reshape(-1)[torch.as_tensor(rec["sample_idx"])] == torch.tensor(rec["sample_val"]).long()).sum()
    assert same >= 60, f"only {int(same)}/64 sampled predictions equal the reference"
