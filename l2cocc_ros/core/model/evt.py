"""EVT = ``VoxFormerHead_Tiny`` with DFA3D deformable cross-attention in plain PyTorch (docs/model.md §3.8).

The DFA3D kernel (bilinear sampling of value features in (u, v), each corner weighted by the linearly
interpolated depth probability) is written as explicit gathers of the 4 spatial corners x 2 depth bins, which
equals trilinear ``grid_sample`` (zeros padding, align_corners=False) of the outer-product volume V ⊗ P without
building that (heads, C/heads, D, H, W) volume.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from .geometry import PC_RANGE, cam_params, lidar_to_image
from .precision import full_precision
from .voxel_proposal import make_image_grid

__all__ = ["dfa3d_sample", "MSDeformableAttention3D_DFA3D", "DeformCrossAttention_DFA3D", "EVTFFN",
           "VoxFormerLayer", "VoxFormerEncoder", "PerceptionTransformer_DFA3D", "VoxFormerHead_Tiny"]


@full_precision
def dfa3d_sample(value: Tensor, depth: Tensor, loc: Tensor, attn: Tensor, hw: Tuple[int, int],
                 chunk: int = 16384) -> Tensor:
    """Depth-weighted deformable sampling (DFA3D, one level, one camera).

    Args:
        value: (HW, M, Cm) per-head value tokens (row-major over (h, w)).
        depth: (HW, D) depth probability per token.
        loc: (Q, M, K, 3) normalised sampling locations (u/W, v/H, d-bin coordinate / D) in [0, 1].
        attn: (Q, M, K) attention weights (softmaxed over K).
        hw: (H, W) of the feature map.
        chunk: queries per block (bounds the (chunk, M, K, Cm) gather buffers).

    Returns:
        (Q, M * Cm): sum_k attn * sum_corners bilinear(u, v) * lerp_depth(P) * value, zero outside the map
        (float32 under autocast: the precision policy).
    """
    if loc.shape[0] > chunk:
        return torch.cat([dfa3d_sample(value, depth, loc[i:i + chunk], attn[i:i + chunk], hw, chunk)
                          for i in range(0, loc.shape[0], chunk)], 0)
    H, W = hw
    HW, M, Cm = value.shape
    D = depth.shape[1]
    Q, _, K, _ = loc.shape
    x = loc[..., 0] * W - 0.5
    y = loc[..., 1] * H - 0.5
    z = loc[..., 2] * D - 0.5
    x0, y0, z0 = torch.floor(x), torch.floor(y), torch.floor(z)
    fx, fy, fz = x - x0, y - y0, z - z0
    x0, y0, z0 = x0.long(), y0.long(), z0.long()
    head = torch.arange(M, device=value.device).view(1, M, 1)
    v_flat = value.reshape(HW * M, Cm)
    d_flat = depth.reshape(HW * D)
    out = value.new_zeros(Q, M, Cm)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        yi = y0 + dy
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi = x0 + dx
            inside = (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W)
            tok = torch.where(inside, yi * W + xi, torch.zeros_like(xi))
            sigma = 0
            for dz, wz in ((0, 1 - fz), (1, fz)):
                zi = z0 + dz
                zin = inside & (zi >= 0) & (zi < D)
                di = torch.where(zin, tok * D + zi, torch.zeros_like(zi))
                sigma = sigma + wz * d_flat[di] * zin
            w = attn * wy * wx * sigma * inside  # (Q, M, K)
            vals = v_flat[tok * M + head]  # (Q, M, K, Cm)
            out = out + torch.einsum("qmk,qmkc->qmc", w, vals)
    return out.reshape(Q, M * Cm)


@full_precision
def _sampling_locations(ref: Tensor, off_uv: Tensor, off_d: Tensor, norm: Tuple[int, int, int]) -> Tensor:
    """(Q, M, K, 3) normalised locations: reference (Q, 3) + offsets (uv in feature pixels, depth in bins) / norm."""
    q = ref.shape[0]
    off = torch.cat([off_uv[..., 0:1] / norm[0], off_uv[..., 1:2] / norm[1], off_d / norm[2]], -1)
    return ref.view(q, 1, 1, 3) + off


class MSDeformableAttention3D_DFA3D(nn.Module):
    """Per-head offsets (uv in feature pixels, depth in bins) and weights, value projection, DFA3D sampling.

    Args:
        embed_dims: channels (128).
        num_heads: heads (8).
        num_levels: feature levels (1).
        num_points: sampling points per head (8).
    """

    def __init__(self, *, embed_dims: int = 128, num_heads: int = 8, num_levels: int = 1, num_points: int = 8) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} not divisible by num_heads {num_heads}")
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.sampling_offsets_depth = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation of the original (docs/model.md §3.8)."""
        M, L, K = self.num_heads, self.num_levels, self.num_points
        th = torch.arange(M, dtype=torch.float32) * (2.0 * math.pi / M)
        g = torch.stack([th.cos(), th.sin()], -1)
        g = (g / g.abs().max(-1, keepdim=True)[0]).view(M, 1, 1, 2).repeat(1, L, K, 1)
        gd = ((th.cos() + th.sin()) / 2).view(M, 1, 1, 1).repeat(1, L, K, 1)
        for i in range(K):
            g[:, :, i] *= i + 1
            gd[:, :, i] *= i + 1
        with torch.no_grad():
            nn.init.zeros_(self.sampling_offsets.weight)
            self.sampling_offsets.bias.copy_(g.view(-1))
            nn.init.zeros_(self.sampling_offsets_depth.weight)
            self.sampling_offsets_depth.bias.copy_(gd.view(-1))
            nn.init.zeros_(self.attention_weights.weight)
            nn.init.zeros_(self.attention_weights.bias)
            nn.init.xavier_uniform_(self.value_proj.weight)
            nn.init.zeros_(self.value_proj.bias)

    def forward(self, query: Tensor, value: Tensor, depth: Tensor, ref: Tensor, hw: Tuple[int, int]) -> Tensor:
        """Sample.

        Args:
            query: (Q, C) queries with valid projections.
            value: (HW, C) value tokens (before value_proj).
            depth: (HW, D) depth probability of each token.
            ref: (Q, 3) normalised reference (u/W_img, v/H_img, (d - d_min) / (d_max - d_min)).
            hw: (H, W) feature map size.

        Returns:
            (Q, C) concatenated head outputs (no output projection).
        """
        Q = query.shape[0]
        M, L, K = self.num_heads, self.num_levels, self.num_points
        if L != 1:
            raise ValueError("only one feature level is supported")
        H, W = hw
        D = depth.shape[1]
        v = self.value_proj(value).view(value.shape[0], M, -1)
        off_uv = self.sampling_offsets(query).view(Q, M, K, 2)
        off_d = self.sampling_offsets_depth(query).view(Q, M, K, 1)
        attn = self.attention_weights(query).view(Q, M, L * K).softmax(-1)
        loc = _sampling_locations(ref, off_uv, off_d, (W, H, D))
        return dfa3d_sample(v, depth, loc, attn, hw)


class DeformCrossAttention_DFA3D(nn.Module):
    """``q + Dropout(output_proj(DFA3D(q)))``; queries without a valid projection get a zero attention term."""

    def __init__(self, *, embed_dims: int = 128, num_heads: int = 8, num_points: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.deformable_attention = MSDeformableAttention3D_DFA3D(embed_dims=embed_dims, num_heads=num_heads,
                                                                  num_levels=1, num_points=num_points)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, value: Tensor, depth: Tensor, ref: Tensor, valid_idx: Tensor,
                hw: Tuple[int, int]) -> Tensor:
        """Args: query (Q, C); value (HW, C); depth (HW, D); ref (Q, 3); valid_idx (V,) int64 indices of the
        queries with a valid projection; hw. Returns (Q, C)."""
        slots = torch.zeros_like(query)
        if valid_idx.numel():  # the scatter target keeps the queries' dtype (float32 under autocast)
            sampled = self.deformable_attention(query[valid_idx], value, depth, ref[valid_idx], hw)
            slots = slots.index_copy(0, valid_idx, sampled.to(slots.dtype))
        return self.dropout(self.output_proj(slots)) + query


class EVTFFN(nn.Module):
    """mmcv FFN: ``x + Dropout(Linear(Dropout(ReLU(Linear(x)))))`` (keys ``layers.0.0``, ``layers.1``)."""

    def __init__(self, *, embed_dims: int = 128, feedforward_channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class VoxFormerLayer(nn.Module):
    """Post-norm layer: cross_attn -> norm -> ffn -> norm."""

    def __init__(self, *, embed_dims: int = 128, num_heads: int = 8, num_points: int = 8,
                 feedforward_channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([DeformCrossAttention_DFA3D(
            embed_dims=embed_dims, num_heads=num_heads, num_points=num_points, dropout=dropout)])
        self.ffns = nn.ModuleList([EVTFFN(embed_dims=embed_dims, feedforward_channels=feedforward_channels,
                                          dropout=dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims), nn.LayerNorm(embed_dims)])

    def forward(self, query: Tensor, value: Tensor, depth: Tensor, ref: Tensor, valid_idx: Tensor,
                hw: Tuple[int, int]) -> Tensor:
        """Args as :class:`DeformCrossAttention_DFA3D`."""
        q = self.norms[0](self.attentions[0](query, value, depth, ref, valid_idx, hw))
        return self.norms[1](self.ffns[0](q))


class VoxFormerEncoder(nn.Module):
    """Stack of ``num_layers`` VoxFormerLayer sharing reference points, values and depth."""

    def __init__(self, *, num_layers: int = 3, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList([VoxFormerLayer(**layer_kwargs) for _ in range(num_layers)])

    def forward(self, query: Tensor, value: Tensor, depth: Tensor, ref: Tensor, valid: Tensor,
                hw: Tuple[int, int]) -> Tensor:
        """Args: query (Q, C); value (HW, C); depth (HW, D); ref (Q, 3); valid (Q,) bool; hw. Returns (Q, C)."""
        valid_idx = valid.nonzero().squeeze(1)  # once for all layers (one host sync on CUDA)
        for layer in self.layers:
            query = layer(query, value, depth, ref, valid_idx, hw)
        return query


class PerceptionTransformer_DFA3D(nn.Module):
    """Holds the level/camera embeddings (``level_embeds`` [4, C] as the original, ``cams_embeds`` [1, C]).

    Both are zero-initialised: in the original they are never initialised (docs/model.md §12.2).
    """

    def __init__(self, *, embed_dims: int = 128, num_feature_levels: int = 4, num_cams: int = 1,
                 num_layers: int = 3, num_heads: int = 8, num_points: int = 8, feedforward_channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.level_embeds = nn.Parameter(torch.zeros(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.zeros(num_cams, embed_dims))
        self.encoder = VoxFormerEncoder(num_layers=num_layers, embed_dims=embed_dims, num_heads=num_heads,
                                        num_points=num_points, feedforward_channels=feedforward_channels,
                                        dropout=dropout)

    def forward(self, query: Tensor, context: Tensor, depth_prob: Tensor, ref: Tensor, valid: Tensor) -> Tensor:
        """Args: query (Q, C); context (C, H, W); depth_prob (D, H, W); ref (Q, 3); valid (Q,). Returns (Q, C)."""
        C, H, W = context.shape
        value = context.reshape(C, H * W).t() + self.cams_embeds[0] + self.level_embeds[0]
        depth = depth_prob.reshape(depth_prob.shape[0], H * W).t()
        return self.encoder(query, value, depth, ref, valid, (H, W))


class VoxFormerHead_Tiny(nn.Module):
    """EVT: proposed voxels with valid projections attend into (context, depth); the rest take ``mlp_prior``.

    Buffers as the original: ``image_grid`` (1, 2, H, W), ``vox_coords`` (XYZ, 4) int64 (x, y, z, flat index),
    ``ref_3d`` (XYZ, 3) normalised voxel centres.

    Args:
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) [m].
        grid_size: (X, Y, Z) volume.
        input_size: network image (H, W) for normalising projected pixels.
        dbound: (min, max, step) of the depth bins [m] (depth normalised by (d - min) / (max - min)).
        embed_dims, num_layers, num_heads, num_points, feedforward_channels, dropout: transformer sizes.
    """

    def __init__(self, *, pc_range: Sequence[float] = PC_RANGE, grid_size: Sequence[int] = (128, 128, 16),
                 input_size: Sequence[int] = (384, 1280), dbound: Sequence[float] = (2.0, 58.0, 0.5),
                 embed_dims: int = 128, num_layers: int = 3, num_heads: int = 8, num_points: int = 8,
                 feedforward_channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.pc_range = tuple(float(v) for v in pc_range)
        self.grid_size = tuple(int(n) for n in grid_size)
        self.input_size = tuple(int(s) for s in input_size)
        self.dbound = tuple(float(v) for v in dbound)
        self.embed_dims = embed_dims
        self.cross_transformer = PerceptionTransformer_DFA3D(
            embed_dims=embed_dims, num_layers=num_layers, num_heads=num_heads, num_points=num_points,
            feedforward_channels=feedforward_channels, dropout=dropout)
        self.register_buffer("image_grid", make_image_grid(input_size))
        X, Y, Z = self.grid_size
        xv, yv, zv = torch.meshgrid(torch.arange(X), torch.arange(Y), torch.arange(Z), indexing="ij")
        idx = torch.arange(X * Y * Z)
        self.register_buffer("vox_coords", torch.stack([xv.reshape(-1), yv.reshape(-1), zv.reshape(-1), idx], -1))
        self.register_buffer("ref_3d", torch.stack([(xv.reshape(-1) + 0.5) / X, (yv.reshape(-1) + 0.5) / Y,
                                                    (zv.reshape(-1) + 0.5) / Z], -1))
        self.mlp_prior = nn.Sequential(nn.Linear(embed_dims, embed_dims // 2), nn.LayerNorm(embed_dims // 2),
                                       nn.LeakyReLU(), nn.Linear(embed_dims // 2, embed_dims))

    @full_precision
    def reference_points(self, ref_3d: Tensor, rot: Tensor, tran: Tensor, intrin: Tensor, post_rot: Tensor,
                         post_tran: Tensor, bda: Tensor) -> Tuple[Tensor, Tensor]:
        """Normalised image references (Q, 3) and validity (Q,) of normalised voxel centres ``ref_3d`` (Q, 3)."""
        cam = cam_params(rot, tran, intrin, post_rot, post_tran, bda)
        r = self.pc_range
        pts = torch.stack([ref_3d[:, a] * (r[a + 3] - r[a]) + r[a] for a in range(3)], -1)
        uv, d = lidar_to_image(pts, cam)
        eps = 1e-5
        H, W = self.input_size
        u, v = uv[:, 0] / W, uv[:, 1] / H
        dn = (d - self.dbound[0]) / (self.dbound[1] - self.dbound[0])
        valid = (d > eps) & (u > eps) & (u < 1.0 - eps) & (v > eps) & (v < 1.0 - eps)
        return torch.stack([u, v, dn], -1), valid

    def forward(self, context: Tensor, depth_prob: Tensor, proposal: Tensor, lss_volume: Tensor, rot: Tensor,
                tran: Tensor, intrin: Tensor, post_rot: Tensor, post_tran: Tensor, bda: Tensor) -> Tensor:
        """Refine the LSS volume.

        Args:
            context: (1, 1, C, fH, fW) or (1, C, fH, fW) image context (the attention values).
            depth_prob: (1, D, fH, fW) depth probability.
            proposal: (1, 1, X, Y, Z) binary voxel proposal (all voxels are proposed if it has < 2 voxels).
            lss_volume: (1, C, X, Y, Z) queries.
            rot, tran, intrin, post_rot, post_tran, bda: camera tensors.

        Returns:
            (1, C, X, Y, Z).
        """
        C = self.embed_dims
        X, Y, Z = self.grid_size
        if tuple(lss_volume.shape) != (1, C, X, Y, Z):
            raise ValueError(f"lss_volume: expected {(1, C, X, Y, Z)}, got {tuple(lss_volume.shape)}")
        if proposal.numel() != X * Y * Z:
            raise ValueError(f"proposal: expected {X * Y * Z} voxels, got shape {tuple(proposal.shape)}")
        ctx = context.reshape(-1, *context.shape[-3:])[0]
        prob = depth_prob.reshape(-1, *depth_prob.shape[-3:])[0]
        queries = lss_volume.reshape(C, -1).t()  # (XYZ, C)
        prop = proposal.reshape(-1) > 0
        prop = prop | (prop.sum() < 2)  # fewer than 2 proposed voxels: all are (decided on the device)
        unmasked = prop.nonzero().squeeze(1)  # two host syncs (dynamic NonZero in ONNX); the `if` is gone
        masked = prop.logical_not().nonzero().squeeze(1)
        ref, valid = self.reference_points(self.ref_3d[unmasked], rot, tran, intrin, post_rot, post_tran, bda)
        seed = self.cross_transformer(queries[unmasked], ctx, prob, ref, valid)
        out = queries.new_zeros(X * Y * Z, C)  # the scatter target keeps the LSS volume's dtype (float32)
        out = out.index_copy(0, unmasked, seed.to(out.dtype))
        out = out.index_copy(0, masked, self.prior(queries[masked]).to(out.dtype))
        return out.t().reshape(1, C, X, Y, Z)

    @full_precision
    def prior(self, queries: Tensor) -> Tensor:
        """``mlp_prior`` of the unproposed voxels, in float32: it alone sets the features of most of the grid,
        and in bf16 it flipped the label of 1.7 % of all voxels of the trained micro -C (0.2 % in float32, the
        rest of the model in bf16); a (Q, C) -> C/2 -> C MLP, cheap at any precision."""
        return self.mlp_prior(queries)
