"""GeometryDepthNet: checkpoint keys, stereo one-hot quirk, camera vector, tiny forward/backward."""
from __future__ import annotations

import json

import pytest
import torch

from l2cocc_ros.core.model.depth_net import GeometryDepthNet, get_mlp_input, stereo_depth_to_onehot

from refvec_util import MANIFEST as _MANIFEST_DIR  # noqa: E402

MANIFEST = _MANIFEST_DIR / "semantickitti_l2cocc_c.json"
TINY = dict(in_channels=40, context_channels=16, dbound=(2.0, 10.0, 0.5), agg_embed_dims=8)


def test_state_dict_equals_manifest():
    man = json.loads(MANIFEST.read_text())
    ref = {k[len("model.depth_net."):]: tuple(v) for k, v in man.items() if k.startswith("model.depth_net.")}
    net = GeometryDepthNet()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == ref
    assert net.D == 112
    assert sum(p.numel() for p in net.parameters()) == 14_598_830


def test_zero_initialised_residual_scales_and_offsets():
    net = GeometryDepthNet(**TINY)
    agg = net.depth_aggregation
    assert agg.mono_stereo_attention.gamma.item() == 0 and agg.stereo_mono_attention.gamma.item() == 0
    assert agg.channel_attention.layer_scale.item() == 0
    dcn = net.depth_net.depth_conv[4]
    assert torch.count_nonzero(dcn.conv_offset.weight) == 0 and torch.count_nonzero(dcn.conv_offset.bias) == 0
    assert 0 < agg.mono_stereo_attention.neighbor_atttention.rpb.abs().max() < 0.1


def _patches_to_map(values, p):
    """values: (h, w) list of p*p lists -> (1, 1, h*p, w*p) depth map."""
    h, w = len(values), len(values[0])
    out = torch.zeros(1, 1, h * p, w * p)
    for i in range(h):
        for j in range(w):
            out[0, 0, i * p:(i + 1) * p, j * p:(j + 1) * p] = torch.tensor(values[i][j]).view(p, p)
    return out


def test_stereo_onehot_columns_small_bins():
    # D = 16 bins centred 2.0 .. 9.5; column = floor((d - 1.75) / 0.5) - 1 of the min non-zero depth.
    z = 0.0
    values = [[[z, z, z, z], [z, 5.0, 7.0, z], [2.0, 2.0, 2.0, 2.0], [2.25, 30.0, z, z]],
              [[1.0, z, z, z], [9.74, 9.9, z, z], [10.2, z, z, z], [10.25, z, z, z]]]
    onehot = stereo_depth_to_onehot(_patches_to_map(values, 2), 16, 2.0, 0.5, downsample=2)
    assert onehot.shape == (1, 16, 2, 4)
    expected = [[None, 5, None, 0], [None, 14, 15, None]]
    for i in range(2):
        for j in range(4):
            col = expected[i][j]
            vec = onehot[0, :, i, j]
            if col is None:
                assert vec.sum() == 0, (i, j, vec)
            else:
                assert vec.sum() == 1 and vec[col] == 1, (i, j, vec)


def test_stereo_onehot_full_range_and_shift():
    # 8x8 patches, D = 112: 11.5 m lands in column 18 (bin centre 11.0 m, one bin shallower: the quirk);
    # 58.24 m is the last column, 58.25 m is dropped; NaN/negative are ignored.
    depth = torch.zeros(1, 1, 8, 48)
    for j, d in enumerate([11.5, 58.24, 58.25, float("nan"), -3.0, 2.26]):
        depth[0, 0, :, 8 * j:8 * (j + 1)] = d
    depth[0, 0, 0, 0] = 0.0  # zeros inside a patch never win the min
    onehot = stereo_depth_to_onehot(depth, 112)
    cols = [int(onehot[0, :, 0, j].argmax()) if onehot[0, :, 0, j].sum() else None for j in range(6)]
    assert cols == [18, 111, None, None, None, 0]


def test_stereo_onehot_bad_shape():
    with pytest.raises(ValueError, match="multiples of 8"):
        stereo_depth_to_onehot(torch.zeros(1, 1, 12, 16), 112)


def test_mlp_input_order():
    rot = torch.arange(9.0).view(1, 1, 3, 3) + 100
    tran = torch.tensor([[[7.0, 8.0, 9.0]]])
    intrin = torch.eye(4)[None, None].clone()
    intrin[0, 0, :3] = torch.tensor([[700.0, 0, 600, 45], [0, 710, 180, -0.1], [0, 0, 1, 0.004]])
    post_rot = torch.tensor([[[[1.1, 0.2, 0], [0.3, 1.2, 0], [0, 0, 1]]]])
    post_tran = torch.tensor([[[5.0, -3.0, 0.0]]])
    bda = torch.eye(4)[None].clone()
    bda[0, :3, 3] = torch.tensor([0.5, 0.6, 0.7])
    bda[0, 0, 1] = 0.9
    m = get_mlp_input(rot, tran, intrin, post_rot, post_tran, bda)
    assert m.shape == (1, 1, 33)
    expected = [700, 710, 600, 180, 45, -0.1, 0.004, 1.1, 0.2, 5, 0.3, 1.2, -3, 1, 0.9, 0, 1, 1, 0.5, 0.6, 0.7,
                100, 101, 102, 7, 103, 104, 105, 8, 106, 107, 108, 9]
    torch.testing.assert_close(m[0, 0], torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(ValueError, match="bda"):
        get_mlp_input(rot, tran, intrin, post_rot, post_tran, torch.eye(3)[None])


def _tiny_inputs(b=2):
    torch.manual_seed(0)
    x = torch.randn(b, 40, 8, 12)
    cam = torch.randn(b, 33)
    stereo = 2.0 + 8.0 * torch.rand(b, 1, 64, 96)
    stereo[:, :, :10] = 0.0
    return x, cam, stereo


def test_tiny_forward_backward_all_parameters():
    net = GeometryDepthNet(**TINY).train()
    with torch.no_grad():  # open the zero-initialised residual branches so every weight is exercised
        for p in (net.depth_aggregation.mono_stereo_attention.gamma, net.depth_aggregation.stereo_mono_attention.gamma,
                  net.depth_aggregation.channel_attention.layer_scale):
            p.fill_(0.5)
    x, cam, stereo = _tiny_inputs()
    context, prob = net(x, cam, stereo)
    assert context.shape == (2, 16, 8, 12) and prob.shape == (2, 16, 8, 12)
    torch.testing.assert_close(prob.sum(1), torch.ones(2, 8, 12))
    (context.square().mean() + (prob * torch.linspace(0, 1, 16).view(1, 16, 1, 1)).square().sum()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_single_sample_training_and_eval():
    net = GeometryDepthNet(**TINY).train()
    x, cam, stereo = _tiny_inputs(b=1)
    context, prob = net(x, cam, stereo)  # B = 1 in training: camera BN falls back to running stats
    assert torch.isfinite(context).all() and torch.isfinite(prob).all()
    net.eval()
    with torch.no_grad():
        context2, prob2 = net(x, cam[:, None], stereo)
    assert prob2.shape == (1, 16, 8, 12)


def test_input_validation():
    net = GeometryDepthNet(**TINY).eval()
    x, cam, stereo = _tiny_inputs()
    with pytest.raises(ValueError, match="stereo_depth"):
        net(x, cam, stereo[:, :, :32])
    with pytest.raises(ValueError, match="mlp_input"):
        net(x, cam[:, :30], stereo)
    with pytest.raises(ValueError, match="dbound"):
        GeometryDepthNet(dbound=(2.0, 1.0, 0.5))
