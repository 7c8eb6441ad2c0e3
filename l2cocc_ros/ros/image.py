"""sensor_msgs Image / CameraInfo <-> numpy, without cv_bridge (used when it is installed).

Images are read with ``np.frombuffer`` over the message bytes (row ``step`` and endianness honoured) and
written with ``tobytes``; nothing is converted element by element. Stereo calibration comes from the two
CameraInfo ``p`` matrices (docs/interfaces.md, "Camera conventions") with the one baseline rule,
:func:`l2cocc_ros.core.frame.baseline_from_projections`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from l2cocc_ros.core.frame import baseline_from_projections

try:  # the real cv_bridge (vehicle); ours below otherwise
    from cv_bridge import CvBridge as _CvBridge
except ImportError:  # pragma: no cover - depends on the machine
    _CvBridge = None

__all__ = [
    "SUPPORTED_ENCODINGS",
    "image_to_numpy",
    "image_to_rgb",
    "numpy_to_image",
    "projection_from_camera_info",
    "left_offset_note",
    "stereo_calibration",
]

# encoding -> (dtype, channels)
SUPPORTED_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
}


def _dtype_and_channels(encoding: str) -> Tuple[np.dtype, int]:
    try:
        dtype, channels = SUPPORTED_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(
            f"Image.encoding {encoding!r} is not supported; expected one of {sorted(SUPPORTED_ENCODINGS)}"
        ) from None
    return np.dtype(dtype), channels


def image_to_numpy(msg: Image) -> np.ndarray:
    """View an Image as an (H, W) or (H, W, C) array in its own encoding.

    Args:
        msg: the image; ``step`` may include row padding; ``is_bigendian`` is honoured for 16-bit data.

    Returns:
        array of shape (height, width[, channels]) and the encoding's dtype (native byte order).

    Raises:
        ValueError: unsupported encoding, zero size, or ``step`` / ``data`` too small (the field is named).
    """
    dtype, channels = _dtype_and_channels(msg.encoding)
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ValueError(f"Image has zero size (height={h}, width={w})")
    row = w * channels * dtype.itemsize
    step = int(msg.step)
    if step < row:
        raise ValueError(f"Image.step {step} < width * channels * bytes ({row}) for {msg.encoding}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * (h - 1) + row:
        need = step * (h - 1) + row
        raise ValueError(f"Image.data has {buf.size} bytes, expected at least {need} ({h} rows of step {step})")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
    arr = arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)
    if dtype.itemsize > 1 and arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(dtype)
    return arr


def image_to_rgb(msg: Image) -> np.ndarray:
    """Any supported Image as a contiguous (H, W, 3) uint8 RGB array.

    mono8 is replicated to three channels; mono16 keeps its upper 8 bits; alpha is dropped. cv_bridge is
    used when it is installed.

    Raises:
        ValueError: as :func:`image_to_numpy`.
    """
    _dtype_and_channels(msg.encoding)  # refuse unsupported encodings the same way on both paths
    if _CvBridge is not None:  # pragma: no cover - depends on the machine
        if msg.encoding == "mono16":
            return np.repeat((image_to_numpy(msg) >> 8).astype(np.uint8)[..., None], 3, axis=2)
        return np.ascontiguousarray(_CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    arr = image_to_numpy(msg)
    enc = msg.encoding
    if enc == "rgb8":
        return arr
    if enc == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if enc == "bgra8":
        return np.ascontiguousarray(arr[..., 2::-1])
    if enc == "mono16":
        arr = (arr >> 8).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))


def numpy_to_image(array: np.ndarray, encoding: str, *, stamp=None, frame_id: str = "") -> Image:
    """Pack an array into an Image (``data`` filled with one ``tobytes``).

    Args:
        array: (H, W, C) or (H, W) array matching ``encoding``.
        encoding: one of :data:`SUPPORTED_ENCODINGS`.
        stamp: builtin_interfaces/Time for the header (default zero).
        frame_id: header frame.

    Raises:
        ValueError: when the array's dtype or channel count does not match the encoding.
    """
    dtype, channels = _dtype_and_channels(encoding)
    arr = np.asarray(array)
    got = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else -1)
    if arr.dtype != dtype or got != channels:
        raise ValueError(f"array {arr.dtype} with shape {arr.shape} does not match encoding {encoding!r}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = False
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<")).tobytes()
    return msg


def projection_from_camera_info(info: CameraInfo) -> np.ndarray:
    """The rectified projection ``P`` (3x4, float64) of a CameraInfo.

    Raises:
        ValueError: if ``p`` is not 12 finite numbers or the focal lengths ``p[0]``/``p[5]`` are not > 0.
    """
    p = np.asarray(info.p, dtype=np.float64)
    if p.size != 12 or not np.all(np.isfinite(p)):
        raise ValueError(f"CameraInfo.p must hold 12 finite numbers, got {p.tolist()}")
    p = p.reshape(3, 4)
    if p[0, 0] <= 0.0 or p[1, 1] <= 0.0:
        raise ValueError(f"CameraInfo.p has a non-positive focal length (fx={p[0, 0]}, fy={p[1, 1]})")
    return p


def left_offset_note(left: CameraInfo) -> Optional[str]:
    """A sentence when the left CameraInfo's ``P`` has Tx / Ty != 0 (ROS says 0 for the reference camera)."""
    tx, ty = float(left.p[3]), float(left.p[7])
    if tx == 0.0 and ty == 0.0:
        return None
    fx = float(left.p[0]) or 1.0
    return (f"left CameraInfo P has Tx = {tx:.6g} (Ty = {ty:.6g}), i.e. an offset of {-tx / fx:.4f} m: ROS "
            "expects 0 for the left camera (TF gives its frame). Using Tx = 0 and the baseline from the "
            "difference of the two Tx; fix the camera driver (e.g. KITTI's P_rect_20 copied as is)")


def stereo_calibration(
    left: CameraInfo, right: CameraInfo, *, left_size: Optional[Tuple[int, int]] = None
) -> Tuple[np.ndarray, np.ndarray, float]:
    """Left/right projections and the stereo baseline from two CameraInfos.

    Args:
        left: CameraInfo of the left (reference) camera.
        right: CameraInfo of the right camera; ``p[0,3]`` (Tx = -fx * B) must be non-zero.
        left_size: (height, width) of the left image, checked against ``left.height/width`` when they are set.

    Returns:
        (P_left 3x4, P_right 3x4, baseline B in metres, > 0). As ROS defines them: the left projection maps
        points of the LEFT camera's frame (its Tx = Ty = 0) and the right one has Tx = -fx * B. A left
        CameraInfo with Tx != 0 (KITTI's P_rect_20 copied as is) keeps its baseline (the difference of the two
        Tx) but returns with Tx = 0 (:func:`left_offset_note` says so once per node).

    Raises:
        ValueError: zero focal length, missing Tx, negative baseline, or a CameraInfo size that disagrees
            with the image.
    """
    p_l = projection_from_camera_info(left)
    p_r = projection_from_camera_info(right)
    if p_r[0, 3] == 0.0 and p_l[0, 3] == 0.0:
        raise ValueError("right CameraInfo.p[3] (Tx = -fx * baseline) is 0: the stereo baseline is missing")
    baseline = baseline_from_projections(p_l, p_r)
    if left_size is not None and left.height and left.width:
        if (int(left.height), int(left.width)) != tuple(left_size):
            raise ValueError(
                f"left CameraInfo size {left.height}x{left.width} differs from the image {left_size[0]}x{left_size[1]}"
            )
    if p_l[0, 3] != 0.0 or p_l[1, 3] != 0.0:  # e.g. KITTI's P_rect_20: offsets from cam0, not from this camera
        p_l, p_r = p_l.copy(), p_r.copy()
        p_l[:2, 3] = 0.0
        p_r[0, 3], p_r[1, 3] = -p_r[0, 0] * baseline, 0.0
    return p_l, p_r, baseline
