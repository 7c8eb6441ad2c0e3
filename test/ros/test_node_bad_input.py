"""Bad input never kills the node: each kind is rejected, counted, logged (throttled) and reported in
/diagnostics, and the next good frame still gives a grid."""
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from l2cocc_ros.core.frame import LidarFrame
from l2cocc_ros.msg import SemanticVoxelGrid
from l2cocc_ros.ros.grid_msg import msg_to_grid
from l2cocc_ros.ros.image import numpy_to_image
from l2cocc_ros.ros.node import L2COccNode
from l2cocc_ros.ros.pointcloud import create_cloud_xyzi
from l2cocc_ros.ros.qos import OUTPUT_QOS, TF_STATIC_QOS

from node_helpers import make_frame, parameters, stamp_of, static_tf

BASE = "/l2cocc_node/input/"
TOPICS = [BASE + "left/image", BASE + "left/camera_info", BASE + "right/image", BASE + "right/camera_info"]
TYPES = [Image, CameraInfo, Image, CameraInfo]


class Graph:
    def __init__(self, **overrides):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = L2COccNode(context=self.ctx, parameter_overrides=parameters(**overrides))
        self.feeder = rclpy.create_node("feeder", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.ex.add_node(self.feeder)
        self.grids, self.diags = [], []
        self.feeder.create_subscription(SemanticVoxelGrid, "/l2cocc_node/output/semantic_grid", self.grids.append, OUTPUT_QOS)
        self.feeder.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)
        self.feeder.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(static_tf())
        topics = TOPICS + ([BASE + "pointcloud"] if overrides.get("variant") == "l" else [])
        types = TYPES + ([PointCloud2] if overrides.get("variant") == "l" else [])
        self.pubs = [self.feeder.create_publisher(t, topic, 5) for t, topic in zip(types, topics)]
        self.spin_until(lambda: self.node.tf.buffer.can_transform("velodyne", "camera_color_left"), 5.0)

    def spin_until(self, cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cond():
            self.ex.spin_once(timeout_sec=0.05)
        return cond()

    def send(self, msgs, expect):
        """Publish one set and wait until it is rejected as ``expect`` (or published, expect=None)."""
        before = dict(self.node.status.rejected)
        n_grids = len(self.grids)
        for pub, msg in zip(self.pubs, msgs):
            pub.publish(msg)
        if expect is None:
            assert self.spin_until(lambda: len(self.grids) > n_grids, 90.0), \
                (self.node.status.snapshot(), dict(self.node.status.rejected), self.node.status.last_rejection)
        else:
            assert self.spin_until(lambda: self.node.status.rejected[expect] > before.get(expect, 0), 30.0), \
                (expect, dict(self.node.status.rejected), self.node.status.last_rejection)
            assert len(self.grids) == n_grids

    def latest_status(self):
        self.diags.clear()
        assert self.spin_until(lambda: self.diags, 5.0)
        return self.diags[-1].status[0]

    def close(self):
        self.ex.shutdown()
        self.node.destroy_node()
        self.feeder.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def with_stamp(msgs, t):
    for m in msgs:
        m.header.stamp = stamp_of(t)
    return msgs


def test_each_bad_camera_input_is_rejected_and_reported(graph):
    g = graph
    g.send(make_frame(stamp_of(10.0)).msgs, None)
    status = g.latest_status()  # no rejection yet: OK, or WARN only for slow processing (CPU: > 200 ms)
    assert status.level == DiagnosticStatus.OK or (status.level == DiagnosticStatus.WARN
                                                   and status.message.startswith("processing took"))

    left, linfo, right, rinfo = make_frame(stamp_of(12.5)).msgs
    bad = Image(height=left.height, width=left.width, encoding="yuv422", step=left.width * 2)
    bad.data = bytes(left.width * 2 * left.height)
    # stamped 2.5 s ahead: a rejected set must not become the "last frame" that later valid ones are compared to
    g.send(with_stamp([bad, linfo, right, rinfo], 12.5), "encoding")

    left, linfo, right, rinfo = make_frame(stamp_of(10.2)).msgs
    narrow = numpy_to_image(np.zeros((64, 100, 3), np.uint8), "rgb8", stamp=stamp_of(10.2), frame_id="camera_color_right")
    g.send([left, linfo, narrow, rinfo], "size_mismatch")

    left, linfo, right, rinfo = make_frame(stamp_of(10.3)).msgs
    linfo.p = [0.0] * 12
    g.send([left, linfo, right, rinfo], "camera_info")

    left, linfo, right, rinfo = make_frame(stamp_of(10.4)).msgs
    rinfo.p = list(linfo.p)  # right Tx missing
    g.send([left, linfo, right, rinfo], "camera_info")
    status = g.latest_status()
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.WARN and "camera_info" in status.message
    assert values["rejected.camera_info"] == "2" and values["rejected.encoding"] == "1"

    g.send(make_frame(stamp_of(9.5)).msgs, "stamp_jump_back")

    g.send(make_frame(stamp_of(10.6), frame_id="camera_nowhere").msgs, "tf")
    status = g.latest_status()
    assert status.level == DiagnosticStatus.ERROR and "no camera -> grid transform" in status.message

    # still alive: the next good frame gives a grid, and TF is fine again
    g.send(make_frame(stamp_of(10.7), seed=3).msgs, None)
    snap = g.node.status.snapshot()
    assert snap["frames_processed"] == 2 and snap["tf"] == "ok" and g.node._worker.is_alive()
    assert {k: snap[f"rejected.{k}"] for k in ("encoding", "size_mismatch", "camera_info", "stamp_jump_back", "tf")} == {
        "encoding": 1, "size_mismatch": 1, "camera_info": 2, "stamp_jump_back": 1, "tf": 1}
    assert [msg_to_grid(m).stamp for m in g.grids] == [(10, 0), (10, 700_000_000)]

    # parameters are read-only: a change at run time is refused with a reason
    result = g.node.set_parameters([Parameter("sync.slop_s", value=0.5)])[0]
    assert not result.successful and "read-only" in result.reason


def test_large_jump_back_resets_instead_of_rejecting_forever(graph):
    g = graph
    g.send(make_frame(stamp_of(100.0)).msgs, None)
    g.send(make_frame(stamp_of(99.0)).msgs, "stamp_jump_back")  # 1 s back: rejected (stamp_reset_s = 3)
    g.send(make_frame(stamp_of(20.0)).msgs, None)  # 80 s back: a bag loop, reset and processed
    assert g.node.status.resets == 1


def test_bad_point_clouds_for_the_lidar_variant():
    g = Graph(variant="l", preset="tiny_l2cocc_l")
    try:
        def frame(t, xyzi):
            return make_frame(stamp_of(t)).msgs + (create_cloud_xyzi(Header(stamp=stamp_of(t), frame_id="velodyne"), xyzi),)

        g.send(frame(1.0, np.zeros((0, 4), np.float32)), "pointcloud")
        g.send(frame(1.1, np.full((50, 4), np.nan, np.float32)), "pointcloud")
        bad_layout = frame(1.2, np.zeros((4, 4), np.float32))
        bad_layout[4].point_step = 0
        g.send(bad_layout, "pointcloud")
        rng = np.random.default_rng(0)
        pts = np.column_stack([rng.uniform(0, 50, 3000), rng.uniform(-25, 25, 3000), rng.uniform(-2, 4, 3000),
                               rng.uniform(0, 1, 3000)]).astype(np.float32)
        pts[::7, 1] = np.inf  # some non-finite points are dropped, the rest is used
        g.send(frame(1.3, pts), None)
        expected = g.node.engine.infer(LidarFrame(pts[np.isfinite(pts).all(1)], 1))
        np.testing.assert_array_equal(msg_to_grid(g.grids[-1]).labels, expected.labels)
        assert g.node.status.rejected["pointcloud"] == 3
    finally:
        g.close()


def test_configured_fallback_transform_replaces_a_missing_tf():
    from node_helpers import T_VELO_FROM_CAM
    from l2cocc_ros.core.transforms import quaternion_from_matrix

    g = Graph(tf__use_fallback=True, tf__fallback_translation=[float(v) for v in T_VELO_FROM_CAM[:3, 3]],
              tf__fallback_rotation=list(quaternion_from_matrix(T_VELO_FROM_CAM[:3, :3])))
    try:
        frame = make_frame(stamp_of(3.0), frame_id="camera_without_tf")
        g.send(frame.msgs, None)
        snap = g.node.status.snapshot()
        assert snap["tf"] == "ok" and snap["tf_detail"].startswith("fallback transform") and snap["rejected.tf"] == 0
        expected = g.node.engine.infer(frame.stereo_frame(g.node.config.tf_fallback))
        np.testing.assert_array_equal(msg_to_grid(g.grids[-1]).labels, expected.labels)
    finally:
        g.close()
