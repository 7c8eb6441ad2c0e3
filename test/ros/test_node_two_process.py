"""Two processes over loopback DDS (discovery LOCALHOST): l2cocc_node (tiny model) in a child process, a
synthetic stereo sequence + /tf_static published from this one. Every frame the node did not drop gives a
grid and a MarkerArray with its stamp; the grid's labels equal the same engine run here on the same arrays.
Once with SGBM, once with ``stereo.backend: msnet3d`` (a weights file in the official layout)."""
import subprocess
import sys
import time

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from l2cocc_ros.core.engine import InferenceEngine
from l2cocc_ros.core.stereo import SGBMStereo
from l2cocc_ros.core.stamps import stamp_to_ns
from l2cocc_ros.msg import SemanticVoxelGrid
from l2cocc_ros.ros.grid_msg import msg_to_grid
from l2cocc_ros.ros.qos import OUTPUT_QOS, TF_STATIC_QOS
from l2cocc_ros.ros.tf import matrix_from_transform_msg

from node_helpers import REPO, make_frame, ros_args, stamp_of, static_tf

NS = "/l2cocc_test_two_process"
TOPICS = [(Image, "input/left/image"), (CameraInfo, "input/left/camera_info"), (Image, "input/right/image"),
          (CameraInfo, "input/right/camera_info")]
N_FRAMES = 4


def test_grid_and_markers_for_every_frame_not_dropped(ros_child_env, ros_localhost):
    _play_and_check(ros_child_env, {}, SGBMStereo(num_disparities=32))


def test_node_with_msnet3d_publishes_grids(ros_child_env, ros_localhost, tmp_path):
    sys.path.insert(0, str(REPO / "test"))
    from msnet_refutil import weight_rule_state_dict

    from l2cocc_ros.core.stereo import get_stereo_backend

    weights = tmp_path / "MSNet3D_rule.ckpt"
    torch.save({"model": {f"module.{k}": v for k, v in weight_rule_state_dict("msnet3d").items()}}, weights)
    _play_and_check(ros_child_env, {"stereo__backend": "msnet3d", "stereo__weights": str(weights)},
                    get_stereo_backend("msnet3d", weights=str(weights)))


def _play_and_check(ros_child_env, overrides, stereo_backend):
    cmd = [sys.executable, "-P", "-m", "l2cocc_ros.ros.node", *ros_args(**overrides), "-r", f"__ns:={NS}"]
    child = subprocess.Popen(cmd, cwd=REPO, env=ros_child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("sequence_player", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    grids, markers, diags = [], [], []
    node.create_subscription(SemanticVoxelGrid, f"{NS}/l2cocc_node/output/semantic_grid", grids.append, OUTPUT_QOS)
    node.create_subscription(MarkerArray, f"{NS}/l2cocc_node/output/markers", markers.append, OUTPUT_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    tf_msg = static_tf()
    node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(tf_msg)
    pubs = [node.create_publisher(t, f"{NS}/l2cocc_node/{topic}", 5) for t, topic in TOPICS]

    def spin_until(cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cond() and child.poll() is None:
            ex.spin_once(timeout_sec=0.05)
        return cond()

    try:
        ready = lambda: all(p.get_subscription_count() > 0 for p in pubs) and node.count_publishers(  # noqa: E731
            f"{NS}/l2cocc_node/output/markers") > 0
        assert spin_until(ready, 60.0), f"node did not come up (exit {child.poll()})"
        spin_until(lambda: False, 1.5)  # let the node's readers match our writers too (discovery is two-sided)
        frames = [make_frame(stamp_of(50.0 + 0.1 * i), seed=i) for i in range(N_FRAMES)]
        for i, frame in enumerate(frames):
            for pub, msg in zip(pubs, frame.msgs):
                pub.publish(msg)
            spin_until(lambda: False, 0.7)  # faster than the node: some frames may be dropped
        snap = {}

        def settled():
            if not diags:
                return False
            snap.update({kv.key: kv.value for kv in diags[-1].status[0].values})
            done = int(snap["frames_processed"]) + int(snap["frames_dropped"])
            return (int(snap["frames_in"]) >= N_FRAMES - 1 and done == int(snap["frames_in"])
                    and len(grids) == int(snap["frames_processed"]))
        assert spin_until(lambda: settled() and len(markers) >= len(grids), 90.0), (snap, len(grids), len(markers))
        spin_until(lambda: False, 1.0)
        assert settled()

        # inputs are best effort (sensor-data QoS), so a set may be lost on the wire; what the node received it
        # accounts for exactly: every synchronized set was processed (grid + markers) or counted as dropped
        sent = [stamp_to_ns(f.msgs[0].header.stamp) for f in frames]
        grid_stamps = [stamp_to_ns(g.header.stamp) for g in grids]
        assert len(grids) + int(snap["frames_dropped"]) == int(snap["frames_in"]) and len(grids) >= 2
        assert set(grid_stamps) <= set(sent) and grid_stamps == sorted(grid_stamps)
        assert [stamp_to_ns(m.markers[0].header.stamp) for m in markers] == grid_stamps  # a MarkerArray per grid

        # content: the same tiny model (seeded random weights) run here on the same arrays
        engine = InferenceEngine.from_preset("tiny_l2cocc_c", seed=0, stereo_backend=stereo_backend)
        first = frames[sent.index(grid_stamps[0])]
        expected = engine.infer(first.stereo_frame(matrix_from_transform_msg(tf_msg.transforms[0].transform))).labels
        grid = msg_to_grid(grids[0])
        np.testing.assert_array_equal(grid.labels, expected)
        arr = markers[0].markers
        assert arr[0].action == Marker.DELETEALL
        shown = {m.ns for m in arr[1:]}
        classes = {int(c) for c in np.unique(expected) if 0 < c < 20}
        assert shown and shown <= {grid.class_names[c] for c in classes}
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        child.terminate()
        try:
            out, _ = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
    assert child.returncode == 0, out[-3000:]
