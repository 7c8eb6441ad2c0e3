"""Voxel proposal: back-projected depth pixels occupy the voxels computed by hand."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from l2cocc_ros.core.model.voxel_proposal import VoxelProposalLayer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402

ROT = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
TRAN = torch.tensor([0.25, 0.0, 0.5])
F, CX, CY = 4.0, 3.0, 2.0
PC = (0.0, -4.0, -4.0, 8.0, 4.0, 4.0)


def cam():
    K = torch.tensor([[F, 0, CX, 0.0], [0, F, CY, 0.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return (ROT.view(1, 1, 3, 3), TRAN.view(1, 1, 3), K.view(1, 1, 4, 4), torch.eye(3).view(1, 1, 3, 3),
            torch.zeros(1, 1, 3), torch.eye(4).view(1, 4, 4))


def hand_voxel(u, v, d):
    xc, yc = (u - CX) * d / F, (v - CY) * d / F
    p = (d + 0.25, -xc, -yc + 0.5)
    inside = all(lo + 1e-4 < c < hi - 1e-4 for c, lo, hi in zip(p, PC[:3], PC[3:]))
    return tuple(int(math.trunc(8 * (c - lo) / (hi - lo))) for c, lo, hi in zip(p, PC[:3], PC[3:])), inside


def test_known_depth_pixels_occupy_expected_voxels():
    layer = VoxelProposalLayer(pc_range=PC, grid_size=(8, 8, 8), input_size=(4, 6))
    depth = torch.full((1, 1, 4, 6), 100.0)  # far outside the range
    chosen = {(0, 0): 2.0, (1, 5): 3.3, (3, 2): 6.5, (2, 3): 5.0, (3, 5): 7.9}
    for (v, u), d in chosen.items():
        depth[0, 0, v, u] = d
    expected = set()
    for (v, u), d in chosen.items():
        vox, inside = hand_voxel(u, v, d)
        if inside:
            expected.add(vox)
    assert len(expected) >= 3
    # add enough in-range duplicates so the "< 10 points" fallback is not triggered
    depth[0, 0, 0, 1:5] = 2.0
    for u in range(1, 5):
        expected.add(hand_voxel(u, 0, 2.0)[0])
    depth2 = depth.clone()
    depth2[0, 0, 1, 0:5] = 3.3
    for u in range(0, 5):
        vox, inside = hand_voxel(u, 1, 3.3)
        if inside:
            expected.add(vox)
    occ = layer(depth2, *cam())
    assert occ.shape == (1, 1, 8, 8, 8) and occ.dtype == torch.float32
    got = {tuple(i) for i in occ[0, 0].nonzero().tolist()}
    assert got == expected
    assert set(occ.unique().tolist()) <= {0.0, 1.0}


def test_too_few_points_uses_dummy_points():
    layer = VoxelProposalLayer(pc_range=PC, grid_size=(8, 8, 8), input_size=(4, 6))
    occ = layer(torch.zeros(1, 1, 4, 6), *cam())
    # 10 dummy points in [0, 1)^3 m -> x index 0, y index 4, z index 4 with 1 m voxels
    assert {tuple(i) for i in occ[0, 0].nonzero().tolist()} == {(0, 4, 4)}


def test_bad_depth_shape_raises():
    layer = VoxelProposalLayer(pc_range=PC, grid_size=(8, 8, 8), input_size=(4, 6))
    with pytest.raises(ValueError, match="stereo_depth"):
        layer(torch.zeros(1, 1, 5, 6), *cam())


@pytest.mark.parametrize("cfg,width", [("semantickitti_l2cocc_c", 1280), ("kitti360_l2cocc_c", 1408)])
def test_state_dict_matches_manifest(cfg, width):
    layer = VoxelProposalLayer(input_size=(384, width))
    ref = {k[len("proposal_layer."):]: v for k, v in refvec_util.manifest_details(cfg).items()
           if k.startswith("proposal_layer.")}
    sd = layer.state_dict()
    assert list(sd) == list(ref) == ["image_grid"]
    assert list(sd["image_grid"].shape) == ref["image_grid"]["shape"] and ref["image_grid"]["kind"] == "buffer"
    assert sd["image_grid"][0, 0, 5, 7] == 7 and sd["image_grid"][0, 1, 5, 7] == 5


def test_full_size_proposal_matches_reference_vectors():
    ref = refvec_util.refvec("semantickitti_l2cocc_c")
    rec = {(b["module"], b["output"]): b for b in ref["blocks"] if b["module"].startswith("proposal_layer")}
    inp = refvec_util.camera_inputs()
    cam = [inp[k] for k in ("rot", "tran", "intrin", "post_rot", "post_tran", "bda")]
    layer = VoxelProposalLayer()
    occ = layer(inp["stereo_depth"], *cam)
    out = rec[("proposal_layer", ".")]
    assert list(occ.shape) == out["shape"] and occ.sum().item() == out["sum"] == 11885
    flat = occ.reshape(-1)
    assert flat[torch.as_tensor(out["sample_idx"])].tolist() == out["sample_val"]
    nz = occ[0, 0].nonzero()
    assert nz.sum().item() == rec[("proposal_layer.voxelize", "[0]")]["sum"]  # sum of (0, x, y, z) indices
