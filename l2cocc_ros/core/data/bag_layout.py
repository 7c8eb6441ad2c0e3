"""How a KITTI sequence looks as a rosbag2 (written by ``l2cocc kitti2bag``, read by ``replay``, ``score`` and the
demo): topic and frame names, and the stamp of each frame (docs/interfaces.md, "Camera conventions")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l2cocc_ros.core.stamps import seconds_to_ns

__all__ = ["DEFAULT_START_S", "BagNames", "frame_stamp_ns"]

DEFAULT_START_S = 1.0  # stamp 0 means "latest" to TF, so KITTI's times (from 0.0) are shifted by this


@dataclass(frozen=True)
class BagNames:
    """Topic and frame names of a KITTI bag (the de-facto convention by default)."""

    left_image: str = "/kitti/camera_color_left/image_raw"
    left_info: str = "/kitti/camera_color_left/camera_info"
    right_image: str = "/kitti/camera_color_right/image_raw"
    right_info: str = "/kitti/camera_color_right/camera_info"
    pointcloud: str = "/kitti/velodyne_points"
    world_frame: str = "world"
    base_frame: str = "base_link"
    velodyne_frame: str = "velodyne"
    cam0_frame: str = "camera_gray_left"
    left_frame: str = "camera_color_left"
    right_frame: str = "camera_color_right"


def frame_stamp_ns(times_s: np.ndarray, start_s: float = DEFAULT_START_S) -> np.ndarray:
    """Bag stamps (int64 ns) of frames whose ``times.txt`` entries are ``times_s``."""
    return seconds_to_ns(np.asarray(times_s, dtype=np.float64) + start_s)
