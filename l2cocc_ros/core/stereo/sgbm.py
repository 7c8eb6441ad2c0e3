"""OpenCV semi-global block matching, tuned for KITTI-like rectified pairs (~0.54 m baseline, ~720 px focal
length, 1241x376). Weights-free; runs on the CPU and hands its disparity to the backend's device.
"""
from __future__ import annotations


import cv2
import numpy as np
import torch

from l2cocc_ros.core.stereo.base import StereoBackend, check_pair

__all__ = ["SGBMStereo"]

_MODES = {
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "hh": cv2.STEREO_SGBM_MODE_HH,
    "sgbm_3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    "hh4": cv2.STEREO_SGBM_MODE_HH4,
}


class SGBMStereo(StereoBackend):
    """OpenCV StereoSGBM with KITTI-tuned defaults.

    Args:
        num_disparities: disparity search range at full resolution (pixels, multiple of 16). 128 covers
            depths down to ~3 m on KITTI (f·b ≈ 388 px·m); the grid starts 2 m ahead of the LiDAR.
        block_size: odd matching block size (5-7 for KITTI).
        uniqueness_ratio: margin (%) by which the best cost must win.
        speckle_window_size: maximum size of disparity blobs treated as speckle (0 disables the filter).
        speckle_range: maximum disparity variation inside a connected component.
        disp12_max_diff: left-right consistency tolerance (pixels; < 0 disables).
        pre_filter_cap: clipping of the pre-filtered image derivatives.
        mode: "sgbm_3way" (fast, default), "sgbm", "hh" (8 paths, slower) or "hh4".
        downscale: integer factor by which both images are shrunk before matching (1 = full size); the
            disparity is scaled back and upsampled (nearest), trading accuracy for speed.
        use_color: match on RGB (P1/P2 scaled by 3 channels) instead of grey.
    """

    name = "sgbm"

    def __init__(
        self,
        num_disparities: int = 128,
        block_size: int = 5,
        uniqueness_ratio: int = 10,
        speckle_window_size: int = 100,
        speckle_range: int = 2,
        disp12_max_diff: int = 1,
        pre_filter_cap: int = 63,
        mode: str = "sgbm_3way",
        downscale: int = 1,
        use_color: bool = True,
    ) -> None:
        if num_disparities <= 0 or num_disparities % 16:
            raise ValueError(f"num_disparities must be a positive multiple of 16, got {num_disparities}")
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and >= 1, got {block_size}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
        if int(downscale) != downscale or downscale < 1:
            raise ValueError(f"downscale must be an integer >= 1, got {downscale}")
        if uniqueness_ratio < 0 or speckle_window_size < 0 or speckle_range < 0 or pre_filter_cap < 1:
            raise ValueError("uniqueness_ratio, speckle_window_size, speckle_range must be >= 0 "
                             "and pre_filter_cap >= 1")
        self.num_disparities = int(num_disparities)
        self.block_size = int(block_size)
        self.mode = mode
        self.downscale = int(downscale)
        self.use_color = bool(use_color)
        self._params = dict(uniqueness_ratio=int(uniqueness_ratio), speckle_window_size=int(speckle_window_size),
                            speckle_range=int(speckle_range), disp12_max_diff=int(disp12_max_diff),
                            pre_filter_cap=int(pre_filter_cap))
        self._matcher = self._make_matcher()

    def _make_matcher(self):
        channels = 3 if self.use_color else 1
        nd = -(-self.num_disparities // self.downscale)  # ceil
        nd = max(16, -(-nd // 16) * 16)
        p = self._params
        return cv2.StereoSGBM_create(
            minDisparity=0,
            numDisparities=nd,
            blockSize=self.block_size,
            P1=8 * channels * self.block_size ** 2,
            P2=32 * channels * self.block_size ** 2,
            disp12MaxDiff=p["disp12_max_diff"],
            preFilterCap=p["pre_filter_cap"],
            uniquenessRatio=p["uniqueness_ratio"],
            speckleWindowSize=p["speckle_window_size"],
            speckleRange=p["speckle_range"],
            mode=_MODES[self.mode],
        )

    def __getstate__(self) -> dict:
        """Picklable (data-loader workers under spawn): the OpenCV matcher is rebuilt on unpickling."""
        state = dict(self.__dict__)
        state.pop("_matcher", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._matcher = self._make_matcher()

    def __repr__(self) -> str:
        return (f"SGBMStereo(num_disparities={self.num_disparities}, block_size={self.block_size}, "
                f"mode={self.mode!r}, downscale={self.downscale}, use_color={self.use_color})")

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if self.use_color and img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        elif not self.use_color and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if self.downscale > 1:
            h, w = img.shape[:2]
            img = cv2.resize(img, (w // self.downscale, h // self.downscale), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img)

    def disparity(self, left: np.ndarray, right: np.ndarray) -> torch.Tensor:
        """SGBM disparity in full-resolution pixels (float32 tensor on :attr:`device`), -1 where invalid."""
        check_pair(left, right)
        h, w = left.shape[:2]
        raw = self._matcher.compute(self._prepare(left), self._prepare(right))
        disp = raw.astype(np.float32) / 16.0
        disp[raw <= 0] = -1.0
        if self.downscale > 1:
            disp = np.where(disp > 0, disp * self.downscale, -1.0).astype(np.float32)
            disp = cv2.resize(disp, (w, h), interpolation=cv2.INTER_NEAREST)
        return torch.from_numpy(disp).to(self.device)
