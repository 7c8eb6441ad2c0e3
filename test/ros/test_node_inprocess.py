"""In-process graph test (discovery OFF): synthetic stereo + CameraInfo + static TF into l2cocc_node; the grid's
labels equal the engine's output for the same arrays, markers match the grid, diagnostics and debug topics flow."""
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float64
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from l2cocc_ros.msg import SemanticVoxelGrid
from l2cocc_ros.ros.grid_msg import msg_to_grid
from l2cocc_ros.ros.markers import build_marker_array
from l2cocc_ros.ros.node import L2COccNode
from l2cocc_ros.ros.qos import OUTPUT_QOS, TF_STATIC_QOS

from node_helpers import make_frame, parameters, stamp_of, static_tf

TOPICS = ["/l2cocc_node/input/left/image", "/l2cocc_node/input/left/camera_info",
          "/l2cocc_node/input/right/image", "/l2cocc_node/input/right/camera_info"]
TYPES = [Image, CameraInfo, Image, CameraInfo]


@pytest.fixture
def graph():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = L2COccNode(context=ctx, parameter_overrides=parameters())
    feeder = rclpy.create_node("feeder", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(feeder)
    try:
        yield ctx, node, feeder, ex
    finally:
        ex.shutdown()
        node.destroy_node()
        feeder.destroy_node()
        rclpy.shutdown(context=ctx)


def spin_until(ex, cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        ex.spin_once(timeout_sec=0.05)
    return cond()


def test_grid_equals_engine_output_and_markers_match(graph):
    ctx, node, feeder, ex = graph
    got = {"grid": [], "markers": [], "diag": [], "proc": [], "lat": [], "cyc": []}
    feeder.create_subscription(SemanticVoxelGrid, "/l2cocc_node/output/semantic_grid", got["grid"].append, OUTPUT_QOS)
    feeder.create_subscription(MarkerArray, "/l2cocc_node/output/markers", got["markers"].append, OUTPUT_QOS)
    feeder.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
    feeder.create_subscription(Float64, "/l2cocc_node/debug/processing_time_ms", got["proc"].append, OUTPUT_QOS)
    feeder.create_subscription(Float64, "/l2cocc_node/debug/pipeline_latency_ms", got["lat"].append, OUTPUT_QOS)
    feeder.create_subscription(Float64, "/l2cocc_node/debug/cyclic_time_ms", got["cyc"].append, OUTPUT_QOS)
    feeder.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(static_tf())
    pubs = [feeder.create_publisher(t, topic, 5) for t, topic in zip(TYPES, TOPICS)]
    spin_until(ex, lambda: node.tf.buffer.can_transform("velodyne", "camera_color_left"), 5.0)

    frames = [make_frame(stamp_of(100.0 + i * 0.1), seed=i) for i in range(2)]
    for i, frame in enumerate(frames):
        for pub, msg in zip(pubs, frame.msgs):
            pub.publish(msg)
        assert spin_until(ex, lambda: len(got["grid"]) > i, 90.0), node.status.snapshot()
    assert spin_until(ex, lambda: len(got["markers"]) == 2 and len(got["lat"]) == 2 and got["diag"] and got["cyc"], 10.0)

    t_grid_cam = node.tf.lookup("velodyne", "camera_color_left", 0, 0.0)
    for frame, grid_msg, markers in zip(frames, got["grid"], got["markers"]):
        grid = msg_to_grid(grid_msg)
        expected = node.engine.infer(frame.stereo_frame(t_grid_cam))
        np.testing.assert_array_equal(grid.labels, expected.labels)
        assert grid.frame_id == "velodyne" and grid.stamp == (frame.msgs[0].header.stamp.sec,
                                                             frame.msgs[0].header.stamp.nanosec)
        assert grid.model_variant == "l2cocc-c" and grid.matches_table(node.table)
        # markers: DELETEALL then one cube list per class of the (2x downsampled) grid, same bytes as built
        reference = build_marker_array(expected.labels, stamp=grid_msg.header.stamp, frame_id="velodyne",
                                       grid=node.engine.cfg.grid, table=node.table, options=node.markers.options)
        assert markers.markers[0].action == Marker.DELETEALL
        assert [(m.ns, len(m.points)) for m in markers.markers] == [(m.ns, len(m.points)) for m in reference.markers]
        assert markers == deserialize_message(serialize_message(reference), MarkerArray)  # float32 colours
    assert grid_msg.header.stamp != got["grid"][0].header.stamp  # two distinct frames
    snap = node.status.snapshot()
    assert snap["frames_processed"] == 2 and snap["rejected_total"] == 0 and snap["tf"] == "ok"
    assert all(m.data > 0 for m in got["proc"]) and all(m.data > 0 for m in got["lat"])
    assert len(got["cyc"]) == 1 and got["cyc"][0].data >= got["proc"][1].data * 0.5  # one interval between 2 grids
    status = got["diag"][-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["frames_in"]) >= 1 and status.hardware_id == "/l2cocc_node"


def test_markers_are_skipped_without_subscribers(graph):
    ctx, node, feeder, ex = graph
    grids = []
    feeder.create_subscription(SemanticVoxelGrid, "/l2cocc_node/output/semantic_grid", grids.append, OUTPUT_QOS)
    feeder.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(static_tf())
    pubs = [feeder.create_publisher(t, topic, 5) for t, topic in zip(TYPES, TOPICS)]
    for pub, msg in zip(pubs, make_frame(stamp_of(5.0)).msgs):
        pub.publish(msg)
    assert spin_until(ex, lambda: grids, 90.0)
    assert node._last_marker_t == -np.inf  # the marker encoder never ran
