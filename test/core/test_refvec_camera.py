"""Full-size SemanticKITTI L2COcc-C against the original code's reference vectors, block by block.

../shared/reference/refvec/README.md: deterministic weights (§1) and inputs (§2), eval + no_grad, fp32 CPU;
each recorded block output's sum / abs_sum / sq_sum / min / max / 64 samples must agree within §6.
One full-resolution forward (about 40 s on 2 free cores, ~2.5 GB peak RSS).
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import refvec_util as R  # noqa: E402

from l2cocc_ros.core.config import get_preset  # noqa: E402
from l2cocc_ros.core.model.l2cocc import build_model  # noqa: E402

CFG = "semantickitti_l2cocc_c"

#: README §5 HIGH-confidence blocks upstream of DCN / NA / DFA3D: rel 1e-4.
STRICT = ("img_backbone", "img_neck", "depth_net.depth_net.bn", "depth_net.depth_net.reduce_conv",
          "depth_net.depth_net.context_", "depth_net.depth_net.depth_mlp", "depth_net.depth_net.depth_se",
          "depth_net.depth_net.depth_conv.3", "depth_net.stereo_volume_encoder", "proposal_layer")
#: Downstream of the TPV 2-D neck, whose BatchNorms use batch statistics of low-variance maps (README §4/§6):
#: fp32 rounding is amplified there. Measured: our own fp32 vs fp64 trunk differ by up to 3.3e-4 (neck),
#: 3.8e-4 (aggregator logits) and 2.0e-3 (head conv) of max|x| in the samples, the reference vs our fp32 by
#: 4.7e-4 / 4.8e-4 / 2.6e-3, and the reference vs our fp64 by 3.0e-4 / 2.7e-4 / 0.9e-3: rounding, not a bug.
AMPLIFIED = ("tpv_generator.global_encoder_neck", "tpv_generator", "tpv_aggregator", "pts_bbox_head")
#: Reference records with no counterpart in our code (helper modules of the original) or another output layout.
ABSENT_OK = {"proposal_layer.voxelize", "tpv_generator.global_encoder_backbone.drop_after_pos",
             "tpv_generator.tpv_pooler.pool_xy", "tpv_generator.tpv_pooler.pool_yz", "tpv_generator.tpv_pooler.pool_zx"}


def tolerance(module: str, output: str) -> float:
    if module.startswith(STRICT):
        return 1e-4
    if module == "tpv_generator" and "tpv_backbone" in output:
        return 1e-3  # the Swin outputs come before the neck
    if module.startswith(AMPLIFIED):
        return 5e-3
    return 1e-3


@pytest.fixture(scope="module")
def run():
    ref = R.refvec(CFG)
    model = build_model(get_preset(CFG).model).eval()
    counts = R.apply_weight_rule(model, CFG)
    inputs = R.camera_inputs()
    recorder = R.BlockRecorder(model, ref["blocks"])
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model(inputs)["logits"]
    recorder.remove()
    hist = torch.bincount(logits.argmax(1).flatten(), minlength=logits.shape[1]).tolist()
    del model, logits
    gc.collect()
    return ref, counts, inputs, recorder, hist


def test_inputs_follow_the_rule(run):
    ref, _, inputs, _, _ = run
    names = {"img": "['img_inputs'][0]", "rot": "['img_inputs'][1]", "tran": "['img_inputs'][2]",
             "intrin": "['img_inputs'][3]", "post_rot": "['img_inputs'][4]", "post_tran": "['img_inputs'][5]",
             "bda": "['img_inputs'][6]", "stereo_depth": "['img_metas']['stereo_depth']"}
    for ours, theirs in names.items():
        err = R.compare_stats(R.tensor_stats(inputs[ours]), ref["inputs"][theirs], rel=1e-6)
        assert max(err.values()) <= 1, f"input {ours}: {err}"


def test_weight_rule_counts(run):
    ref, counts, _, _, _ = run
    assert dict(counts) == ref["weight_rule_counts"]


def test_every_block_is_compared(run):
    ref, _, _, recorder, _ = run
    assert set(recorder.absent) == ABSENT_OK
    assert {(m, p) for m, _, p in recorder.unmatched} <= {
        (f"VoxFormer_head.cross_transformer.encoder.layers.{i}.attentions.0.deformable_attention", "[1]")
        for i in range(3)}  # the original's kernel also returned its attention weights
    assert len(recorder.stats) == len(ref["blocks"]) - len(recorder.unmatched) - sum(
        1 for r in ref["blocks"] if r["module"] in ABSENT_OK)


def test_blocks_match_reference(run):
    ref, _, _, recorder, _ = run
    failures = []
    for r in ref["blocks"]:
        key = (r["module"], r["call"], r["output"])
        if key not in recorder.stats:
            continue
        err = R.compare_stats(recorder.stats[key], r, rel=tolerance(r["module"], r["output"]))
        bad = {k: round(v, 2) for k, v in err.items() if v > 1}
        if bad:
            failures.append(f"{r['module']} call {r['call']} {r['output']} (tol {tolerance(*key[::2]):g}): {bad}")
    assert not failures, "blocks off the reference (error / tolerance):\n" + "\n".join(failures)


def test_prediction_histogram(run):
    ref, _, _, _, hist = run
    expected = ref["final"]["pred_hist"]
    moved = sum(abs(a - b) for a, b in zip(hist, expected)) // 2
    # near-tied logits: our own fp32 vs fp64 flip the argmax of 4 879 voxels (histogram |diff| 706 vs the
    # reference in fp64, 830 in fp32), so allow ~0.1 % of the 2 097 152 voxels
    assert moved <= 2000, f"{moved} voxels changed class: ours {hist} vs reference {expected}"
    assert all(abs(a - b) <= max(100, 0.002 * b) for a, b in zip(hist, expected)), (hist, expected)
