"""The preprocessing interface: left image (+ stereo depth) and calibration -> the camera part of the input dict."""
from __future__ import annotations

import abc
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .geometry import CameraGeometry, camera_geometry
from .resize import RESAMPLE, ResizeCrop, size_pair

__all__ = ["ImageTransform", "Preprocessor"]

#: a transform of the resized image, (3, H_in, W_in) float in [0, 1] -> the same, before the normalisation
#: (training colour jitter: :func:`l2cocc_ros.core.data.augment.jitter_transform`)
ImageTransform = Callable[[torch.Tensor], torch.Tensor]

#: a depth map [m]: an array, or a tensor on any device (a stereo backend's output)
Depth = Union[np.ndarray, torch.Tensor]


class Preprocessor(abc.ABC):
    """Resize + bottom crop + ImageNet normalisation of the left image, the same resize and crop of the stereo
    depth, and the camera geometry with the matching bookkeeping (docs/interfaces.md, "Preprocessing").

    Implementations differ only in where the pixel work runs: :class:`~.pillow.PillowPreprocessor` (Pillow on
    the CPU, the reference) and :class:`~.torch_resample.TorchPreprocessor` (torch ops on the model's device,
    bit-identical). The engine picks one when it is built (:func:`~l2cocc_ros.core.preprocess.make_preprocessor`).

    The image is not checked here: it is a frame's (checked when the frame was built) or comes through
    :func:`~l2cocc_ros.core.preprocess.build_camera_inputs`, which checks it.

    Args:
        input_hw: network input (H_in, W_in), e.g. (384, 1280) for SemanticKITTI, (384, 1408) KITTI-360.
        resample: Pillow resampling of the resize ("bicubic" as the original).

    Raises:
        ValueError: a bad size or an unknown resampling name.
    """

    #: the implementation's name in :func:`~l2cocc_ros.core.preprocess.make_preprocessor`
    name = "base"

    def __init__(self, input_hw: Sequence[int], resample: str = "bicubic") -> None:
        self.input_hw = size_pair(input_hw, "input_hw")
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
        self.resample = resample
        self._plans: Dict[Tuple[int, int], ResizeCrop] = {}

    def plan(self, image_hw: Sequence[int]) -> ResizeCrop:
        """The resize/crop of an image of ``image_hw`` (computed once per size)."""
        key = (int(image_hw[0]), int(image_hw[1]))
        rc = self._plans.get(key)
        if rc is None:
            rc = self._plans[key] = ResizeCrop.from_sizes(key, self.input_hw, self.resample)
        return rc

    def camera_inputs(
        self,
        rgb: np.ndarray,
        P2: np.ndarray,
        *,
        T_grid_from_cam: Optional[np.ndarray] = None,
        T_velo_to_cam: Optional[np.ndarray] = None,
        stereo_depth: Optional[Depth] = None,
        image_transform: Optional[ImageTransform] = None,
    ) -> Tuple[Dict[str, torch.Tensor], CameraGeometry]:
        """The camera part of the model input dict (docs/interfaces.md, "Model contract").

        Args:
            rgb: (H, W, 3) uint8 left image (checked by whoever built it).
            P2: left rectified projection 3x4 / 4x4.
            T_grid_from_cam / T_velo_to_cam: exactly one, see :func:`~.geometry.camera_geometry`.
            stereo_depth: (H, W) float32 depth in metres (0 = invalid), same size as ``rgb``; optional. An array or
                a tensor (a stereo backend's, on its device: the torch implementation keeps it there).
            image_transform: applied to the resized image before the normalisation (training jitter).

        Returns:
            (inputs with ``img`` (1, 1, 3, H_in, W_in), ``rot``, ``tran``, ``intrin``, ``post_rot``,
            ``post_tran``, ``bda`` and, if given, ``stereo_depth`` (1, 1, H_in, W_in); the geometry). Pixel
            tensors live where the implementation works (CPU for Pillow, the device for torch).

        Raises:
            ValueError: bad matrices, or a depth map whose size differs from the image's.
        """
        rc = self.plan(rgb.shape[:2])
        geom = camera_geometry(P2, rc, T_velo_to_cam=T_velo_to_cam, T_grid_from_cam=T_grid_from_cam)
        if stereo_depth is not None and tuple(stereo_depth.shape) != rgb.shape[:2]:
            raise ValueError(f"stereo_depth is {tuple(stereo_depth.shape)}, but the image is {rgb.shape[:2]}")
        inputs = self._pixels(rc, rgb, stereo_depth, image_transform)
        inputs.update(geom.as_tensors())
        return inputs, geom

    @abc.abstractmethod
    def _pixels(self, rc: ResizeCrop, rgb: np.ndarray, depth: Optional[Depth],
                image_transform: Optional[ImageTransform]) -> Dict[str, torch.Tensor]:
        """``img`` (1, 1, 3, H_in, W_in) float32 and, with ``depth``, ``stereo_depth`` (1, 1, H_in, W_in)."""
