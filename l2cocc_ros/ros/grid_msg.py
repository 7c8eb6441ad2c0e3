"""numpy <-> ``l2cocc_ros/msg/SemanticVoxelGrid``: the one place where a label volume becomes a message.

The message layout is documented in ``msg/SemanticVoxelGrid.msg``: ``labels`` is the (X, Y, Z) uint8 volume
flattened row-major (x slowest, z fastest, as SemanticKITTI's voxel files), ``origin`` is the pose of the
grid's lower corner (``GridSpec.lower``, identity orientation), the class table travels with the grid.

Big fields are filled from numpy in one copy (``array.array.frombytes``) and read back with
``np.frombuffer`` (zero-copy), never element by element (reference/ros2-toolchain.md §3.3): a
256x256x32 grid converts in well under a millisecond each way.
"""
from __future__ import annotations

import array
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from l2cocc_ros.core.classes import IGNORE, ClassTable
from l2cocc_ros.core.grid import GridSpec
from l2cocc_ros.core.stamps import stamp_to_tuple
from l2cocc_ros.msg import SemanticVoxelGrid

__all__ = ["GridData", "grid_to_msg", "msg_to_grid"]

INDEX_ORDER = "xyz"  # SemanticVoxelGrid.INDEX_ORDER_XYZ: x slowest, z fastest
_IDENTITY = (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class GridData:
    """A decoded SemanticVoxelGrid.

    Attributes:
        labels: (X, Y, Z) uint8 class ids (0 = empty, 255 = unknown). A view on the message's buffer
            (``np.frombuffer``): copy it before changing it if the message is kept.
        confidence: (X, Y, Z) float32 in [0, 1], or None when the message carries none.
        grid: geometry; ``grid.lower`` is the position of the grid's lower corner in ``frame_id``.
        orientation: (x, y, z, w) quaternion of the grid axes in ``frame_id`` (identity for our grids).
        class_names: ``class_names[c]`` is the name of class id c.
        colors: (C, 3) uint8 RGB colour of each class.
        stamp: (sec, nanosec) of the input images the grid was computed from.
        frame_id: the grid frame.
        model_variant: e.g. "l2cocc-c", "l2cocc-d", "l2cocc-l".
        model_name: checkpoint or preset name.
    """

    labels: np.ndarray
    confidence: Optional[np.ndarray]
    grid: GridSpec
    orientation: Tuple[float, float, float, float]
    class_names: Tuple[str, ...]
    colors: np.ndarray
    stamp: Tuple[int, int]
    frame_id: str
    model_variant: str
    model_name: str

    def matches_table(self, table: ClassTable) -> bool:
        """True if the grid's class names and colours equal those of ``table``."""
        return self.class_names == tuple(table.names) and np.array_equal(self.colors, table.colors_rgb)


def _check_label_values(labels: np.ndarray, num_classes: int, field: str) -> None:
    """Raise if a label is neither a class id < num_classes nor 255 (unknown)."""
    if labels.size == 0 or int(labels.max()) < num_classes:
        return
    bad = (labels >= num_classes) & (labels != IGNORE)
    if bad.any():
        value = int(labels[bad].flat[0])
        raise ValueError(f"{field}: value {value} is neither a class id (< {num_classes}) nor {IGNORE} (unknown)")


def _uint8_array(data: np.ndarray) -> array.array:
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(data, dtype=np.uint8).reshape(-1).data)
    return out


def grid_to_msg(
    labels: np.ndarray,
    *,
    stamp: Any,
    frame_id: str,
    grid: GridSpec,
    table: ClassTable,
    model_variant: str,
    model_name: str,
    confidence: Optional[np.ndarray] = None,
) -> SemanticVoxelGrid:
    """Build a SemanticVoxelGrid from a label volume.

    Args:
        labels: (X, Y, Z) uint8 class ids, (X, Y, Z) == ``grid.dims``; 0 = empty, 255 = unknown.
        stamp: stamp of the input images (``builtin_interfaces/Time``, ``rclpy.time.Time`` or (sec, nanosec)).
        frame_id: the grid frame (header.frame_id).
        grid: grid geometry; the origin pose is ``grid.lower`` with identity orientation.
        table: class table whose names and RGB colours go into the message.
        model_variant: which model produced the grid, e.g. "l2cocc-d".
        model_name: checkpoint or preset name.
        confidence: optional (X, Y, Z) float probabilities in [0, 1].

    Returns:
        The message (labels and confidence filled with one buffer copy each).

    Raises:
        ValueError: wrong dtype/shape of ``labels`` or ``confidence``, a label that is not a class id of
            ``table`` nor 255, confidence outside [0, 1], or an empty ``frame_id`` (the message names the field).
    """
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8:
        got = labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__
        raise ValueError(f"labels: expected a uint8 numpy array, got {got}")
    if labels.shape != tuple(grid.dims):
        raise ValueError(f"labels: shape {labels.shape} does not match grid dims {tuple(grid.dims)}")
    _check_label_values(labels, table.num_classes, "labels")
    if not frame_id:
        raise ValueError("frame_id: must not be empty")
    colors = np.asarray(table.colors_rgb)
    if colors.shape != (table.num_classes, 3):
        raise ValueError(f"table.colors_rgb: expected shape ({table.num_classes}, 3), got {colors.shape}")

    msg = SemanticVoxelGrid()
    sec, nsec = stamp_to_tuple(stamp)
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nsec
    msg.header.frame_id = frame_id
    msg.origin.position.x, msg.origin.position.y, msg.origin.position.z = (float(v) for v in grid.lower)
    (msg.origin.orientation.x, msg.origin.orientation.y,
     msg.origin.orientation.z, msg.origin.orientation.w) = _IDENTITY
    msg.voxel_size = float(grid.voxel_size)
    msg.size_x, msg.size_y, msg.size_z = (int(n) for n in grid.dims)
    msg.index_order = INDEX_ORDER
    msg.labels = _uint8_array(labels)  # C order of (X, Y, Z) = x slowest, z fastest
    if confidence is not None:
        conf = np.asarray(confidence)
        if conf.shape != labels.shape:
            raise ValueError(f"confidence: shape {conf.shape} does not match labels {labels.shape}")
        conf = np.ascontiguousarray(conf, dtype=np.float32)
        if conf.size and not (float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0):  # also catches NaN
            raise ValueError("confidence: values must lie in [0, 1]")
        buf = array.array("f")
        buf.frombytes(conf.reshape(-1).view(np.uint8).data)  # both native byte order
        msg.confidence = buf
    msg.class_names = list(table.names)
    msg.class_colors = _uint8_array(colors)
    msg.model_variant = model_variant
    msg.model_name = model_name
    return msg


def msg_to_grid(msg: SemanticVoxelGrid) -> GridData:
    """Decode a SemanticVoxelGrid (zero-copy for labels and confidence).

    Raises:
        ValueError: unsupported ``index_order``, non-positive sizes or voxel size, ``labels``/``confidence``
            length not equal to size_x * size_y * size_z, ``class_colors`` length not 3 * len(class_names),
            or a label that is neither a listed class id nor 255 (the message names the field).
    """
    if msg.index_order != INDEX_ORDER:
        raise ValueError(f"index_order: only {INDEX_ORDER!r} (x slowest, z fastest) is supported, got {msg.index_order!r}")
    dims = (int(msg.size_x), int(msg.size_y), int(msg.size_z))
    if min(dims) <= 0:
        raise ValueError(f"size_x/size_y/size_z: all must be > 0, got {dims}")
    voxel = float(msg.voxel_size)
    if not (math.isfinite(voxel) and voxel > 0.0):
        raise ValueError(f"voxel_size: must be a positive finite number, got {voxel}")
    n = dims[0] * dims[1] * dims[2]
    labels = np.frombuffer(msg.labels, dtype=np.uint8)
    if labels.size != n:
        raise ValueError(f"labels: {labels.size} values for size {dims[0]}x{dims[1]}x{dims[2]} = {n}")
    labels = labels.reshape(dims)
    confidence = None
    if len(msg.confidence):
        confidence = np.frombuffer(msg.confidence, dtype=np.float32)
        if confidence.size != n:
            raise ValueError(f"confidence: {confidence.size} values, expected 0 or {n}")
        confidence = confidence.reshape(dims)
    names = tuple(msg.class_names)
    colors = np.frombuffer(msg.class_colors, dtype=np.uint8)
    if colors.size != 3 * len(names):
        raise ValueError(f"class_colors: {colors.size} values for {len(names)} class_names, expected {3 * len(names)}")
    _check_label_values(labels, len(names), "labels")
    p, q = msg.origin.position, msg.origin.orientation
    return GridData(
        labels=labels,
        confidence=confidence,
        grid=GridSpec(lower=(float(p.x), float(p.y), float(p.z)), voxel_size=voxel, dims=dims),
        orientation=(float(q.x), float(q.y), float(q.z), float(q.w)),
        class_names=names,
        colors=colors.reshape(len(names), 3),
        stamp=(int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)),
        frame_id=msg.header.frame_id,
        model_variant=msg.model_variant,
        model_name=msg.model_name,
    )
