"""LSS view transformer (``ViewTransformerLSS``, docs/model.md §3.6): lift ``P ⊗ context`` and sum-pool into voxels.

Plain PyTorch replacement of BEVFusion's ``bev_pool``: the lifted features are built one chunk of depth bins
at a time and scattered with ``index_add``, so the (C, D*H*W) lifted tensor is never materialised whole.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from .geometry import PC_RANGE, cam_params, image_to_lidar

__all__ = ["ViewTransformerLSS"]


class ViewTransformerLSS(nn.Module):
    """Lift-splat of a depth distribution and a context map into a dense voxel volume.

    State (as the original, all ``nn.Parameter(requires_grad=False)``): ``dx`` voxel size, ``bx`` centre of the
    first voxel, ``nx`` voxel counts (float), ``frustum`` (D, fH, fW, 3) = (u, v, depth) with
    u = linspace(0, W-1, fW), v = linspace(0, H-1, fH) (full-image linspace, not stride centres).

    Args:
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) [m].
        grid_size: voxels along x, y, z of the output volume (128, 128, 16 in the paper).
        dbound: (start, stop, step) of the depth bins [m]; D = len(arange(*dbound)).
        input_size: network image (H, W).
        downsample: image feature stride.
        trunc: reproduce the original ``.long()`` truncation toward zero (True) or use floor (False).
        chunk_bins: depth bins lifted per chunk (memory knob; no effect on the result beyond summation order).
    """

    def __init__(self, *, pc_range: Sequence[float] = PC_RANGE, grid_size: Sequence[int] = (128, 128, 16),
                 dbound: Sequence[float] = (2.0, 58.0, 0.5), input_size: Sequence[int] = (384, 1280),
                 downsample: int = 8, trunc: bool = True, chunk_bins: int = 16) -> None:
        super().__init__()
        if len(pc_range) != 6 or len(grid_size) != 3 or len(dbound) != 3 or len(input_size) != 2:
            raise ValueError("pc_range (6), grid_size (3), dbound (3), input_size (2) have wrong lengths")
        lo, hi = pc_range[:3], pc_range[3:]
        step = [(h - l) / n for l, h, n in zip(lo, hi, grid_size)]
        bounds = [(l, h, s) for l, h, s in zip(lo, hi, step)]
        self.dx = nn.Parameter(torch.Tensor([b[2] for b in bounds]), requires_grad=False)
        self.bx = nn.Parameter(torch.Tensor([b[0] + b[2] / 2.0 for b in bounds]), requires_grad=False)
        self.nx = nn.Parameter(torch.Tensor([(b[1] - b[0]) / b[2] for b in bounds]), requires_grad=False)
        self.grid_size = tuple(int(n) for n in grid_size)
        self.trunc = trunc
        self.chunk_bins = int(chunk_bins)
        self.input_size = tuple(int(s) for s in input_size)
        self.downsample = int(downsample)
        self.frustum = self._create_frustum(dbound)
        self.D = self.frustum.shape[0]

    def _create_frustum(self, dbound: Sequence[float]) -> nn.Parameter:
        H, W = self.input_size
        fH, fW = H // self.downsample, W // self.downsample
        ds = torch.arange(*dbound, dtype=torch.float).view(-1, 1, 1).expand(-1, fH, fW)
        D = ds.shape[0]
        xs = torch.linspace(0, W - 1, fW, dtype=torch.float).view(1, 1, fW).expand(D, fH, fW)
        ys = torch.linspace(0, H - 1, fH, dtype=torch.float).view(1, fH, 1).expand(D, fH, fW)
        return nn.Parameter(torch.stack((xs, ys, ds), -1), requires_grad=False)

    def geometry(self, rot: Tensor, tran: Tensor, intrin: Tensor, post_rot: Tensor, post_tran: Tensor,
                 bda: Tensor) -> Tensor:
        """LiDAR coordinates (D, fH, fW, 3) of every frustum point."""
        cam = cam_params(rot, tran, intrin, post_rot, post_tran, bda)
        return image_to_lidar(self.frustum, cam)

    def voxel_ids(self, geom: Tensor) -> Tuple[Tensor, Tensor]:
        """Flat voxel index (x * Y * Z + y * Z + z) of each frustum point and the mask of points inside.

        Args:
            geom: (D, fH, fW, 3) LiDAR coordinates.

        Returns:
            ids: (D*fH*fW,) int64 (arbitrary where not kept); kept: (D*fH*fW,) bool.
        """
        q = (geom.reshape(-1, 3) - (self.bx - self.dx / 2.0)) / self.dx
        idx = q.long() if self.trunc else torch.floor(q).long()
        nx = self.nx
        kept = ((idx[:, 0] >= 0) & (idx[:, 0] < nx[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < nx[1])
                & (idx[:, 2] >= 0) & (idx[:, 2] < nx[2]))
        X, Y, Z = self.grid_size
        ids = (idx[:, 0] * Y + idx[:, 1]) * Z + idx[:, 2]
        return ids, kept

    def forward(self, context: Tensor, depth_prob: Tensor, rot: Tensor, tran: Tensor, intrin: Tensor,
                post_rot: Tensor, post_tran: Tensor, bda: Tensor) -> Tensor:
        """Lift and splat.

        Args:
            context: (1, 1, C, fH, fW) or (1, C, fH, fW) context features.
            depth_prob: (1, D, fH, fW) depth probabilities (or (1, 1, D, fH, fW)).
            rot, tran, intrin, post_rot, post_tran, bda: camera tensors (see ``geometry.cam_params``).

        Returns:
            (1, C, X, Y, Z) sum of ``depth_prob[k, h, w] * context[:, h, w]`` over the frustum points in
            each voxel.
        """
        ctx = context.reshape(-1, *context.shape[-3:])
        prob = depth_prob.reshape(-1, *depth_prob.shape[-3:])
        if ctx.shape[0] != 1 or prob.shape[0] != 1:
            raise ValueError(f"context/depth_prob: batch size 1 only, got {tuple(context.shape)}, "
                             f"{tuple(depth_prob.shape)}")
        C, fH, fW = ctx.shape[1:]
        if tuple(prob.shape[1:]) != tuple(self.frustum.shape[:3]) or (fH, fW) != tuple(self.frustum.shape[1:3]):
            raise ValueError(f"depth_prob {tuple(prob.shape)} / context {tuple(ctx.shape)} do not match the "
                             f"frustum {tuple(self.frustum.shape[:3])}")
        ids, kept = self.voxel_ids(self.geometry(rot, tran, intrin, post_rot, post_tran, bda))
        X, Y, Z = self.grid_size
        ctx_flat = ctx[0].reshape(C, fH * fW).t()  # (HW, C)
        prob_flat = prob[0].reshape(self.D, fH * fW)  # (D, HW)
        out = ctx_flat.new_zeros(X * Y * Z, C)
        hw = fH * fW
        for k0 in range(0, self.D, self.chunk_bins):
            k1 = min(self.D, k0 + self.chunk_bins)
            sel = kept[k0 * hw:k1 * hw].nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            pix = sel % hw
            w = prob_flat[k0:k1].reshape(-1)[sel]  # (M,)
            src = ctx_flat[pix] * w.unsqueeze(1)  # (M, C)
            out.index_add_(0, ids[k0 * hw:k1 * hw][sel], src)
        return out.t().reshape(1, C, X, Y, Z)
