"""LiDAR preprocessing (strict crop, 6-d features, cell index) and the encoder (BN batch stats, scatter-max)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from l2cocc_ros.core.model.lidar_encoder import LidarEncoder, lidar_preprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402


def test_preprocess_by_hand():
    pts = torch.tensor([[1.0, 2.0, 0.1, 0.5],      # inside
                        [0.0, 1.0, 0.0, 0.2],      # x == x_min: excluded (strict)
                        [51.2, 0.0, 0.0, 0.1],     # x == x_max: excluded
                        [10.05, -25.5, 4.39, 0.9],  # inside, near the y_min / z_max faces
                        [5.0, 30.0, 0.0, 0.3]])    # outside in y
    feats, ind = lidar_preprocess(pts)
    assert feats.shape == (2, 6) and ind.shape == (2, 3) and ind.dtype == torch.int64
    assert ind.tolist() == [[2, 69, 5], [25, 0, 15]]
    # cell (2, 69, 5): centre (1.0, 2.2, 0.2)
    assert torch.allclose(feats[0], torch.tensor([0.0, -0.2, -0.1, 1.0, 2.0, 0.5]), atol=1e-5)
    # cell (25, 0, 15): centre (10.2, -25.4, 4.2)
    assert torch.allclose(feats[1], torch.tensor([-0.15, -0.1, 0.19, 10.05, -25.5, 0.9]), atol=1e-5)


def test_preprocess_rejects_bad_shape():
    with pytest.raises(ValueError, match="points"):
        lidar_preprocess(torch.zeros(5, 3))


def test_encoder_scatter_max_and_batch_statistics():
    torch.manual_seed(0)
    enc = LidarEncoder(grid_size=(4, 4, 2), out_channels=8).eval()
    feats = torch.randn(10, 6)
    ind = torch.tensor([[0, 0, 0]] * 4 + [[3, 2, 1]] * 3 + [[1, 1, 0]] * 3)
    out = enc(feats, ind)
    assert out.shape == (1, 8, 4, 4, 2)
    with torch.no_grad():
        pf = enc.point_mlp(feats)
    assert torch.allclose(out[0, :, 0, 0, 0], pf[:4].max(0)[0])
    assert torch.allclose(out[0, :, 3, 2, 1], pf[4:7].max(0)[0])
    assert torch.allclose(out[0, :, 1, 1, 0], pf[7:].max(0)[0])
    assert (out != 0).any(1).sum() == 3  # every other cell is exactly zero
    # BatchNorm uses the statistics of the frame's points even in eval mode: shifting all inputs is a no-op
    assert torch.allclose(enc(feats + 5.0, ind), out, atol=1e-5)
    assert all(not bn.track_running_stats for bn in enc.point_mlp if isinstance(bn, torch.nn.BatchNorm1d))


def test_encoder_backward_and_errors():
    enc = LidarEncoder(grid_size=(4, 4, 2), out_channels=8)
    feats = torch.randn(12, 6, requires_grad=True)
    ind = torch.randint(0, 2, (12, 3))
    out = enc(feats, ind)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="grid_ind"):
        enc(torch.randn(3, 6), torch.tensor([[0, 0, 0], [4, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="feats"):
        enc(torch.randn(1, 6), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("cfg", ["semantickitti_l2cocc_l", "kitti360_l2cocc_l"])
def test_state_dict_matches_manifest(cfg):
    enc = LidarEncoder()
    ref = {k[len("lidar_tokenizer."):]: v for k, v in refvec_util.manifest_details(cfg).items()
           if k.startswith("lidar_tokenizer.")}
    sd = enc.state_dict()
    assert list(sd) == list(ref)
    assert all(list(t.shape) == ref[k]["shape"] for k, t in sd.items())


def test_tiny_lidar_chain_forward_backward_with_x4_upsampling():
    """A TINY -L composition: 32x32x4 internal grid (coarse_ratio 8), 16 channels, small Swin, x4 head."""
    from l2cocc_ros.core.model.occ_head import OccHead
    from l2cocc_ros.core.model.tpv import TPVAggregator, TPVGenerator
    from l2cocc_ros.core.model.voxel_backbone import CustomResNet3D, GeneralizedLSSFPN

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(3000, 4, generator=g) * torch.tensor([51.2, 51.2, 6.4, 1.0]) - torch.tensor([0, 25.6, 2.0, 0])
    feats, ind = lidar_preprocess(pts, coarse_ratio=8)
    assert ind.max(0)[0].tolist() <= [31, 31, 3]
    enc = LidarEncoder(grid_size=(32, 32, 4), out_channels=16, hidden=(16, 16, 16))
    bb = CustomResNet3D(in_channels=16, num_layer=(1, 1, 1), num_channels=(16, 16, 16))
    neck = GeneralizedLSSFPN(in_channels=(16, 16, 16), out_channels=16, dims=3, gn_groups=4)
    gen = TPVGenerator(embed_dims=16, swin_embed_dims=8, swin_depths=(1, 1, 2, 1), swin_num_heads=(1, 1, 2, 2))
    agg = TPVAggregator(embed_dims=16)
    head = OccHead(in_channels=16, num_classes=20, out_size=(128, 128, 16), gn_groups=4)
    f3d = neck(bb(enc(feats, ind)))[0]
    tpv, _ = gen(f3d)
    fagg, w = agg(tpv, f3d)
    logits = head(fagg)
    assert logits.shape == (1, 20, 128, 128, 16) and w.shape == (1, 4, 32, 32, 4)
    logits.logsumexp(1).mean().backward()
    for mod in (enc, bb, neck, gen, agg, head):
        for name, p in mod.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
