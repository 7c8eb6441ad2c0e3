"""EVT / DFA3D: sampling equals a slow explicit reference and trilinear grid_sample on V⊗P; gradients; the
proposal/validity routing; initialisation; manifest layout."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from l2cocc_ros.core.model.evt import MSDeformableAttention3D_DFA3D, VoxFormerHead_Tiny, dfa3d_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402


def slow_reference(value, depth, loc, attn, hw):
    """Literal per-sample loop: 4 bilinear corners x 2 depth bins, zero outside."""
    H, W = hw
    HW, M, Cm = value.shape
    D = depth.shape[1]
    Q, _, K, _ = loc.shape
    out = torch.zeros(Q, M, Cm, dtype=torch.float64)
    for q in range(Q):
        for m in range(M):
            for k in range(K):
                x = loc[q, m, k, 0].item() * W - 0.5
                y = loc[q, m, k, 1].item() * H - 0.5
                z = loc[q, m, k, 2].item() * D - 0.5
                x0, y0, z0 = math.floor(x), math.floor(y), math.floor(z)
                for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                        if not (0 <= yi < H and 0 <= xi < W):
                            continue
                        tok = yi * W + xi
                        sigma = 0.0
                        for zi, wz in ((z0, 1 - (z - z0)), (z0 + 1, z - z0)):
                            if 0 <= zi < D:
                                sigma += wz * depth[tok, zi].item()
                        out[q, m] += attn[q, m, k].item() * wy * wx * sigma * value[tok, m].double()
    return out.reshape(Q, M * Cm)


def random_case(seed=0, Q=5, M=2, K=3, Cm=4, H=3, W=5, D=6):
    g = torch.Generator().manual_seed(seed)
    value = torch.randn(H * W, M, Cm, generator=g, dtype=torch.float64)
    depth = torch.rand(H * W, D, generator=g, dtype=torch.float64).softmax(1)
    loc = torch.rand(Q, M, K, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some points outside
    attn = torch.rand(Q, M, K, generator=g, dtype=torch.float64).softmax(-1)
    return value, depth, loc, attn, (H, W)


def test_dfa3d_equals_slow_reference():
    value, depth, loc, attn, hw = random_case()
    got = dfa3d_sample(value, depth, loc, attn, hw)
    ref = slow_reference(value, depth, loc, attn, hw)
    assert torch.allclose(got, ref, atol=1e-12)


def test_dfa3d_equals_trilinear_grid_sample_of_outer_product():
    value, depth, loc, attn, (H, W) = random_case(seed=3, Q=7, M=3, K=4, Cm=2, H=4, W=6, D=5)
    M, Cm, D = 3, 2, 5
    v = value.permute(1, 2, 0).reshape(M, Cm, 1, H, W)
    p = depth.t().reshape(1, 1, D, H, W)
    G = v * p  # (M, Cm, D, H, W)
    grid = (loc * 2 - 1).permute(1, 0, 2, 3).reshape(M, 7, 4, 1, 3)  # (N=M, Dout=Q, Hout=K, Wout=1, xyz)
    s = F.grid_sample(G, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (M, Cm, Q, K, 1)
    ref = (s[..., 0] * attn.permute(1, 0, 2).unsqueeze(1)).sum(-1)  # (M, Cm, Q)
    ref = ref.permute(2, 0, 1).reshape(7, M * Cm)
    assert torch.allclose(dfa3d_sample(value, depth, loc, attn, (H, W)), ref, atol=1e-12)


def test_gradients_reach_value_depth_and_offsets():
    torch.manual_seed(0)
    att = MSDeformableAttention3D_DFA3D(embed_dims=16, num_heads=2, num_points=3).double()
    with torch.no_grad():  # non-trivial weights (offset and attention layers start at zero)
        for p in att.parameters():
            p.add_(0.1 * torch.randn_like(p))
    H, W, D = 4, 6, 5
    query = torch.randn(6, 16, dtype=torch.float64, requires_grad=True)
    value = torch.randn(H * W, 16, dtype=torch.float64, requires_grad=True)
    depth = torch.rand(H * W, D, dtype=torch.float64, requires_grad=True)
    ref = torch.rand(6, 3, dtype=torch.float64) * 0.8 + 0.1
    out = att(query, value, depth, ref, (H, W))
    assert out.shape == (6, 16)
    (out * torch.randn_like(out)).sum().backward()
    for name, t in (("value", value.grad), ("depth", depth.grad), ("query", query.grad),
                    ("sampling_offsets", att.sampling_offsets.weight.grad),
                    ("sampling_offsets_depth", att.sampling_offsets_depth.weight.grad),
                    ("attention_weights", att.attention_weights.weight.grad)):
        assert t is not None and t.abs().sum() > 0 and torch.isfinite(t).all(), name


def test_offset_initialisation():
    att = MSDeformableAttention3D_DFA3D(embed_dims=128, num_heads=8, num_points=8)
    b = att.sampling_offsets.bias.view(8, 8, 2)
    assert torch.allclose(b[0, 0], torch.tensor([1.0, 0.0])) and torch.allclose(b[1, 2], torch.tensor([3.0, 3.0]))
    bd = att.sampling_offsets_depth.bias.view(8, 8)
    th = 2 * math.pi / 8
    assert math.isclose(bd[1, 3].item(), 4 * (math.cos(th) + math.sin(th)) / 2, rel_tol=1e-6)
    assert att.sampling_offsets.weight.abs().sum() == 0 and att.attention_weights.weight.abs().sum() == 0


ROT = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
PC = (0.0, -4.0, -2.0, 8.0, 4.0, 2.0)


def tiny_cam():
    K = torch.tensor([[8.0, 0, 16.0, 0.0], [0, 8.0, 8.0, 0.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return (ROT.view(1, 1, 3, 3), torch.tensor([[[1.0, 0.0, 0.0]]]), K.view(1, 1, 4, 4),
            torch.eye(3).view(1, 1, 3, 3), torch.zeros(1, 1, 3), torch.eye(4).view(1, 4, 4))


def tiny_head():
    torch.manual_seed(0)
    head = VoxFormerHead_Tiny(pc_range=PC, grid_size=(4, 4, 2), input_size=(16, 32), dbound=(0.0, 8.0, 1.0),
                              embed_dims=16, num_layers=2, num_heads=2, num_points=2, feedforward_channels=32)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return head


def tiny_inputs(requires_grad=False):
    g = torch.Generator().manual_seed(1)
    ctx = torch.randn(1, 1, 16, 2, 4, generator=g).requires_grad_(requires_grad)
    prob = torch.randn(1, 8, 2, 4, generator=g).softmax(1).requires_grad_(requires_grad)
    lss = torch.randn(1, 16, 4, 4, 2, generator=g).requires_grad_(requires_grad)
    prop = torch.zeros(1, 1, 4, 4, 2)
    prop[0, 0, 0, :, :] = 1  # centres at x = 1 = the camera's x: depth 0 -> invalid projections
    prop[0, 0, 2, 1:3, 1] = 1
    return ctx, prob, prop, lss


def test_routing_of_proposed_valid_invalid_and_masked_voxels():
    head = tiny_head().eval()
    ctx, prob, prop, lss = tiny_inputs()
    with torch.no_grad():
        out = head(ctx, prob, prop, lss, *tiny_cam())
        assert out.shape == (1, 16, 4, 4, 2) and torch.isfinite(out).all()
        q = lss.reshape(16, -1).t()
        o = out.reshape(16, -1).t()
        flat = prop.reshape(-1)
        masked = (flat == 0).nonzero().squeeze(1)
        assert torch.allclose(o[masked], head.mlp_prior(q[masked]), atol=1e-6)
        un = flat.nonzero().squeeze(1)
        ref, valid = head.reference_points(head.ref_3d[un], *tiny_cam())
        assert valid.any() and (~valid).any()
        # invalid projections: the attention term is zero; same result as a run with nothing valid
        no_attn = head.cross_transformer(q[un], ctx[0, 0], prob[0], ref, torch.zeros_like(valid))
        assert torch.allclose(o[un][~valid], no_attn[~valid], atol=1e-6)
        assert not torch.allclose(o[un][valid], no_attn[valid], atol=1e-4)
        # eval mode is deterministic (dropout off)
        assert torch.equal(out, head(ctx, prob, prop, lss, *tiny_cam()))


def test_reference_points_by_hand():
    head = tiny_head()
    # voxel (3, 1, 0) of 2x2x2 m voxels: centre x = 7, y = -1, z = -1 -> camera x = 1, y = 1, depth = 6
    ref, valid = head.reference_points(torch.tensor([[3.5 / 4, 1.5 / 4, 0.5 / 2]]), *tiny_cam())
    u, v = 8 * 1.0 / 6 + 16, 8 * 1.0 / 6 + 8
    assert torch.allclose(ref[0], torch.tensor([u / 32, v / 16, 6.0 / 8.0])) and valid.item()


def test_empty_proposal_uses_all_voxels():
    head = tiny_head().eval()
    ctx, prob, prop, lss = tiny_inputs()
    with torch.no_grad():
        a = head(ctx, prob, torch.zeros_like(prop), lss, *tiny_cam())
        b = head(ctx, prob, torch.ones_like(prop), lss, *tiny_cam())
    assert torch.equal(a, b)


def test_backward_reaches_every_parameter_and_input():
    head = tiny_head().train()
    ctx, prob, prop, lss = tiny_inputs(requires_grad=True)
    out = head(ctx, prob, prop, lss, *tiny_cam())
    (out * torch.randn_like(out)).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "cross_transformer.level_embeds":
            assert p.grad.abs().sum() > 0, name
    assert head.cross_transformer.level_embeds.grad[0].abs().sum() > 0  # only level 0 is used
    for t in (ctx, prob, lss):
        assert t.grad is not None and t.grad.abs().sum() > 0


@pytest.mark.parametrize("cfg,width", [("semantickitti_l2cocc_c", 1280), ("kitti360_l2cocc_c", 1408)])
def test_state_dict_matches_manifest(cfg, width):
    head = VoxFormerHead_Tiny(input_size=(384, width))
    ref = {k[len("VoxFormer_head."):]: v for k, v in refvec_util.manifest_details(cfg).items()
           if k.startswith("VoxFormer_head.")}
    sd = head.state_dict()
    assert list(sd) == list(ref)
    for k, t in sd.items():
        assert list(t.shape) == ref[k]["shape"] and str(t.dtype) == "torch." + ref[k]["dtype"], k
    buffers = {k for k, _ in head.named_buffers()}
    assert buffers == {k for k, v in ref.items() if v["kind"] == "buffer"}
    assert torch.equal(sd["vox_coords"][2049], torch.tensor([1, 0, 1, 2049]))
    assert torch.allclose(sd["ref_3d"][2049], torch.tensor([1.5 / 128, 0.5 / 128, 1.5 / 16]))


def test_full_size_reference_projection_counts():
    """refvec README §4: 11 885 proposed voxels, 11 717 of them project into the image."""
    from l2cocc_ros.core.model.voxel_proposal import VoxelProposalLayer

    inp = refvec_util.camera_inputs()
    cam = [inp[k] for k in ("rot", "tran", "intrin", "post_rot", "post_tran", "bda")]
    occ = VoxelProposalLayer()(inp["stereo_depth"], *cam)
    head = VoxFormerHead_Tiny(num_layers=1)
    idx = occ.reshape(-1).nonzero().squeeze(1)
    ref, valid = head.reference_points(head.ref_3d[idx], *cam)
    assert idx.numel() == 11885 and int(valid.sum()) == 11717
    assert ((ref[valid, :2] > 0) & (ref[valid, :2] < 1)).all()


def test_dfa3d_query_chunking_is_exact():
    value, depth, loc, attn, hw = random_case(seed=5, Q=9)
    assert torch.equal(dfa3d_sample(value, depth, loc, attn, hw, chunk=4), dfa3d_sample(value, depth, loc, attn, hw))
