"""Camera geometry and image preprocessing shared by the datasets and the live engine (digest §1.3, §3.1).

The network sees the left image resized by ``s = W_in / W_orig`` with PIL (bicubic by default) to
``(int(W·s), int(H·s))`` and then cropped to ``(H_in, W_in)`` keeping the **bottom** rows (for
KITTI-360, 1408x376 -> 384x1408, the "crop" pads 8 black rows at the top). The bookkeeping is
``(u', v') = post_rot · (u, v) + post_tran`` with ``post_rot = diag(s, s)`` and
``post_tran = (-crop_left, -crop_top)``. As in the original, the resized size is truncated to integers
while post_rot keeps the exact ``s``, so the image content is scaled by ``int(W·s)/W`` and ``int(H·s)/H``
(e.g. 1279/1241 and 387/376 for a 1241x376 frame): the bookkeeping is off by under one pixel at the far
edges, exactly like the network's training data. The stereo depth map goes through the same resize and crop
(PIL mode 'F'). Projection of a grid (LiDAR) point X: ``Xc = rot⁻¹ (X − tran)``, ``p = intrin · [Xc; 1]``,
``d = p_z``, ``(u, v) = p_xy / d``, then post_rot / post_tran.

Only numpy, Pillow and torch are used; nothing here knows about ROS or datasets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ResizeCrop",
    "CameraGeometry",
    "camera_geometry",
    "normalize_image",
    "normalisation_lut",
    "color_jitter",
    "lidar_depth_map",
    "mlp_input",
    "build_camera_inputs",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _size_pair(size: Sequence[int], name: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {(h, w)}")
    return h, w


@dataclass(frozen=True)
class ResizeCrop:
    """The resize + bottom crop from an original image size to the network input size.

    Attributes:
        orig_hw: (H, W) of the original image.
        input_hw: (H_in, W_in) of the network input.
        scale: resize factor ``W_in / W``.
        resized_wh: PIL size after the resize, ``(int(W·s), int(H·s))``.
        crop: PIL crop box (left, top, right, bottom) in the resized image; may extend outside it
            (the outside is filled with 0).
        resample: PIL resampling name for images and depth maps.
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
        h, w = _size_pair(orig_hw, "orig_hw")
        fh, fw = _size_pair(input_hw, "input_hw")
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
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
        """(sx, sy) by which PIL actually scales the content (integer resized size / original size)."""
        return self.resized_wh[0] / self.orig_hw[1], self.resized_wh[1] / self.orig_hw[0]

    def transform_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Map (N, 2) original pixel coordinates to network-input coordinates."""
        uv = np.asarray(uv, dtype=np.float64)
        return uv @ self.post_rot[:2, :2].T.astype(np.float64) + self.post_tran[:2].astype(np.float64)

    def _apply(self, img: Image.Image) -> np.ndarray:
        """PIL resize, then the crop as an array slice (zero fill outside, as ``Image.crop``); may be a view."""
        resized = np.asarray(img.resize(self.resized_wh, resample=_RESAMPLE[self.resample]))
        left, top, right, bottom = self.crop
        h, w = resized.shape[:2]
        if left >= 0 and top >= 0 and right <= w and bottom <= h:
            return resized[top:bottom, left:right]
        out = np.zeros((bottom - top, right - left) + resized.shape[2:], dtype=resized.dtype)
        y0, y1, x0, x1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
        if y1 > y0 and x1 > x0:
            out[y0 - top:y1 - top, x0 - left:x1 - left] = resized[y0:y1, x0:x1]
        return out

    def apply_image(self, rgb: np.ndarray) -> np.ndarray:
        """Resize and crop an (H, W, 3) uint8 image to (H_in, W_in, 3) uint8 (C-contiguous, may be read-only).

        Raises:
            ValueError: wrong dtype, shape, or an image size other than ``orig_hw``.
        """
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if rgb.shape[:2] != self.orig_hw:
            raise ValueError(f"image is {rgb.shape[:2]}, but the resize was planned for {self.orig_hw}")
        return np.ascontiguousarray(self._apply(Image.fromarray(np.ascontiguousarray(rgb))))

    def apply_depth(self, depth: np.ndarray) -> np.ndarray:
        """Resize and crop an (H, W) float depth map (metres, 0 = invalid) as PIL mode 'F'.

        Raises:
            ValueError: wrong shape or size.
        """
        depth = np.asarray(depth)
        if depth.ndim != 2 or depth.shape != self.orig_hw:
            raise ValueError(f"depth map must be (H, W) = {self.orig_hw}, got {depth.shape}")
        img = Image.fromarray(np.ascontiguousarray(depth, dtype=np.float32))  # mode F
        return np.array(self._apply(img), dtype=np.float32)  # a writable contiguous copy


def _as_matrix(mat: np.ndarray, name: str, allow_3x4: bool) -> np.ndarray:
    m = np.asarray(mat, dtype=np.float64)
    if allow_3x4 and m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise ValueError(f"{name} must be {'3x4 or ' if allow_3x4 else ''}4x4, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contains NaN or inf")
    return m


@dataclass(frozen=True)
class CameraGeometry:
    """Camera parameters of one image as the network consumes them (digest §1.3).

    Attributes:
        rot: (3, 3) camera -> grid rotation.
        tran: (3,) camera -> grid translation.
        intrin: (4, 4) rectified projection P2, padded.
        post_rot: (3, 3) image resize/crop matrix.
        post_tran: (3,) image resize/crop translation.
        bda: (4, 4) 3D augmentation (identity).
        input_hw: (H_in, W_in) of the network image.
    """

    rot: np.ndarray
    tran: np.ndarray
    intrin: np.ndarray
    post_rot: np.ndarray
    post_tran: np.ndarray
    bda: np.ndarray
    input_hw: Tuple[int, int]

    def project(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Project (N, >=3) grid-frame points to network-image pixels.

        Returns:
            (uv (N, 2) float64 pixel coordinates after post_rot/post_tran, depth (N,) = p_z).
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must be (N, >=3), got {pts.shape}")
        xc = (pts[:, :3] - self.tran.astype(np.float64)) @ self.rot.astype(np.float64)  # rot^T (X - t), rows
        p = np.concatenate([xc, np.ones((len(xc), 1))], axis=1) @ self.intrin.astype(np.float64).T
        d = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = p[:, :2] / d[:, None]
        uv = uv @ self.post_rot[:2, :2].astype(np.float64).T + self.post_tran[:2].astype(np.float64)
        return uv, d

    def as_tensors(self) -> Dict[str, torch.Tensor]:
        """The geometry keys of the model input dict with batch and camera axes (float32)."""
        f = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        return {
            "rot": f(self.rot)[None, None],
            "tran": f(self.tran)[None, None],
            "intrin": f(self.intrin)[None, None],
            "post_rot": f(self.post_rot)[None, None],
            "post_tran": f(self.post_tran)[None, None],
            "bda": f(self.bda)[None],
        }


def camera_geometry(
    P2: np.ndarray,
    resize: ResizeCrop,
    *,
    T_velo_to_cam: Optional[np.ndarray] = None,
    T_grid_from_cam: Optional[np.ndarray] = None,
) -> CameraGeometry:
    """Build the camera geometry of one frame.

    Args:
        P2: rectified left projection, 3x4 or 4x4 (``fx > 0``).
        resize: the image resize/crop (gives post_rot/post_tran and the input size).
        T_velo_to_cam: KITTI ``Tr`` (grid/LiDAR -> camera), 4x4 or 3x4. Exactly one of this and
            ``T_grid_from_cam`` must be given.
        T_grid_from_cam: camera -> grid transform, 4x4 (as TF gives it).

    Raises:
        ValueError: bad shapes, non-finite values, zero focal length, or not exactly one transform.
    """
    intrin = _as_matrix(P2, "P2", allow_3x4=True)
    if intrin[0, 0] <= 0 or intrin[1, 1] <= 0:
        raise ValueError(f"P2 focal lengths must be positive, got fx={intrin[0, 0]}, fy={intrin[1, 1]}")
    if (T_velo_to_cam is None) == (T_grid_from_cam is None):
        raise ValueError("give exactly one of T_velo_to_cam and T_grid_from_cam")
    if T_grid_from_cam is None:
        cam_to_grid = np.linalg.inv(_as_matrix(T_velo_to_cam, "T_velo_to_cam", allow_3x4=True))
    else:
        cam_to_grid = _as_matrix(T_grid_from_cam, "T_grid_from_cam", allow_3x4=False)
    return CameraGeometry(
        rot=cam_to_grid[:3, :3].astype(np.float32),
        tran=cam_to_grid[:3, 3].astype(np.float32),
        intrin=intrin.astype(np.float32),
        post_rot=resize.post_rot,
        post_tran=resize.post_tran,
        bda=np.eye(4, dtype=np.float32),
        input_hw=resize.input_hw,
    )


def normalisation_lut() -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level per channel.

    Built with exactly the float32 operations of the float path (``/ 255``, ``- mean``, ``/ std``), so
    a look-up gives bit-identical results at a fraction of the cost (no per-pixel arithmetic).
    """
    levels = torch.arange(256, dtype=torch.float32).div_(255.0).view(1, 256)
    return ((levels - _MEAN.view(3, 1)) / _STD.view(3, 1)).numpy()


_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32)
_LUT = normalisation_lut()
_LUT_OFFSETS = (np.arange(3, dtype=np.intp) * 256).reshape(3, 1, 1)


def _unit_float(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1] (planar uint8 copy first: cheap contiguous casts)."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)


def normalize_image(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise an image: (H, W, 3) uint8 or (3, H, W) float in [0, 1] -> (3, H, W) float32.

    uint8 images go through a per-channel 256-entry look-up table (:func:`normalisation_lut`), bit-identical
    to ``(x / 255 - mean) / std`` in float32. Float inputs are not modified.
    """
    if isinstance(rgb, np.ndarray):
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        # one gather from the flat (3 * 256) table with planar indices c * 256 + level: ~2.5x faster than a
        # per-channel np.take on the interleaved uint8 channels
        idx = np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.intp)
        idx += _LUT_OFFSETS
        return torch.from_numpy(_LUT.reshape(-1)[idx])
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"image tensor must be (3, H, W), got {tuple(rgb.shape)}")
    x = rgb.float()
    return (x - _MEAN.to(x.device).view(3, 1, 1)).div_(_STD.to(x.device).view(3, 1, 1))


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def color_jitter(
    img: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Random brightness / contrast / saturation in random order (torchvision ColorJitter semantics).

    Each factor is drawn uniformly from ``[max(0, 1 - a), 1 + a]``; brightness scales the image,
    contrast blends with the mean grey level, saturation blends with the per-pixel grey image
    (ITU-R 601 weights); results are clamped to [0, 1].

    Args:
        img: (3, H, W) float image in [0, 1].
        brightness, contrast, saturation: jitter strengths (>= 0).
        generator: torch RNG for reproducibility.
    """
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"image tensor must be (3, H, W), got {tuple(img.shape)}")
    for name, a in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if a < 0:
            raise ValueError(f"{name} must be >= 0, got {a}")

    def factor(a: float) -> float:
        lo, hi = max(0.0, 1.0 - a), 1.0 + a
        return float(lo + (hi - lo) * torch.rand((), generator=generator))

    out = img.float()
    for op in torch.randperm(3, generator=generator).tolist():
        if op == 0 and brightness > 0:
            out = (out * factor(brightness)).clamp_(0.0, 1.0)
        elif op == 1 and contrast > 0:
            f = factor(contrast)
            out = (f * out + (1.0 - f) * _gray(out).mean()).clamp_(0.0, 1.0)
        elif op == 2 and saturation > 0:
            f = factor(saturation)
            out = (f * out + (1.0 - f) * _gray(out)).clamp_(0.0, 1.0)
    return out


def lidar_depth_map(points: np.ndarray, geom: CameraGeometry) -> np.ndarray:
    """Sparse depth ground truth at network size from a LiDAR scan (digest §3.1, last bullet).

    Points are projected into the network image; those with ``0 <= u <= W-1``, ``0 <= v <= H-1`` and
    ``d > 0`` are rounded to the nearest pixel, and where several hit one pixel the nearest wins.

    Args:
        points: (N, >=3) scan in the grid/LiDAR frame.
        geom: camera geometry of the frame.

    Returns:
        (H_in, W_in) float32 depth in metres, 0 where no point falls.
    """
    h, w = geom.input_hw
    out = np.zeros((h, w), dtype=np.float32)
    if len(points) == 0:
        return out
    uv, d = geom.project(points)
    keep = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1) & (d > 0)
    keep &= np.isfinite(d)
    if not keep.any():
        return out
    col = np.round(uv[keep, 0]).astype(np.int64)
    row = np.round(uv[keep, 1]).astype(np.int64)
    depth = d[keep].astype(np.float32)
    order = np.argsort(-depth, kind="stable")  # far first, so the nearest is written last and wins
    out[row[order], col[order]] = depth[order]
    return out


def mlp_input(
    rot: torch.Tensor,
    tran: torch.Tensor,
    intrin: torch.Tensor,
    post_rot: torch.Tensor,
    post_tran: torch.Tensor,
    bda: torch.Tensor,
) -> torch.Tensor:
    """The 33-d camera vector of the depth net (digest §3.4), (B, N, 33).

    Order: fx, fy, cx, cy, P[0,3], P[1,3], P[2,3]; post_rot[0,0], post_rot[0,1], post_tran[0],
    post_rot[1,0], post_rot[1,1], post_tran[1]; bda[0,0], bda[0,1], bda[1,0], bda[1,1], bda[2,2],
    bda[0,3], bda[1,3], bda[2,3]; then [rot | tran] (3x4) flattened row-major.

    Args:
        rot, tran, intrin, post_rot, post_tran: (B, N, ...) as in the model input dict.
        bda: (B, 4, 4).
    """
    b, n = rot.shape[:2]
    bd = bda.view(b, 1, 4, 4).expand(b, n, 4, 4)
    parts = [
        intrin[..., 0, 0], intrin[..., 1, 1], intrin[..., 0, 2], intrin[..., 1, 2],
        intrin[..., 0, 3], intrin[..., 1, 3], intrin[..., 2, 3],
        post_rot[..., 0, 0], post_rot[..., 0, 1], post_tran[..., 0],
        post_rot[..., 1, 0], post_rot[..., 1, 1], post_tran[..., 1],
        bd[..., 0, 0], bd[..., 0, 1], bd[..., 1, 0], bd[..., 1, 1], bd[..., 2, 2],
        bd[..., 0, 3], bd[..., 1, 3], bd[..., 2, 3],
    ]
    head = torch.stack(parts, dim=-1)
    rt = torch.cat([rot, tran.unsqueeze(-1)], dim=-1).reshape(b, n, 12)
    return torch.cat([head, rt.to(head.dtype)], dim=-1)


def build_camera_inputs(
    rgb: np.ndarray,
    P2: np.ndarray,
    input_hw: Sequence[int] = (384, 1280),
    *,
    stereo_depth: Optional[np.ndarray] = None,
    T_velo_to_cam: Optional[np.ndarray] = None,
    T_grid_from_cam: Optional[np.ndarray] = None,
    resample: str = "bicubic",
    jitter: Optional[Dict[str, float]] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Dict[str, torch.Tensor], CameraGeometry]:
    """Build the camera part of the model input dict (docs/interfaces.md) from arrays.

    Args:
        rgb: (H, W, 3) uint8 left image.
        P2: left rectified projection 3x4 / 4x4.
        input_hw: network input (H_in, W_in), e.g. (384, 1280) for SemanticKITTI, (384, 1408) KITTI-360.
        stereo_depth: (H, W) float32 depth in metres (0 = invalid), same size as ``rgb``; optional.
        T_velo_to_cam / T_grid_from_cam: exactly one, see :func:`camera_geometry`.
        resample: PIL resampling ("bicubic" as the original).
        jitter: ``{"brightness": b, "contrast": c, "saturation": s}`` to apply colour jitter (training).
        generator: RNG for the jitter.

    Returns:
        (inputs with ``img`` (1, 1, 3, H_in, W_in), ``rot``, ``tran``, ``intrin``, ``post_rot``,
        ``post_tran``, ``bda`` and, if given, ``stereo_depth`` (1, 1, H_in, W_in); the geometry).

    Raises:
        ValueError: bad image, depth or matrices.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    rc = ResizeCrop.from_sizes(rgb.shape[:2], input_hw, resample)
    geom = camera_geometry(P2, rc, T_velo_to_cam=T_velo_to_cam, T_grid_from_cam=T_grid_from_cam)
    resized = rc.apply_image(rgb)
    if jitter:
        img = normalize_image(color_jitter(_unit_float(resized), generator=generator, **jitter))
    else:
        img = normalize_image(resized)  # look-up table, no float temporaries
    inputs = {"img": img[None, None]}
    inputs.update(geom.as_tensors())
    if stereo_depth is not None:
        depth = np.asarray(stereo_depth)
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"stereo_depth is {depth.shape}, but the image is {rgb.shape[:2]}")
        inputs["stereo_depth"] = torch.from_numpy(rc.apply_depth(depth))[None, None]
    return inputs, geom
