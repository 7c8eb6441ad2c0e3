"""Plain-torch DCN v1 and neighbourhood attention against direct definitions."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from l2cocc_ros.core.model.ops import (DeformConv2dPack, NeighborhoodCrossAttention2D, deform_conv2d,
                                       neighborhood_attention_2d)


def _slow_deform_conv(x, offset, weight, pad, groups):
    """Scalar-loop port of mmcv's DCN v1 (stride 1, dilation 1, 1 offset group), float64."""
    b, c, h, w = x.shape
    c_out, c_g, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    out = torch.zeros(b, c_out, ho, wo, dtype=torch.float64)

    def sample(img, y, xx):
        if not (y > -1 and xx > -1 and y < h and xx < w):
            return 0.0
        y0, x0 = math.floor(y), math.floor(xx)
        ly, lx = y - y0, xx - x0
        val = 0.0
        for yy, xc, wt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                           (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
            if 0 <= yy <= h - 1 and 0 <= xc <= w - 1:
                val += wt * float(img[yy, xc])
        return val

    cin_g, cout_g = c // groups, c_out // groups
    for bi in range(b):
        for oy in range(ho):
            for ox in range(wo):
                for i in range(kh):
                    for j in range(kw):
                        kk = i * kw + j
                        y = oy - pad + i + float(offset[bi, 2 * kk, oy, ox])
                        xx = ox - pad + j + float(offset[bi, 2 * kk + 1, oy, ox])
                        vals = [sample(x[bi, ci], y, xx) for ci in range(c)]
                        for co in range(c_out):
                            g = co // cout_g
                            for cl in range(cin_g):
                                out[bi, co, oy, ox] += float(weight[co, cl, i, j]) * vals[g * cin_g + cl]
    return out


def test_deform_conv_zero_offset_equals_grouped_conv():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 9)
    w = torch.randn(12, 2, 3, 3)
    off = torch.zeros(2, 18, 7, 9)
    ours = deform_conv2d(x, off, w, 1, 1, 1, groups=4)
    torch.testing.assert_close(ours, F.conv2d(x, w, padding=1, groups=4), rtol=1e-5, atol=1e-5)


def test_deform_conv_integer_offset_is_shifted_conv():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 10, 12)
    w = torch.randn(4, 1, 3, 3)
    off = torch.zeros(1, 18, 10, 12)
    off[:, 0::2] = 1.0   # dy = +1
    off[:, 1::2] = -2.0  # dx = -2
    ours = deform_conv2d(x, off, w, 1, 1, 1, groups=4)
    # Output (r, c) reads x[r + i - 1 + 1, c + j - 1 - 2] (zero outside): a valid conv over a
    # zero-padded copy (margin 4), read at a shifted origin.
    full = F.conv2d(F.pad(x, (4, 4, 4, 4)), w, groups=4)
    torch.testing.assert_close(ours, full[:, :, 4:14, 1:13], rtol=1e-5, atol=1e-5)


def test_deform_conv_fractional_offsets_match_scalar_loop():
    torch.manual_seed(2)
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    off = 2.5 * torch.randn(1, 18, 5, 6, dtype=torch.float64)  # pushes many samples across the border
    ours = deform_conv2d(x, off, w, 1, 1, 1, groups=2)
    torch.testing.assert_close(ours, _slow_deform_conv(x, off, w, 1, 2), rtol=1e-10, atol=1e-10)


def test_deform_conv_pack_keys_and_grad():
    layer = DeformConv2dPack(8, 8, 3, padding=1, groups=4)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
        "weight": (8, 2, 3, 3), "conv_offset.weight": (18, 8, 3, 3), "conv_offset.bias": (18,)}
    assert torch.count_nonzero(layer.conv_offset.weight) == 0
    with torch.no_grad():
        layer.conv_offset.weight.normal_(0, 0.1)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    layer(x).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert layer.conv_offset.weight.grad.abs().sum() > 0


def test_deform_conv_bad_offset_shape():
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d(torch.zeros(1, 4, 5, 5), torch.zeros(1, 9, 5, 5), torch.zeros(4, 1, 3, 3), 1, 1, 1, 4)


def _slow_na(q, k, v, rpb, ks):
    b, n, h, w, d = q.shape
    r = ks // 2
    out = torch.zeros_like(q)
    for i in range(h):
        si = min(max(i - r, 0), h - ks)
        for j in range(w):
            sj = min(max(j - r, 0), w - ks)
            logits, vals = [], []
            for a in range(si, si + ks):
                for c in range(sj, sj + ks):
                    logits.append((q[:, :, i, j] * k[:, :, a, c]).sum(-1) + rpb[:, a - i + ks - 1, c - j + ks - 1])
                    vals.append(v[:, :, a, c])
            attn = torch.stack(logits, -1).softmax(-1)
            out[:, :, i, j] = (attn[..., None] * torch.stack(vals, -2)).sum(-2)
    return out


@pytest.mark.parametrize("shape", [(6, 7), (5, 5), (9, 6)])
def test_neighborhood_attention_matches_loop(shape):
    torch.manual_seed(3)
    h, w = shape
    q, k, v = (torch.randn(2, 2, h, w, 3, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(2, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(neighborhood_attention_2d(q, k, v, rpb, 5), _slow_na(q, k, v, rpb, 5))


def test_neighborhood_attention_too_small():
    q = torch.zeros(1, 1, 4, 8, 2)
    with pytest.raises(ValueError, match="smaller than kernel"):
        neighborhood_attention_2d(q, q, q, None, 5)


def test_cross_attention_module_definition():
    torch.manual_seed(4)
    na = NeighborhoodCrossAttention2D(6, num_heads=1, kernel_size=5).double()
    q_in, kv_in = torch.randn(1, 6, 7, 6, dtype=torch.float64), torch.randn(1, 6, 7, 6, dtype=torch.float64)
    kv = na.kv(kv_in)
    ref = _slow_na((na.q(q_in) * 6 ** -0.5)[:, None], kv[..., :6][:, None], kv[..., 6:][:, None], na.rpb, 5)
    torch.testing.assert_close(na(q_in, kv_in), na.proj(ref[:, 0]))
    assert tuple(na.rpb.shape) == (1, 9, 9)


def test_gradcheck_deform_conv_and_na():
    torch.manual_seed(5)
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    # fractional offsets away from integer sample points (floor is piecewise constant)
    off = (torch.rand(1, 18, 4, 5, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: deform_conv2d(a, b, c, 1, 1, 1, groups=2), (x, off, w), fast_mode=True)
    q, k, v = (torch.randn(1, 1, 5, 6, 2, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rpb = torch.randn(1, 9, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c, d: neighborhood_attention_2d(a, b, c, d, 5), (q, k, v, rpb), fast_mode=True)
