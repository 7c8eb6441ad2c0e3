"""The node's inputs by name, and the core frame built from them (the one ROS -> Frame adapter).

The synchronizer hands over one :class:`SyncedInputs` (left/right Image and CameraInfo, plus the cloud for the
LiDAR variant); :func:`frame_from_inputs` decodes the messages, looks up the transforms to the grid frame and
builds the core :class:`~l2cocc_ros.core.frame.StereoFrame` or :class:`~l2cocc_ros.core.frame.LidarFrame`,
whose constructor is the one place where the arrays are checked. Every refusal is an :class:`InputRejected`
carrying the kind the node counts (``encoding``, ``size_mismatch``, ``image_size``, ``camera_info``,
``pointcloud``, ``tf``, ``stamp``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from l2cocc_ros.core.frame import Frame, FrameError, LidarFrame, StereoFrame
from l2cocc_ros.core.grid import GridSpec
from l2cocc_ros.core.stamps import stamp_to_ns
from l2cocc_ros.core.transforms import transform_points
from l2cocc_ros.ros.image import image_to_rgb, left_offset_note, stereo_calibration
from l2cocc_ros.ros.pointcloud import read_xyzi
from l2cocc_ros.ros.qos import SENSOR_QOS

__all__ = ["InputRejected", "SyncedInputs", "input_topics", "frame_from_inputs", "Lookup"]

#: (source frame id, stamp [ns]) -> T_grid_from_source 4x4; raises InputRejected("tf", ...) when unavailable
Lookup = Callable[[str, int], np.ndarray]

#: the frame field a core FrameError names -> the rejection kind the node counts
_KIND_OF_FIELD = {"left": "size_mismatch", "right": "size_mismatch", "P_left": "camera_info",
                  "baseline_m": "camera_info", "T_grid_from_camera": "tf", "stamp_ns": "stamp",
                  "points": "pointcloud"}


class InputRejected(Exception):
    """One synchronized input set is refused.

    Attributes:
        kind: the rejection counter it lands in (see the module docstring).
        reason: one sentence naming what is wrong.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class SyncedInputs(NamedTuple):
    """One approximately synchronized set, by name (the synchronizer's output)."""

    left_image: Image
    left_info: CameraInfo
    right_image: Image
    right_info: CameraInfo
    cloud: Optional[PointCloud2] = None

    @property
    def stamp(self):
        """The set's stamp (builtin_interfaces/Time): the left image's."""
        return self.left_image.header.stamp

    @property
    def stamp_ns(self) -> int:
        """The set's stamp [ns]."""
        return stamp_to_ns(self.left_image.header.stamp)


def input_topics(with_cloud: bool) -> Dict[str, Tuple[type, str, Any]]:
    """The node's synchronized inputs: field of :class:`SyncedInputs` -> (message type, topic, QoS)."""
    topics = {"left_image": (Image, "~/input/left/image", SENSOR_QOS),
              "left_info": (CameraInfo, "~/input/left/camera_info", SENSOR_QOS),
              "right_image": (Image, "~/input/right/image", SENSOR_QOS),
              "right_info": (CameraInfo, "~/input/right/camera_info", SENSOR_QOS)}
    if with_cloud:
        topics["cloud"] = (PointCloud2, "~/input/pointcloud", SENSOR_QOS)
    return topics


def frame_from_inputs(msgs: SyncedInputs, lookup: Lookup, *, cameras: bool, min_width: int = 1,
                      grid: Optional[GridSpec] = None, note: Callable[[str, str], None] = lambda key, text: None
                      ) -> Frame:
    """Decode one synchronized set into the core frame.

    Args:
        msgs: the set; ``cloud`` is required when ``cameras`` is False.
        lookup: the node's TF lookup (grid frame <- a source frame at the set's stamp).
        cameras: build a :class:`StereoFrame` (camera variants) from the images and CameraInfos; otherwise a
            :class:`LidarFrame` from the cloud alone.
        min_width: the narrowest image the stereo matching can use [px] (wider than its disparity range).
        grid: the output grid; a cloud needs at least 2 points inside its volume (the LiDAR branch's batch
            statistics need 2), checked when given.
        note: ``note(key, sentence)`` for input that is used but is not what ROS specifies (the node logs each
            key once).

    Returns:
        The validated frame, stamped with the left image's stamp; clouds are moved into the grid frame.

    Raises:
        InputRejected: any refused input, with its kind.
    """
    stamp_ns = msgs.stamp_ns
    try:
        if not cameras:
            return LidarFrame(_points_in_grid(msgs.cloud, lookup, stamp_ns, grid), stamp_ns)
        try:
            left, right = image_to_rgb(msgs.left_image), image_to_rgb(msgs.right_image)
        except ValueError as exc:
            raise InputRejected("encoding", str(exc)) from None
        if left.shape != right.shape:  # before the calibration: its size check is against the left image
            raise InputRejected("size_mismatch", f"left image {left.shape[:2]} != right image {right.shape[:2]}")
        if left.shape[1] < min_width:
            raise InputRejected("image_size", f"images of {left.shape[1]}x{left.shape[0]} px are too small: stereo "
                                f"matching needs at least {min_width} px of width (more than its disparity range)")
        try:
            p_left, _, baseline = stereo_calibration(msgs.left_info, msgs.right_info, left_size=left.shape[:2])
        except ValueError as exc:
            raise InputRejected("camera_info", str(exc)) from None
        offset = left_offset_note(msgs.left_info)
        if offset:
            note("left_tx", offset)
        t_grid_camera = lookup(msgs.left_image.header.frame_id, stamp_ns)
        points = None if msgs.cloud is None else _points_in_grid(msgs.cloud, lookup, stamp_ns, grid)
        return StereoFrame(left, right, p_left, baseline, t_grid_camera, stamp_ns, points)
    except FrameError as exc:
        raise InputRejected(_KIND_OF_FIELD.get(exc.field, "inference"), str(exc)) from None


def _points_in_grid(cloud: Optional[PointCloud2], lookup: Lookup, stamp_ns: int,
                    grid: Optional[GridSpec]) -> np.ndarray:
    if cloud is None:
        raise InputRejected("pointcloud", "no point cloud in the synchronized set")
    try:
        pts, n_bad = read_xyzi(cloud)
    except ValueError as exc:
        raise InputRejected("pointcloud", str(exc)) from None
    if len(pts) == 0:
        raise InputRejected("pointcloud", f"no finite point ({n_bad} NaN/inf of {cloud.width * cloud.height})")
    pts = transform_points(lookup(cloud.header.frame_id, stamp_ns), pts)
    if grid is not None:
        lower, upper = np.asarray(grid.lower, np.float32), np.asarray(grid.upper, np.float32)
        inside = int(np.count_nonzero(np.all((pts[:, :3] >= lower) & (pts[:, :3] < upper), axis=1)))
        if inside < 2:
            box = ", ".join(f"{a} {lo:g}..{hi:g}" for a, lo, hi in zip("xyz", grid.lower, grid.upper))
            raise InputRejected("pointcloud", f"{inside} of {len(pts)} points lie inside the grid volume ({box} m): "
                                "at least 2 are needed (is the cloud's frame_id or TF right?)")
    return pts
