"""Shared pieces of the node tests: parameters from the shipped YAML, synthetic stereo frames, static TF."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
from rclpy.parameter import Parameter

from l2cocc_ros.core.frame import StereoFrame
from l2cocc_ros.core.stamps import stamp_to_ns
from l2cocc_ros.core.transforms import make_transform
from l2cocc_ros.ros.image import numpy_to_image
from l2cocc_ros.ros.params import load_param_file
from l2cocc_ros.ros.tf import transform_msg_from_matrix

REPO = Path(__file__).resolve().parents[2]
NODE_YAML = REPO / "config" / "l2cocc_node.param.yaml"
COMMON_YAML = REPO / "config" / "common.param.yaml"

H, W, FX, BASELINE, SHIFT = 64, 200, 180.0, 0.54, 12
P_LEFT = np.array([[FX, 0, W / 2, 0], [0, FX, H / 2, 0], [0, 0, 1, 0]])
P_RIGHT = P_LEFT.copy()
P_RIGHT[0, 3] = -FX * BASELINE
# camera optical frame (z forward, x right, y down) 1.7 m above and 0.3 m ahead of the LiDAR
T_VELO_FROM_CAM = make_transform((0.3, 0.0, -0.1), (-0.5, 0.5, -0.5, 0.5))

# the tiny camera model with random weights, small SGBM: what every node test runs
TEST_OVERRIDES = {
    "variant": "c", "preset": "tiny_l2cocc_c", "checkpoint": "", "allow_random_weights": True, "device": "cpu",
    "precision": "fp32", "stereo.num_disparities": 32, "sync.slop_s": 0.005, "tf.timeout_s": 0.2,
    "markers.downsample": 2, "markers.max_rate_hz": 100.0, "diagnostics.period_s": 0.2,
}


def param_values(**overrides) -> Dict[str, object]:
    """Shipped YAML values (both files) with the test overrides and ``overrides`` applied."""
    values = {**load_param_file(str(NODE_YAML)), **load_param_file(str(COMMON_YAML))}
    values.update(TEST_OVERRIDES)
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return values


def parameters(**overrides) -> List[Parameter]:
    """``param_values`` as rclpy Parameters (for ``parameter_overrides``)."""
    return [Parameter(k, value=v) for k, v in param_values(**overrides).items()]


def ros_args(**overrides) -> List[str]:
    """The same parameters as ``--ros-args -p name:=value`` arguments (for a child process)."""
    import yaml

    out = ["--ros-args"]
    for k, v in param_values(**overrides).items():
        out += ["-p", f"{k}:={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return out


@dataclass
class Frame:
    left: np.ndarray
    right: np.ndarray
    msgs: tuple  # left Image, left CameraInfo, right Image, right CameraInfo

    def stereo_frame(self, t_grid_cam: np.ndarray) -> StereoFrame:
        """The core frame of this set (what the node should build from the messages), for expected grids."""
        left, left_info, _, right_info = self.msgs
        return StereoFrame.from_projections(self.left, self.right, np.reshape(left_info.p, (3, 4)),
                                            np.reshape(right_info.p, (3, 4)), t_grid_cam,
                                            stamp_to_ns(left.header.stamp))


def make_frame(stamp, seed: int = 0, *, frame_id: str = "camera_color_left") -> Frame:
    """A textured stereo pair with constant disparity SHIFT (depth FX * BASELINE / SHIFT = 8.1 m)."""
    from sensor_msgs.msg import CameraInfo

    rng = np.random.default_rng(seed)
    wide = rng.integers(0, 256, (H, W + SHIFT, 3), dtype=np.uint8)
    left, right = np.ascontiguousarray(wide[:, :W]), np.ascontiguousarray(wide[:, SHIFT:])
    msgs = []
    for img, p, frame in ((left, P_LEFT, frame_id), (right, P_RIGHT, "camera_color_right")):
        info = CameraInfo(height=H, width=W)
        info.header.stamp, info.header.frame_id = stamp, frame
        info.p = [float(v) for v in p.ravel()]
        msgs += [numpy_to_image(img, "rgb8", stamp=stamp, frame_id=frame), info]
    return Frame(left, right, tuple(msgs))


def static_tf():
    """/tf_static message: velodyne -> camera_color_left."""
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=[transform_msg_from_matrix(T_VELO_FROM_CAM, "velodyne", "camera_color_left")])


def stamp_of(seconds: float):
    from builtin_interfaces.msg import Time

    sec = int(seconds)
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)))
