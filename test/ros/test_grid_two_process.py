"""Two processes over loopback DDS: a child publishes a 256x256x32 grid, this process receives it intact.

Both sides run with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (and the Fast DDS large-message profile from
scripts/env.sh). Waits are bounded and the child is always killed.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np

from l2cocc_ros.core.classes import semantic_kitti
from l2cocc_ros.core.grid import GridSpec

TOPIC = "/l2cocc_test/semantic_grid"
GRID = GridSpec(lower=(1.25, -30.5, -3.0), voxel_size=0.2, dims=(256, 256, 32))
STAMP = (1700000123, 456789012)
TIMEOUT_S = 30.0

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from l2cocc_ros.core.classes import semantic_kitti
    from l2cocc_ros.core.grid import GridSpec
    from l2cocc_ros.msg import SemanticVoxelGrid
    from l2cocc_ros.ros.grid_msg import grid_to_msg
    from l2cocc_ros.ros.qos import OUTPUT_QOS

    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        sys.exit("child: ROS_AUTOMATIC_DISCOVERY_RANGE must be LOCALHOST")
    if not os.path.isfile(os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")):
        sys.exit("child: FASTDDS_DEFAULT_PROFILES_FILE must name the large-message profile")
    path, topic, lower, sec, nsec = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    labels = np.load(path)
    grid = GridSpec(lower=tuple(float(v) for v in lower.split(",")), voxel_size=0.2, dims=labels.shape)
    msg = grid_to_msg(labels, stamp=(sec, nsec), frame_id="velodyne", grid=grid, table=semantic_kitti(),
                      model_variant="l2cocc-c", model_name="two-process-test")
    rclpy.init()
    node = Node("grid_publisher_child")
    pub = node.create_publisher(SemanticVoxelGrid, topic, OUTPUT_QOS)
    deadline = time.monotonic() + 60.0  # never outlive a crashed test by much
    while rclpy.ok() and time.monotonic() < deadline:
        pub.publish(msg)
        time.sleep(0.1)
    """
)


def _labels() -> np.ndarray:
    rng = np.random.default_rng(2026)
    labels = rng.integers(0, 20, size=GRID.dims, dtype=np.uint8)
    labels[rng.random(GRID.dims) < 0.1] = 255
    labels[0, 0, 0], labels[-1, -1, -1] = 255, 19
    return labels


def test_grid_crosses_process_boundary(tmp_path, ros_child_env, ros_localhost):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from l2cocc_ros.msg import SemanticVoxelGrid
    from l2cocc_ros.ros.grid_msg import msg_to_grid
    from l2cocc_ros.ros.qos import OUTPUT_QOS

    labels = _labels()
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    cmd = [sys.executable, "-P", "-c", CHILD, str(path), TOPIC, ",".join(map(str, GRID.lower)), *map(str, STAMP)]
    child = subprocess.Popen(cmd, env=ros_child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    received = []
    try:
        rclpy.init(context=context)
        node = Node("grid_receiver_test", context=context)
        node.create_subscription(SemanticVoxelGrid, TOPIC, received.append, OUTPUT_QOS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + TIMEOUT_S
        while not received and time.monotonic() < deadline and child.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        node.destroy_node()
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
        child.kill()
        out, _ = child.communicate(timeout=10)
    assert received, f"no grid within {TIMEOUT_S} s (child rc={child.returncode}):\n{out.decode(errors='replace')}"

    data = msg_to_grid(received[0])
    np.testing.assert_array_equal(data.labels, labels)
    assert data.labels.shape == (256, 256, 32)
    assert data.matches_table(semantic_kitti())
    assert data.grid == GRID
    assert data.orientation == (0.0, 0.0, 0.0, 1.0)
    assert data.stamp == STAMP
    assert (data.frame_id, data.model_variant, data.model_name) == ("velodyne", "l2cocc-c", "two-process-test")
