"""The stereo backend interface: rectified left/right images -> metric depth of the left image (0 = invalid).

A backend implements :meth:`StereoBackend.disparity`, which returns a float32 torch tensor on the backend's
device (:meth:`StereoBackend.to`; the engine moves its backend to the model's device, so depth from a
torch backend never leaves the GPU). :meth:`StereoBackend.depth` turns it into metres on that device;
:meth:`StereoBackend.compute` is the numpy form the dataset readers and ``l2cocc preprocess stereo`` use.

Depth from disparity: ``depth = f · b / disp`` for ``disp > 0``; every other pixel is 0.
"""
from __future__ import annotations

import abc
from typing import Union

import numpy as np
import torch

__all__ = ["StereoBackend", "disparity_to_depth", "check_focal_baseline", "check_pair"]

Disparity = Union[np.ndarray, torch.Tensor]


def check_focal_baseline(focal_px: float, baseline_m: float) -> None:
    """Raises ValueError naming a non-positive or non-finite focal length [px] or baseline [m]."""
    if not (np.isfinite(focal_px) and focal_px > 0):
        raise ValueError(f"focal length must be > 0 px, got {focal_px}")
    if not (np.isfinite(baseline_m) and baseline_m > 0):
        raise ValueError(f"baseline must be > 0 m, got {baseline_m}")


def check_pair(left: np.ndarray, right: np.ndarray) -> None:
    """Raises ValueError unless both images are uint8 (H, W) or (H, W, 1|3) arrays of the same shape."""
    for name, img in (("left", left), ("right", right)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError(f"{name} image must be a uint8 numpy array, got {getattr(img, 'dtype', type(img))}")
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise ValueError(f"{name} image must be (H, W) or (H, W, 3), got {img.shape}")
    if left.shape != right.shape:
        raise ValueError(f"left and right images differ in shape: {left.shape} vs {right.shape}")


def disparity_to_depth(disparity: Disparity, focal_px: float, baseline_m: float) -> Disparity:
    """Depth (metres, float32) from disparity (pixels); non-positive or non-finite disparity -> 0.

    Args:
        disparity: numpy array or torch tensor; the result has the same type (and device).
        focal_px: focal length [px].
        baseline_m: stereo baseline [m].

    Raises:
        ValueError: non-positive focal length or baseline.
    """
    check_focal_baseline(focal_px, baseline_m)
    as_numpy = not isinstance(disparity, torch.Tensor)
    disp = torch.from_numpy(np.asarray(disparity, dtype=np.float32)) if as_numpy else disparity.float()
    valid = torch.isfinite(disp) & (disp > 0)
    fb = torch.tensor(focal_px * baseline_m, dtype=torch.float32, device=disp.device)
    depth = torch.where(valid, fb / torch.where(valid, disp, torch.ones_like(disp)), torch.zeros_like(disp))
    return depth.numpy() if as_numpy else depth


class StereoBackend(abc.ABC):
    """Depth from a rectified stereo pair, computed on :attr:`device` (CPU until :meth:`to` moves it).

    Subclasses implement :meth:`disparity`; a backend with weights or buffers overrides :meth:`to` as well.
    """

    name: str = "base"
    device: torch.device = torch.device("cpu")

    def to(self, device: Union[str, torch.device]) -> "StereoBackend":
        """Run on ``device`` from now on (the engine calls this with the model's device); returns self."""
        self.device = torch.device(device)
        return self

    @abc.abstractmethod
    def disparity(self, left: np.ndarray, right: np.ndarray) -> torch.Tensor:
        """Disparity (pixels, float32 (H, W) tensor on :attr:`device`) of the left image; <= 0 where invalid.

        Args:
            left, right: rectified (H, W, 3) RGB or (H, W) grey uint8 images of the same size.
        """

    def depth(self, left: np.ndarray, right: np.ndarray, focal_px: float, baseline_m: float) -> torch.Tensor:
        """Depth map (H, W) float32 tensor in metres on :attr:`device`, 0 = invalid.

        Raises:
            ValueError: images of different size / wrong dtype, non-positive focal length or baseline.
        """
        check_focal_baseline(focal_px, baseline_m)
        check_pair(left, right)
        return disparity_to_depth(self.disparity(left, right), focal_px, baseline_m)

    def compute(self, left: np.ndarray, right: np.ndarray, focal_px: float, baseline_m: float) -> np.ndarray:
        """:meth:`depth` as a (H, W) float32 numpy array (for files and the dataset readers).

        Raises:
            ValueError: as :meth:`depth`.
        """
        return self.depth(left, right, focal_px, baseline_m).cpu().numpy()

    __call__ = compute
