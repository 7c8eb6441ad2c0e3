"""The resize + bottom crop from the camera image to the network input, and its intrinsics bookkeeping.

The network sees the left image resized by ``s = W_in / W_orig`` with Pillow (bicubic by default) to
``(int(W·s), int(H·s))`` and then cropped to ``(H_in, W_in)`` keeping the **bottom** rows (for KITTI-360,
1408x376 -> 384x1408, the "crop" pads 8 black rows at the top), as the authors' test-time loader
(docs/interfaces.md, "Preprocessing"). The bookkeeping is ``(u', v') = post_rot · (u, v) + post_tran`` with
``post_rot = diag(s, s)`` and ``post_tran = (-crop_left, -crop_top)``. As in the original, the resized size is
truncated to integers while post_rot keeps the exact ``s``, so the image content is scaled by ``int(W·s)/W``
and ``int(H·s)/H`` (e.g. 1279/1241 and 387/376 for a 1241x376 frame): the bookkeeping is off by under one pixel
at the far edges, exactly like the network's training data. The stereo depth map goes through the same resize
and crop (Pillow mode 'F').
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple, TypeVar

import numpy as np
import torch
from PIL import Image

__all__ = ["RESAMPLE", "ResizeCrop", "crop_zero_filled"]

#: resampling name -> Pillow filter
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def size_pair(size: Sequence[int], name: str) -> Tuple[int, int]:
    """``(height, width)`` as two positive ints.

    Raises:
        ValueError: not two positive integers (``name`` is named).
    """
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {(h, w)}")
    return h, w


def crop_zero_filled(x: Array, box: Tuple[int, int, int, int], *, channels_last: bool) -> Array:
    """Cut ``box = (left, top, right, bottom)`` out of an image; outside the image is 0 (as Pillow's ``crop``).

    The one crop of the package, for numpy arrays (Pillow path) and torch tensors (device path).

    Args:
        x: (h, w[, C]) when ``channels_last``, else (..., h, w).
        box: crop box in pixels; may extend past the image (that part is zero-filled).
        channels_last: where the two image axes are.

    Returns:
        The crop: a view when the box lies inside the image, else a new zero-filled array of ``x``'s type.
    """
    left, top, right, bottom = box
    h, w = (x.shape[0], x.shape[1]) if channels_last else (x.shape[-2], x.shape[-1])

    def index(rows: slice, cols: slice):
        return (rows, cols) if channels_last else (Ellipsis, rows, cols)

    if left >= 0 and top >= 0 and right <= w and bottom <= h:
        return x[index(slice(top, bottom), slice(left, right))]
    size = (bottom - top, right - left)
    shape = size + tuple(x.shape[2:]) if channels_last else tuple(x.shape[:-2]) + size
    out = x.new_zeros(shape) if isinstance(x, torch.Tensor) else np.zeros(shape, dtype=x.dtype)
    y0, y1, x0, x1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if y1 > y0 and x1 > x0:
        out[index(slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))] = x[index(slice(y0, y1), slice(x0, x1))]
    return out


@dataclass(frozen=True)
class ResizeCrop:
    """The resize + bottom crop from an original image size to the network input size.

    Attributes:
        orig_hw: (H, W) of the original image.
        input_hw: (H_in, W_in) of the network input.
        scale: resize factor ``W_in / W``.
        resized_wh: Pillow size after the resize, ``(int(W·s), int(H·s))``.
        crop: crop box (left, top, right, bottom) in the resized image; may extend outside it (the outside is
            filled with 0).
        resample: Pillow resampling name for images and depth maps.
    """

    orig_hw: Tuple[int, int]
    input_hw: Tuple[int, int]
    scale: float
    resized_wh: Tuple[int, int]
    crop: Tuple[int, int, int, int]
    resample: str = "bicubic"

    @classmethod
    def from_sizes(cls, orig_hw: Sequence[int], input_hw: Sequence[int], resample: str = "bicubic") -> "ResizeCrop":
        """Resize/crop parameters exactly as the original test-time loader computes them.

        Raises:
            ValueError: non-positive sizes or an unknown resampling name.
        """
        h, w = size_pair(orig_hw, "orig_hw")
        fh, fw = size_pair(input_hw, "input_hw")
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
        s = float(fw) / float(w)
        new_w, new_h = int(w * s), int(h * s)
        crop_h = new_h - fh
        crop_w = int(max(0, new_w - fw) / 2)
        return cls((h, w), (fh, fw), s, (new_w, new_h), (crop_w, crop_h, crop_w + fw, crop_h + fh), resample)

    @property
    def post_rot(self) -> np.ndarray:
        """(3, 3) float32: diag(s, s, 1)."""
        return np.diag([self.scale, self.scale, 1.0]).astype(np.float32)

    @property
    def post_tran(self) -> np.ndarray:
        """(3,) float32: (-crop_left, -crop_top, 0)."""
        return np.array([-self.crop[0], -self.crop[1], 0.0], dtype=np.float32)

    @property
    def content_scale(self) -> Tuple[float, float]:
        """(sx, sy) by which Pillow actually scales the content (integer resized size / original size)."""
        return self.resized_wh[0] / self.orig_hw[1], self.resized_wh[1] / self.orig_hw[0]

    def transform_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Map (N, 2) original pixel coordinates to network-input coordinates."""
        uv = np.asarray(uv, dtype=np.float64)
        return uv @ self.post_rot[:2, :2].T.astype(np.float64) + self.post_tran[:2].astype(np.float64)

    def _apply(self, img: Image.Image) -> np.ndarray:
        """Pillow resize, then the crop (may be a view)."""
        resized = np.asarray(img.resize(self.resized_wh, resample=RESAMPLE[self.resample]))
        return crop_zero_filled(resized, self.crop, channels_last=True)

    def apply_image(self, rgb: np.ndarray) -> np.ndarray:
        """Resize and crop an (H, W, 3) uint8 image of size ``orig_hw`` to (H_in, W_in, 3) uint8 (C-contiguous,
        may be read-only). The image is not checked again (a frame's images were checked when it was built).

        Raises:
            ValueError: an image size other than ``orig_hw`` (the plan is for another size).
        """
        if rgb.shape[:2] != self.orig_hw:
            raise ValueError(f"image is {rgb.shape[:2]}, but the resize was planned for {self.orig_hw}")
        return np.ascontiguousarray(self._apply(Image.fromarray(np.ascontiguousarray(rgb))))

    def apply_depth(self, depth: np.ndarray) -> np.ndarray:
        """Resize and crop an (H, W) float depth map (metres, 0 = invalid) as Pillow mode 'F'.

        Raises:
            ValueError: wrong shape or size.
        """
        depth = np.asarray(depth)
        if depth.ndim != 2 or depth.shape != self.orig_hw:
            raise ValueError(f"depth map must be (H, W) = {self.orig_hw}, got {depth.shape}")
        img = Image.fromarray(np.ascontiguousarray(depth, dtype=np.float32))  # mode F
        return np.array(self._apply(img), dtype=np.float32)  # a writable contiguous copy
