"""A stereo backend in plain torch that runs on the GPU: census transform + block matching.

Weights-free like SGBM, but every step is a tensor op on the backend's device (the engine's: the node's
``device`` parameter), so next to a GPU model the whole matching and the depth stay on the GPU
(``stereo.backend: torch_census``). Steps: 5x5 census of the grey images, Hamming cost
for each disparity, box aggregation over ``block_size``, winner-takes-all with a uniqueness test, parabolic
sub-pixel refinement. No semi-global smoothing, so it is noisier than SGBM on weak texture.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from l2cocc_ros.core.stereo.base import StereoBackend, check_pair

__all__ = ["TorchCensusStereo"]


#: bits of the 5x5 census code (the centre is not compared)
CENSUS_BITS = 24


def _census(grey: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(H, W) int32 census codes of a (H, W) image: bit k set where neighbour k is brighter than the centre."""
    pad = F.pad(grey[None, None], (radius,) * 4, mode="replicate")[0, 0]
    h, w = grey.shape
    code = torch.zeros((h, w), dtype=torch.int32, device=grey.device)
    offsets = [(dy, dx) for dy in range(2 * radius + 1) for dx in range(2 * radius + 1) if (dy, dx) != (radius,) * 2]
    for bit, (dy, dx) in enumerate(offsets):
        code |= (pad[dy:dy + h, dx:dx + w] > grey).to(torch.int32) << bit
    return code


def _popcount(x: torch.Tensor) -> torch.Tensor:
    """Set bits of each int32 holding at most 24 bits (SWAR: pairs, nibbles, bytes, then the byte sum)."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return (x + (x >> 8) + (x >> 16)) & 0xFF


class TorchCensusStereo(StereoBackend):
    """Census block matching in torch (CPU or CUDA).

    Args:
        num_disparities: search range [px] at full resolution (multiple of 16, as SGBM).
        block_size: odd aggregation window [px].
        downscale: shrink both images by this integer factor before matching.
        uniqueness_ratio: margin (%) by which the best cost must beat the second best (outside +-1 px).
        device: where it runs until :meth:`to` moves it (the engine moves it to the model's device).
    """

    name = "torch_census"

    def __init__(self, num_disparities: int = 128, block_size: int = 7, downscale: int = 1,
                 uniqueness_ratio: int = 5, device: Union[str, torch.device] = "cpu") -> None:
        if num_disparities <= 0 or num_disparities % 16:
            raise ValueError(f"num_disparities must be a positive multiple of 16, got {num_disparities}")
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and >= 1, got {block_size}")
        if downscale < 1:
            raise ValueError(f"downscale must be >= 1, got {downscale}")
        if not 0 <= uniqueness_ratio < 100:
            raise ValueError(f"uniqueness_ratio must be in [0, 100), got {uniqueness_ratio}")
        self.num_disparities, self.block_size, self.downscale = num_disparities, block_size, downscale
        self.uniqueness_ratio = uniqueness_ratio
        self.to(device)

    def _grey(self, img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.require(img, requirements=["C", "W"])).to(self.device).float()  # uint8 over the bus
        if t.dim() == 3:
            t = t[..., 0] if t.shape[2] == 1 else t @ torch.tensor([0.299, 0.587, 0.114], device=self.device)
        if self.downscale > 1:
            t = F.avg_pool2d(t[None, None], self.downscale)[0, 0]
        return t

    @torch.no_grad()
    def disparity(self, left: np.ndarray, right: np.ndarray) -> torch.Tensor:
        """Census disparity in full-resolution pixels (float32 tensor on :attr:`device`), -1 where invalid."""
        check_pair(left, right)
        h, w = left.shape[:2]
        cl, cr = _census(self._grey(left)), _census(self._grey(right))
        n_disp = max(2, self.num_disparities // self.downscale)
        hs, ws = cl.shape
        big = float(CENSUS_BITS)  # cost where the match would leave the image
        cost = torch.full((n_disp, hs, ws), big, device=self.device, dtype=torch.float32)
        for d in range(min(n_disp, ws)):  # Hamming distance of the codes
            cost[d, :, d:] = _popcount(cl[:, d:] ^ cr[:, : ws - d]).float()
        pad = self.block_size // 2
        cost = F.avg_pool2d(cost[None], self.block_size, stride=1, padding=pad, count_include_pad=False)[0]
        best_cost, best = cost.min(0)
        # uniqueness: the best must beat every cost more than 1 px away by the ratio
        idx = torch.arange(n_disp, device=self.device)[:, None, None]
        far = (idx - best[None]).abs() > 1
        second = torch.where(far, cost, torch.full_like(cost, float("inf"))).min(0).values
        unique = best_cost * (100 + self.uniqueness_ratio) < second * 100
        # parabola through the neighbouring costs
        b = best.clamp(1, n_disp - 2)
        c_m, c_0, c_p = (cost.gather(0, (b + k)[None])[0] for k in (-1, 0, 1))
        denom = c_m - 2 * c_0 + c_p
        offset = torch.where(denom > 0, (c_m - c_p) / (2 * denom), torch.zeros_like(denom)).clamp(-0.5, 0.5)
        disp = best.float() + torch.where((best > 0) & (best < n_disp - 1), offset, torch.zeros_like(offset))
        valid = unique & (best > 0) & (best_cost < big)
        disp = torch.where(valid, disp * self.downscale, torch.full_like(disp, -1.0))
        if self.downscale > 1:
            disp = F.interpolate(disp[None, None], size=(h, w), mode="nearest")[0, 0]
        return disp
