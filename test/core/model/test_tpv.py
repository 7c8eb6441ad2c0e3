"""TPV branch: window attention locality with and without shift, padded odd planes, stage shapes at full plane
sizes, pooling / aggregation semantics, batch-statistics BN in the neck, gradients, manifest layout."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from l2cocc_ros.core.model.swin import PatchMerging, ShiftWindowMSA, SwinTPV, convert_official_swin
from l2cocc_ros.core.model.tpv import TPVAggregator, TPVGenerator, TPVWeightedAvgPooler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import refvec_util  # noqa: E402


def changed_tokens(attn, H, W, r, c):
    torch.manual_seed(0)
    x = torch.randn(1, H * W, 8)
    y = x.clone()
    y[0, r * W + c] += 1.0
    with torch.no_grad():
        d = (attn(x, (H, W)) - attn(y, (H, W))).abs().sum(-1).view(H, W)
    return {tuple(i) for i in (d > 1e-6).nonzero().tolist()}


def test_plain_window_attention_is_local_to_its_window():
    attn = ShiftWindowMSA(8, 2, 7, 0, 0.0).eval()
    got = changed_tokens(attn, 14, 14, 8, 9)
    assert got == {(i, j) for i in range(7, 14) for j in range(7, 14)}


def test_shifted_window_mask_separates_wrapped_regions():
    attn = ShiftWindowMSA(8, 2, 7, 3, 0.0).eval()
    # token (0, 0) is rolled to the last window, in the wrapped corner region (original rows/cols 0..2)
    assert changed_tokens(attn, 14, 14, 0, 0) == {(i, j) for i in range(3) for j in range(3)}
    # token (5, 5): shifted window covering original rows/cols 3..9
    assert changed_tokens(attn, 14, 14, 5, 5) == {(i, j) for i in range(3, 10) for j in range(3, 10)}


def test_padded_odd_planes_run_with_shift():
    attn = ShiftWindowMSA(8, 2, 7, 3, 0.0).eval()
    x = torch.randn(1, 9 * 5, 8)
    with torch.no_grad():
        y = attn(x, (9, 5))
    assert y.shape == (1, 45, 8) and torch.isfinite(y).all()
    merge = PatchMerging(8, 16)
    z, hw = merge(torch.randn(1, 9 * 5, 8), (9, 5))
    assert hw == (5, 3) and z.shape == (1, 15, 16)


def test_patch_merging_uses_unfold_channel_order():
    merge = PatchMerging(2, 1)
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
    x = torch.arange(8.0).view(1, 2, 2, 2).permute(0, 2, 3, 1).reshape(1, 4, 2)  # (B, HW, C)
    merge.norm = torch.nn.Identity()
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.eye(8)[1:2])  # pick channel index 1 = (c=0, kh=0, kw=1)
        out, _ = merge(x, (2, 2))
    assert out.item() == 1.0  # value at c=0, h=0, w=1


def test_stage_shapes_for_full_size_planes_with_tiny_dims():
    swin = SwinTPV(in_channels=4, embed_dims=4, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)).eval()
    planes = [torch.randn(1, 4, 128, 128), torch.randn(1, 4, 128, 16), torch.randn(1, 4, 128, 16)]
    with torch.no_grad():
        outs = swin(planes)
    assert [[tuple(o.shape) for o in p] for p in outs] == [
        [(1, 8, 64, 64), (1, 16, 32, 32), (1, 32, 16, 16)],
        [(1, 8, 64, 8), (1, 16, 32, 4), (1, 32, 16, 2)],
        [(1, 8, 64, 8), (1, 16, 32, 4), (1, 32, 16, 2)]]


def test_pooler_with_zero_weights_is_a_mean():
    pool = TPVWeightedAvgPooler(embed_dims=4)
    torch.nn.init.zeros_(pool.weights_conv[0].weight)
    for mlp in (pool.mlp_xy, pool.mlp_yz, pool.mlp_zx):
        mlp[0] = mlp[2] = torch.nn.Identity()
        mlp[1] = torch.nn.Identity()
    x = torch.randn(1, 4, 5, 6, 3)
    xy, yz, zx = pool(x)
    assert torch.allclose(xy, x.mean(-1), atol=1e-6) and torch.allclose(yz, x.mean(2), atol=1e-6)
    assert torch.allclose(zx, x.mean(3), atol=1e-6)


def test_aggregator_weights_and_logits():
    agg = TPVAggregator(embed_dims=4)
    X, Y, Z = 3, 4, 2
    tpv = [torch.randn(1, 4, X, Y, 1), torch.randn(1, 4, 1, Y, Z), torch.randn(1, 4, X, 1, Z)]
    x3d = torch.randn(1, 4, X, Y, Z)
    out, logits = agg(tpv, x3d)
    s = tpv[0] + tpv[1] + tpv[2] + x3d
    assert torch.allclose(logits, F.conv3d(s, agg.combine_coeff.weight), atol=1e-6)
    w = logits.softmax(1)
    ref = sum(f * w[:, i:i + 1] for i, f in enumerate([*tpv, x3d]))
    assert out.shape == (1, 4, X, Y, Z) and torch.allclose(out, ref, atol=1e-6)


def tiny_generator():
    return TPVGenerator(embed_dims=8, swin_embed_dims=8, swin_depths=(2, 2, 2, 2), swin_num_heads=(1, 2, 2, 4),
                        window_size=3)


def test_generator_outputs_features_and_uses_batch_statistics():
    torch.manual_seed(0)
    gen = tiny_generator().eval()
    agg = TPVAggregator(embed_dims=8)
    x = torch.randn(1, 8, 16, 16, 4)
    with torch.no_grad():
        tpv, feats = gen(x)
        fagg, logits = agg(tpv, x)
    assert [tuple(t.shape) for t in tpv] == [(1, 8, 16, 16, 1), (1, 8, 1, 16, 4), (1, 8, 16, 1, 4)]
    assert [[tuple(m.shape) for m in p] for p in feats["tpv_backbone"]] == [
        [(1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)], [(1, 16, 8, 2), (1, 32, 4, 1), (1, 64, 2, 1)],
        [(1, 16, 8, 2), (1, 32, 4, 1), (1, 64, 2, 1)]]
    assert [[tuple(m.shape) for m in p] for p in feats["tpv_neck"]] == [
        [(1, 8, 8, 8), (1, 8, 4, 4)], [(1, 8, 8, 2), (1, 8, 4, 1)], [(1, 8, 8, 2), (1, 8, 4, 1)]]
    assert torch.allclose(tpv[0][..., 0], F.interpolate(feats["tpv_neck"][0][0], size=(16, 16), mode="bilinear",
                                                        align_corners=False))
    assert fagg.shape == x.shape and logits.shape == (1, 4, 16, 16, 4)
    bn = gen.global_encoder_neck.lateral_convs[0].bn
    assert not bn.track_running_stats and bn.running_mean is None
    # batch statistics in eval: the neck output's per-channel BN output has (almost) zero mean pre-activation
    with torch.no_grad():
        lat = gen.global_encoder_neck.lateral_convs[1]
        b = feats["tpv_backbone"][0]
        cat = torch.cat([b[1], F.interpolate(b[2], size=b[1].shape[2:], mode="bilinear", align_corners=False)], 1)
        y = lat.bn(lat.conv(cat))
    assert torch.allclose(y.mean((0, 2, 3)), lat.bn.bias, atol=1e-5)


def test_generator_and_aggregator_backward_reach_every_parameter():
    torch.manual_seed(0)
    gen = tiny_generator().train()
    agg = TPVAggregator(embed_dims=8)
    x = torch.randn(1, 8, 16, 16, 4, requires_grad=True)
    tpv, feats = gen(x)
    fagg, logits = agg(tpv, x)
    loss = (fagg * torch.randn_like(fagg)).sum() + logits.square().mean()
    loss.backward()
    for mod in (gen, agg):
        for name, p in mod.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("cfg", ["semantickitti_l2cocc_c", "semantickitti_l2cocc_l"])
def test_state_dict_matches_manifest(cfg):
    details = refvec_util.manifest_details(cfg)
    for prefix, mod in (("tpv_generator", TPVGenerator()), ("tpv_aggregator", TPVAggregator())):
        ref = {k[len(prefix) + 1:]: v for k, v in details.items() if k.startswith(prefix + ".")}
        sd = mod.state_dict()
        assert list(sd) == list(ref), prefix
        for k, t in sd.items():
            assert list(t.shape) == ref[k]["shape"] and str(t.dtype) == "torch." + ref[k]["dtype"], k
        assert {k for k, _ in mod.named_buffers()} == {k for k, v in ref.items() if v["kind"] == "buffer"}


def test_official_swin_checkpoint_conversion_reproduces_the_concatenation_merge():
    torch.manual_seed(0)
    C, O = 4, 8
    official = {"layers.0.downsample.reduction.weight": torch.randn(O, 4 * C),
                "layers.0.downsample.norm.weight": torch.rand(4 * C) + 0.5,
                "layers.0.downsample.norm.bias": torch.randn(4 * C),
                "layers.0.blocks.1.attn.qkv.weight": torch.randn(3 * C, C),
                "layers.0.blocks.1.mlp.fc1.bias": torch.randn(4 * C),
                "layers.0.blocks.1.attn.relative_position_index": torch.zeros(49, 49, dtype=torch.long),
                "patch_embed.proj.weight": torch.randn(C, 3, 4, 4), "head.weight": torch.randn(10, 8 * C)}
    conv = convert_official_swin(official)
    assert set(conv) == {"stages.0.downsample.reduction.weight", "stages.0.downsample.norm.weight",
                         "stages.0.downsample.norm.bias", "stages.0.blocks.1.attn.w_msa.qkv.weight",
                         "stages.0.blocks.1.ffn.layers.0.0.bias"}
    merge = PatchMerging(C, O)
    merge.load_state_dict({k[len("stages.0.downsample."):]: v for k, v in conv.items() if "downsample" in k})
    x = torch.randn(1, 6, 6, C)
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1).view(1, 9, 4 * C)
    normed = F.layer_norm(cat, (4 * C,), official["layers.0.downsample.norm.weight"],
                          official["layers.0.downsample.norm.bias"])
    ref = F.linear(normed, official["layers.0.downsample.reduction.weight"])
    with torch.no_grad():
        got, hw = merge(x.view(1, 36, C), (6, 6))
    assert hw == (3, 3) and torch.allclose(got, ref, atol=1e-5)
