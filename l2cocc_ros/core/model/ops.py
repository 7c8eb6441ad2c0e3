"""Plain-PyTorch stand-ins for the two custom CUDA ops of the image branch.

* Deformable convolution v1 (mmcv 1.4.0 ``DeformConv2dPack``, "DCN"): bilinear sampling with
  zeros outside the image (corner-wise validity, as mmcv's ``deformable_im2col_bilinear``),
  offsets laid out as (dy, dx) per kernel point, row-major over the kernel, per offset group.
* 2-D neighbourhood cross-attention (NATTEN 0.14 ``natten2dqkrpb`` / ``natten2dav``): every query
  attends to a K x K key window whose start is clamped inward at the borders (never padded),
  plus a relative-position bias indexed by ``(key - query) + K - 1``.

Both are written from the semantics in the docs/model.md (§3.4, §11) and the authors' repository
(StudyingFuFu/L2COcc, ``core/models/img_view_transformer``); autograd supplies the backward pass.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "deform_conv2d",
    "DeformConv2dPack",
    "neighborhood_attention_2d",
    "NeighborhoodCrossAttention2D",
]


def _pair(v) -> Tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _bilinear_zeros(img: Tensor, h: Tensor, w: Tensor) -> Tensor:
    """Bilinear samples with zeros outside, per corner (mmcv DCN semantics).

    Args:
        img: (B, G, Cg, H, W) input split into G offset groups.
        h, w: (B, G, *S) sampling rows / columns in pixels.

    Returns:
        (B, G, Cg, *S) sampled values.
    """
    b, g, cg, height, width = img.shape
    spatial = h.shape[2:]
    flat = img.reshape(b, g, cg, height * width)
    h0 = torch.floor(h)
    w0 = torch.floor(w)
    lh, lw = h - h0, w - w0
    out = None
    for dh, dw, weight in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw),
                           (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
        hi, wi = h0 + dh, w0 + dw
        valid = (hi >= 0) & (hi <= height - 1) & (wi >= 0) & (wi <= width - 1)
        idx = (hi.clamp(0, height - 1) * width + wi.clamp(0, width - 1)).long()
        idx = idx.reshape(b, g, 1, -1).expand(b, g, cg, idx[0, 0].numel())
        vals = torch.gather(flat, 3, idx)
        term = vals * (weight * valid.to(weight.dtype)).reshape(b, g, 1, -1)
        out = term if out is None else out + term
    return out.reshape(b, g, cg, *spatial)


def deform_conv2d(x: Tensor, offset: Tensor, weight: Tensor, stride=1, padding=0, dilation=1,
                  groups: int = 1, deform_groups: int = 1) -> Tensor:
    """Deformable convolution v1 (no bias), mmcv layout.

    Args:
        x: (B, C_in, H, W) input.
        offset: (B, 2 * deform_groups * kh * kw, H_out, W_out); channel ``2k`` is the row (dy) and
            ``2k + 1`` the column (dx) offset of kernel point ``k = i * kw + j`` of each offset group.
        weight: (C_out, C_in / groups, kh, kw).
        stride, padding, dilation: int or pair.
        groups: convolution groups.
        deform_groups: offset groups (channel blocks sharing one offset field).

    Returns:
        (B, C_out, H_out, W_out).

    Raises:
        ValueError: on inconsistent shapes.
    """
    b, c, height, width = x.shape
    c_out, c_g, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    h_out = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    w_out = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    k = kh * kw
    if c % groups or c_out % groups or c_g * groups != c or c % deform_groups:
        raise ValueError(f"deform_conv2d: channels in={c}, out={c_out}, weight in/group={c_g} do not fit "
                         f"groups={groups}, deform_groups={deform_groups}")
    expected = (b, 2 * deform_groups * k, h_out, w_out)
    if tuple(offset.shape) != expected:
        raise ValueError(f"deform_conv2d: offset shape {tuple(offset.shape)}, expected {expected}")
    dev, dt = x.device, x.dtype
    off = offset.reshape(b, deform_groups, k, 2, h_out, w_out)
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dh  # (K,)
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dw
    base_h = ki.view(k, 1, 1) + (torch.arange(h_out, device=dev, dtype=dt) * sh - ph).view(1, h_out, 1)
    base_w = kj.view(k, 1, 1) + (torch.arange(w_out, device=dev, dtype=dt) * sw - pw).view(1, 1, w_out)
    h = base_h + off[:, :, :, 0]  # (B, dg, K, Ho, Wo)
    w = base_w + off[:, :, :, 1]
    cols = _bilinear_zeros(x.reshape(b, deform_groups, c // deform_groups, height, width), h, w)
    cols = cols.reshape(b, groups, c_g * k, h_out * w_out)  # channel-major, then kernel point
    wmat = weight.reshape(groups, c_out // groups, c_g * k)
    out = torch.einsum("gok,bgkn->bgon", wmat, cols)
    return out.reshape(b, c_out, h_out, w_out)


class DeformConv2dPack(nn.Module):
    """DCN v1 layer with its own offset convolution (mmcv ``DeformConv2dPack`` naming).

    State-dict keys: ``weight`` (C_out, C_in / groups, k, k) and ``conv_offset.{weight, bias}``.
    The offset convolution starts at zero (so the layer starts as a plain grouped convolution).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: stride.
        padding: zero padding.
        dilation: dilation.
        groups: convolution groups (4 in L2COcc).
        deform_groups: offset groups (1 in L2COcc).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, groups: int = 1, deform_groups: int = 1) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"DeformConv2dPack: in_channels={in_channels} and out_channels={out_channels} "
                             f"must be divisible by groups={groups}")
        if in_channels % deform_groups:
            raise ValueError(f"DeformConv2dPack: in_channels={in_channels} not divisible by "
                             f"deform_groups={deform_groups}")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * 2 * kernel_size * kernel_size, kernel_size,
                                     stride=stride, padding=padding, dilation=dilation, bias=True)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H_out, W_out)."""
        offset = self.conv_offset(x)
        return deform_conv2d(x, offset, self.weight, self.stride, self.padding, self.dilation,
                             self.groups, self.deform_groups)


def _window_index(length: int, kernel_size: int, device) -> Tuple[Tensor, Tensor]:
    """Clamped window members and their bias rows along one axis.

    Returns:
        idx (L, K) key positions of each query's window and rel (L, K) = key - query + K - 1.
    """
    pos = torch.arange(length, device=device)
    start = (pos - kernel_size // 2).clamp(0, length - kernel_size)
    idx = start[:, None] + torch.arange(kernel_size, device=device)[None, :]
    return idx, idx - pos[:, None] + kernel_size - 1


def neighborhood_attention_2d(q: Tensor, k: Tensor, v: Tensor, rpb: Tensor | None, kernel_size: int) -> Tensor:
    """Neighbourhood attention with NATTEN 0.14 border handling (dilation 1).

    Args:
        q, k, v: (B, heads, H, W, d); ``q`` already scaled.
        rpb: (heads, 2K-1, 2K-1) relative-position bias or None.
        kernel_size: odd window size K (H, W >= K).

    Returns:
        (B, heads, H, W, d) attention output.

    Raises:
        ValueError: if the map is smaller than the window or K is not odd.
    """
    _, heads, height, width, _ = q.shape
    if kernel_size % 2 != 1 or kernel_size < 3:
        raise ValueError(f"neighborhood_attention_2d: kernel_size must be odd and >= 3, got {kernel_size}")
    if height < kernel_size or width < kernel_size:
        raise ValueError(f"neighborhood_attention_2d: feature map {height}x{width} smaller than kernel {kernel_size}")
    rows, rel_r = _window_index(height, kernel_size, q.device)
    cols, rel_c = _window_index(width, kernel_size, q.device)
    # (B, heads, H, K, W, K, d) -> (B, heads, H, W, K, K, d)
    kn = k[:, :, rows][:, :, :, :, cols].permute(0, 1, 2, 4, 3, 5, 6)
    logits = torch.einsum("bnhwd,bnhwijd->bnhwij", q, kn)
    if rpb is not None:
        logits = logits + rpb[:, rel_r[:, None, :, None], rel_c[None, :, None, :]].unsqueeze(0)
    attn = logits.flatten(-2).softmax(dim=-1).view_as(logits)
    vn = v[:, :, rows][:, :, :, :, cols].permute(0, 1, 2, 4, 3, 5, 6)
    return torch.einsum("bnhwij,bnhwijd->bnhwd", attn, vn)


class NeighborhoodCrossAttention2D(nn.Module):
    """Neighbourhood cross-attention: queries from one map, keys/values from another.

    Channels-last in and out, as L2COcc's ``NeighborhoodCrossAttention2D``: q = Linear(q_in),
    (k, v) = Linear(kv_in), softmax(q k / sqrt(d) + rpb) over the K x K clamped window, then ``proj``.

    Args:
        dim: channels C.
        num_heads: heads (d = C / heads).
        kernel_size: window size K (odd).
        bias: learn a relative-position bias ``rpb`` (heads, 2K-1, 2K-1), trunc-normal(0.02) init.
        qkv_bias: bias on ``q`` and ``kv``.
    """

    def __init__(self, dim: int, num_heads: int = 1, kernel_size: int = 5, bias: bool = True,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"NeighborhoodCrossAttention2D: dim={dim} not divisible by num_heads={num_heads}")
        if kernel_size % 2 != 1 or kernel_size < 3:
            raise ValueError(f"NeighborhoodCrossAttention2D: kernel_size must be odd and >= 3, got {kernel_size}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: Tensor, kv: Tensor) -> Tensor:
        """(B, H, W, C) queries and (B, H, W, C) keys/values -> (B, H, W, C)."""
        if q.shape != kv.shape:
            raise ValueError(f"NeighborhoodCrossAttention2D: q {tuple(q.shape)} and kv {tuple(kv.shape)} differ")
        b, height, width, c = q.shape
        qh = self.q(q).reshape(b, height, width, self.num_heads, self.head_dim).permute(0, 3, 1, 2, 4)
        kvh = self.kv(kv).reshape(b, height, width, 2, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        out = neighborhood_attention_2d(qh * self.scale, kvh[0], kvh[1], self.rpb, self.kernel_size)
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(b, height, width, c))

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"rel_pos_bias={self.rpb is not None}")
