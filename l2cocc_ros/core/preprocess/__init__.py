"""Preprocessing: the left image (+ stereo depth) and its calibration -> the camera part of the model input.

One interface, :class:`Preprocessor` (``camera_inputs(rgb, P2, T_grid_from_cam=..., stereo_depth=...)``), and
two implementations chosen when the engine is built (:func:`make_preprocessor`):

- ``"pillow"``: :class:`PillowPreprocessor`, Pillow's resize on the CPU (the reference; the datasets use it);
- ``"torch"``: :class:`TorchPreprocessor`, the same arithmetic as torch ops on the model's device,
  bit-identical (the fast path next to a GPU).

Modules: :mod:`.resize` (the resize + bottom crop plan and its bookkeeping, the one crop), :mod:`.geometry`
(camera -> grid pose, intrinsics, ``post_rot``/``post_tran``), :mod:`.normalize` (ImageNet look-up table),
:mod:`.pillow`, :mod:`.torch_resample`. Only numpy, Pillow and torch; nothing here knows about ROS or datasets.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .base import ImageTransform, Preprocessor
from .geometry import CameraGeometry, camera_geometry
from .normalize import IMAGENET_MEAN, IMAGENET_STD, normalisation_lut, normalize_image, unit_float
from .pillow import PillowPreprocessor
from .resize import RESAMPLE, ResizeCrop, crop_zero_filled
from .torch_resample import FILTERS, DeviceResizeCrop, TorchPreprocessor, check_resample, resample_taps

__all__ = [
    "PREPROCESSORS", "Preprocessor", "PillowPreprocessor", "TorchPreprocessor", "ImageTransform",
    "make_preprocessor", "build_camera_inputs", "check_image",
    "ResizeCrop", "crop_zero_filled", "RESAMPLE", "CameraGeometry", "camera_geometry",
    "IMAGENET_MEAN", "IMAGENET_STD", "normalisation_lut", "normalize_image", "unit_float",
    "DeviceResizeCrop", "FILTERS", "check_resample", "resample_taps",
]

#: implementation name -> class
PREPROCESSORS = {PillowPreprocessor.name: PillowPreprocessor, TorchPreprocessor.name: TorchPreprocessor}


def make_preprocessor(kind: str, input_hw: Sequence[int], resample: str = "bicubic",
                      device: Union[str, torch.device] = "cpu") -> Preprocessor:
    """The preprocessing implementation ``kind`` ("pillow" or "torch"; ``device`` is used by "torch").

    Raises:
        ValueError: unknown kind, bad size or resampling (torch: a non-convolution resampling).
    """
    if kind == "pillow":
        return PillowPreprocessor(input_hw, resample)
    if kind == "torch":
        return TorchPreprocessor(input_hw, resample, device)
    raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSORS)}, got {kind!r}")


def check_image(rgb: np.ndarray, name: str = "rgb") -> np.ndarray:
    """An (H, W, 3) uint8 image, or a ValueError naming ``name`` (for arrays that are not a frame's)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape[:2]:
        raise ValueError(f"{name} must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    return rgb


def build_camera_inputs(
    rgb: np.ndarray,
    P2: np.ndarray,
    input_hw: Sequence[int] = (384, 1280),
    *,
    stereo_depth: Optional[np.ndarray] = None,
    T_velo_to_cam: Optional[np.ndarray] = None,
    T_grid_from_cam: Optional[np.ndarray] = None,
    resample: str = "bicubic",
    image_transform: Optional[ImageTransform] = None,
) -> Tuple[Dict[str, torch.Tensor], CameraGeometry]:
    """One image through :class:`PillowPreprocessor` (datasets, export, tests): the image is checked here.

    Args:
        rgb: (H, W, 3) uint8 left image.
        P2, input_hw, stereo_depth, T_velo_to_cam, T_grid_from_cam, resample, image_transform: see
            :meth:`Preprocessor.camera_inputs` and :class:`Preprocessor`.

    Raises:
        ValueError: bad image, depth or matrices.
    """
    rgb = check_image(rgb)
    return PillowPreprocessor(input_hw, resample).camera_inputs(
        rgb, P2, T_grid_from_cam=T_grid_from_cam, T_velo_to_cam=T_velo_to_cam, stereo_depth=stereo_depth,
        image_transform=image_transform)
