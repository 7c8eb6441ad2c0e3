"""LSS view transformer: geometry by hand, truncation quirk, sum pooling, gradients, manifest layout."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from l2cocc_ros.core.model.geometry import cam_params, image_to_lidar, lidar_to_image
from l2cocc_ros.core.model.lift_splat import ViewTransformerLSS

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402

# camera looking along +x of the LiDAR frame: x_cam -> -y, y_cam -> -z, z_cam -> +x
ROT = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
TRAN = torch.tensor([0.3, -0.2, 0.1])
F, CX, CY, P03 = 10.0, 16.0, 8.5, 5.0
PC = (0.0, -4.0, -4.0, 8.0, 4.0, 4.0)  # 1 m voxels on an 8x8x8 grid


def tiny_cam(post_scale: float = 1.0):
    K = torch.tensor([[F, 0, CX, P03], [0, F, CY, 0.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    post_rot = torch.diag(torch.tensor([post_scale, post_scale, 1.0]))
    post_tran = torch.tensor([0.0, -1.0, 0.0])
    return (ROT.view(1, 1, 3, 3), TRAN.view(1, 1, 3), K.view(1, 1, 4, 4), post_rot.view(1, 1, 3, 3),
            post_tran.view(1, 1, 3), torch.eye(4).view(1, 4, 4))


def hand_lidar(u: float, v: float, d: float, post_scale: float = 1.0):
    """Digest §1.3 back-projection written out by hand for the camera above."""
    u0, v0 = u / post_scale, (v + 1.0) / post_scale
    xc = (u0 * d - P03 - CX * d) / F
    yc = (v0 * d - CY * d) / F
    zc = d
    return (zc + 0.3, -xc - 0.2, -yc + 0.1)


def tiny_lss(**kw):
    return ViewTransformerLSS(pc_range=PC, grid_size=(8, 8, 8), dbound=(2.0, 6.0, 1.0), input_size=(16, 32),
                              downsample=8, **kw)


def test_frustum_linspace_and_constants():
    lss = tiny_lss()
    assert lss.frustum.shape == (4, 2, 4, 3)
    assert torch.allclose(lss.frustum[0, 0, :, 0], torch.tensor([0.0, 31 / 3, 62 / 3, 31.0]))
    assert torch.allclose(lss.frustum[0, :, 0, 1], torch.tensor([0.0, 15.0]))
    assert torch.equal(lss.frustum[:, 0, 0, 2], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    assert torch.allclose(lss.dx, torch.ones(3)) and torch.equal(lss.nx, torch.tensor([8.0, 8.0, 8.0]))
    assert torch.allclose(lss.bx, torch.tensor([0.5, -3.5, -3.5]))
    assert all(not p.requires_grad for p in lss.parameters())


def test_geometry_roundtrip():
    cam = cam_params(*tiny_cam(post_scale=1.5))
    uvd = torch.tensor([[3.0, 4.0, 2.5], [20.0, 1.0, 7.0]])
    xyz = image_to_lidar(uvd, cam)
    for (u, v, d), p in zip(uvd.tolist(), xyz):
        assert torch.allclose(p, torch.tensor(hand_lidar(u, v, d, 1.5)), atol=1e-5)
    uv, d = lidar_to_image(xyz, cam)
    # forward projection includes the 4th column of P2: (u*d) = fx*xc + cx*d + P03
    assert torch.allclose(uv, uvd[:, :2], atol=1e-4) and torch.allclose(d, uvd[:, 2], atol=1e-5)


def test_single_frustum_point_lands_in_hand_computed_voxel():
    lss = tiny_lss()
    C = 3
    k, h, w = 2, 1, 2
    u, v, d = lss.frustum[k, h, w].tolist()
    x, y, z = hand_lidar(u, v, d)
    voxel = tuple(int(math.trunc(c - lo)) for c, lo in zip((x, y, z), PC[:3]))
    assert all(0 <= i < n for i, n in zip(voxel, (8, 8, 8))), voxel
    prob = torch.zeros(1, 4, 2, 4)
    prob[0, k, h, w] = 0.7
    ctx = torch.zeros(1, 1, C, 2, 4)
    ctx[0, 0, :, h, w] = torch.tensor([1.0, -2.0, 3.0])
    out = lss(ctx, prob, *tiny_cam())
    assert out.shape == (1, C, 8, 8, 8)
    nz = out.abs().sum(1)[0].nonzero().tolist()
    assert nz == [list(voxel)]
    assert torch.allclose(out[0, :, voxel[0], voxel[1], voxel[2]], 0.7 * torch.tensor([1.0, -2.0, 3.0]))


def brute_force(lss, ctx, prob, cam, trunc=True):
    D, fH, fW, _ = lss.frustum.shape
    out = torch.zeros(ctx.shape[2], 8, 8, 8, dtype=torch.float64)
    for k in range(D):
        for h in range(fH):
            for w in range(fW):
                u, v, d = lss.frustum[k, h, w].tolist()
                p = hand_lidar(u, v, d)
                q = [(c - lo) / 1.0 for c, lo in zip(p, PC[:3])]
                idx = [int(math.trunc(c)) if trunc else math.floor(c) for c in q]
                if all(0 <= i < n for i, n in zip(idx, (8, 8, 8))):
                    out[:, idx[0], idx[1], idx[2]] += float(prob[0, k, h, w]) * ctx[0, 0, :, h, w].double()
    return out


def test_sum_pooling_equals_brute_force():
    torch.manual_seed(0)
    lss = tiny_lss(chunk_bins=3)
    ctx = torch.randn(1, 1, 5, 2, 4)
    prob = torch.rand(1, 4, 2, 4).softmax(1)
    out = lss(ctx, prob, *tiny_cam())
    ref = brute_force(lss, ctx, prob, tiny_cam())
    assert (ref.abs().sum((0,)) > 0).sum() >= 3  # several voxels, some with more than one point
    assert torch.allclose(out[0].double(), ref, atol=1e-5)


def test_trunc_quirk_keeps_points_just_below_the_lower_bound():
    lss_t, lss_f = tiny_lss(trunc=True), tiny_lss(trunc=False)
    geom = torch.tensor([[[[-0.5, 0.2, 0.3]]]])  # x 0.5 m below the range
    ids_t, kept_t = lss_t.voxel_ids(geom)
    ids_f, kept_f = lss_f.voxel_ids(geom)
    assert kept_t.item() and not kept_f.item()
    # trunc(-0.5) = 0 -> voxel (0, 4, 4)
    assert ids_t.item() == (0 * 8 + 4) * 8 + 4


def test_gradients_reach_depth_and_context():
    torch.manual_seed(1)
    lss = tiny_lss()
    ctx = torch.randn(1, 1, 4, 2, 4, requires_grad=True)
    logits = torch.randn(1, 4, 2, 4, requires_grad=True)
    out = lss(ctx, logits.softmax(1), *tiny_cam())
    (out * torch.randn_like(out)).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0 and torch.isfinite(ctx.grad).all()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_bad_shapes_raise():
    lss = tiny_lss()
    with pytest.raises(ValueError, match="depth_prob"):
        lss(torch.zeros(1, 1, 4, 2, 4), torch.zeros(1, 5, 2, 4), *tiny_cam())
    with pytest.raises(ValueError, match="rot"):
        lss(torch.zeros(1, 1, 4, 2, 4), torch.zeros(1, 4, 2, 4), torch.eye(4), *tiny_cam()[1:])


@pytest.mark.parametrize("cfg,width", [("semantickitti_l2cocc_c", 1280), ("kitti360_l2cocc_c", 1408)])
def test_state_dict_matches_manifest(cfg, width):
    lss = ViewTransformerLSS(input_size=(384, width))
    ref = {k[len("img_view_transformer."):]: v for k, v in refvec_util.manifest_details(cfg).items()
           if k.startswith("img_view_transformer.")}
    sd = lss.state_dict()
    assert list(sd) == list(ref)
    for k, t in sd.items():
        assert list(t.shape) == ref[k]["shape"] and str(t.dtype) == "torch." + ref[k]["dtype"], k
        assert ref[k]["kind"] == "param_frozen"
    assert {k for k, _ in lss.named_parameters()} == set(ref)
