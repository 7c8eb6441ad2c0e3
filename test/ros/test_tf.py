"""TF buffer: chains, static + dynamic links, interpolation, stamp 0, timeouts, and the listener in-process."""
import os
import threading
import time

import numpy as np
import pytest

from l2cocc_ros.core.transforms import make_transform
from l2cocc_ros.ros.tf import TransformBuffer, TransformUnavailable, transform_msg_from_matrix

S = 1_000_000_000
ROT_Z90 = (0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5))


def test_chain_through_a_common_ancestor():
    buf = TransformBuffer()
    base_from_velo = make_transform((1.0, 0.0, 2.0), (0, 0, 0, 1))
    base_from_cam = make_transform((1.5, 0.2, 1.8), ROT_Z90)
    buf.set_transform("base_link", "velodyne", 0, base_from_velo, static=True)
    buf.set_transform("base_link", "camera", 0, base_from_cam, static=True)
    got = buf.lookup_transform("velodyne", "camera", 5 * S)
    np.testing.assert_allclose(got, np.linalg.inv(base_from_velo) @ base_from_cam, atol=1e-12)
    np.testing.assert_allclose(buf.lookup_transform("camera", "velodyne"), np.linalg.inv(got), atol=1e-12)
    np.testing.assert_array_equal(buf.lookup_transform("camera", "camera"), np.eye(4))


def test_dynamic_link_is_interpolated_and_bounded_in_time():
    buf = TransformBuffer(cache_time=10.0)
    buf.set_transform("world", "base_link", 1 * S, make_transform((0, 0, 0), (0, 0, 0, 1)), static=False)
    buf.set_transform("world", "base_link", 3 * S, make_transform((2, 0, 0), ROT_Z90), static=False)
    buf.set_transform("base_link", "velodyne", 0, make_transform((0, 0, 1), (0, 0, 0, 1)), static=True)
    mid = buf.lookup_transform("world", "velodyne", 2 * S)
    np.testing.assert_allclose(mid[:3, 3], [1.0, 0.0, 1.0], atol=1e-12)
    angle = np.degrees(np.arctan2(mid[1, 0], mid[0, 0]))
    assert angle == pytest.approx(45.0)
    latest = buf.lookup_transform("world", "velodyne", 0)
    np.testing.assert_allclose(latest[:3, 3], [2.0, 0.0, 1.0], atol=1e-12)
    with pytest.raises(TransformUnavailable, match="have 1.000 .. 3.000 s"):
        buf.lookup_transform("world", "velodyne", 4 * S)


def test_old_samples_leave_the_cache_and_out_of_order_samples_are_sorted():
    buf = TransformBuffer(cache_time=2.0)
    for t in (5, 1, 3, 2, 4):
        buf.set_transform("odom", "base", t * S, make_transform((t, 0, 0), (0, 0, 0, 1)), static=False)
    assert buf.lookup_transform("odom", "base", int(3.5 * S))[0, 3] == pytest.approx(3.5)
    with pytest.raises(TransformUnavailable):
        buf.lookup_transform("odom", "base", int(2.5 * S))  # 1 and 2 s are older than 5 - 2 s
    buf.clear_dynamic()
    with pytest.raises(TransformUnavailable, match="does not exist"):
        buf.lookup_transform("odom", "base", 0)


def test_unknown_and_unconnected_frames():
    buf = TransformBuffer()
    buf.set_transform("a", "b", 0, np.eye(4), static=True)
    buf.set_transform("c", "d", 0, np.eye(4), static=True)
    with pytest.raises(TransformUnavailable, match="'x' does not exist"):
        buf.lookup_transform("a", "x")
    with pytest.raises(TransformUnavailable, match="not connected"):
        buf.lookup_transform("a", "d")
    with pytest.raises(ValueError, match="finite 4x4"):
        buf.set_transform("a", "e", 0, np.full((4, 4), np.nan), static=True)


def test_lookup_waits_up_to_the_timeout():
    buf = TransformBuffer()
    t0 = time.monotonic()
    with pytest.raises(TransformUnavailable):
        buf.lookup_transform("a", "b", 0, timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 1.0
    timer = threading.Timer(0.1, lambda: buf.set_transform("a", "b", 0, make_transform((1, 2, 3), (0, 0, 0, 1)), static=True))
    timer.start()
    t0 = time.monotonic()
    got = buf.lookup_transform("a", "b", 0, timeout=2.0)
    assert time.monotonic() - t0 < 1.0
    np.testing.assert_array_equal(got[:3, 3], [1, 2, 3])
    timer.join()


def test_listener_reads_tf_static_and_tf_in_process():
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from l2cocc_ros.ros.tf import TfLookup

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("tf_test", context=ctx)
        tf = TfLookup(node, use_tf2_ros=False)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub_static = node.create_publisher(TFMessage, "/tf_static", latched)
        pub = node.create_publisher(TFMessage, "/tf", 10)
        cam = make_transform((0.3, -0.1, -0.2), (0.5, -0.5, 0.5, -0.5))
        pub_static.publish(TFMessage(transforms=[transform_msg_from_matrix(cam, "velodyne", "camera_left")]))
        stamp = rclpy.time.Time(seconds=7).to_msg()
        pub.publish(TFMessage(transforms=[transform_msg_from_matrix(make_transform((4, 0, 0), (0, 0, 0, 1)), "map", "velodyne", stamp)]))
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not tf.buffer.can_transform("map", "camera_left", 7 * S):
            ex.spin_once(timeout_sec=0.05)
        got = tf.lookup("velodyne", "camera_left", 7 * S, 0.0)
        np.testing.assert_allclose(got, cam, atol=1e-9)
        np.testing.assert_allclose(tf.lookup("map", "camera_left", 7 * S, 0.0)[:3, 3], cam[:3, 3] + [4, 0, 0], atol=1e-9)
        ex.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_a_tf_sample_for_a_static_link_does_not_break_lookups():
    # tf2 keeps static and dynamic transforms apart: one /tf message for a link /tf_static holds must not turn
    # the calibration into a one-sample dynamic link that fails every lookup at another time
    from l2cocc_ros.ros.tf import StaticLinkConflict

    buf = TransformBuffer()
    cam = make_transform((0.3, 0.0, -0.1), ROT_Z90)
    buf.set_transform("velodyne", "camera", 0, cam, static=True)
    with pytest.raises(StaticLinkConflict, match="/tf_static holds 'camera'"):
        buf.set_transform("velodyne", "camera", 5 * S, np.eye(4), static=False)
    for t in (0, 1 * S, 5 * S, 99 * S):
        np.testing.assert_array_equal(buf.lookup_transform("velodyne", "camera", t), cam)
    buf.clear_dynamic()  # a time jump keeps static links
    np.testing.assert_array_equal(buf.lookup_transform("velodyne", "camera", 3 * S), cam)
    # a static link replaces a dynamic history of the same child (as tf2's StaticCache replaces its TimeCache)
    buf.set_transform("map", "base", 1 * S, np.eye(4), static=False)
    buf.set_transform("map", "base", 0, make_transform((1, 2, 3), (0, 0, 0, 1)), static=True)
    np.testing.assert_array_equal(buf.lookup_transform("map", "base", 50 * S)[:3, 3], [1, 2, 3])


def test_error_text_stays_bounded_with_many_frames():
    buf = TransformBuffer()
    for i in range(10_000):
        buf.set_transform("root", f"frame_{i:05d}_" + "x" * 40, 0, np.eye(4), static=True)
    with pytest.raises(TransformUnavailable) as err:
        buf.lookup_transform("root", "y" * 100_000)
    text = str(err.value)
    assert len(text) < 2000 and "10001 known" in text and "and 9991 more" in text
    with pytest.raises(ValueError) as err:
        buf.set_transform("z" * 100_000, "a", 0, np.full((4, 4), np.nan), static=True)
    assert len(str(err.value)) < 300


def test_listener_warnings_are_throttled_and_counted(caplog):
    from types import SimpleNamespace

    from tf2_msgs.msg import TFMessage

    from l2cocc_ros.ros.tf import TransformListener

    node = SimpleNamespace(create_subscription=lambda *a, **k: None)
    listener = TransformListener(TransformBuffer(), node, warn_period_s=60.0)
    bad = transform_msg_from_matrix(np.eye(4), "a", "a")
    good = transform_msg_from_matrix(np.eye(4), "velodyne", "cam")
    listener._on_tf(TFMessage(transforms=[good]), True)
    with caplog.at_level("WARNING", logger="l2cocc_ros.ros.tf"):
        for _ in range(1000):
            listener._on_tf(TFMessage(transforms=[bad]), False)
            listener._on_tf(TFMessage(transforms=[good]), False)  # a /tf sample for the static link
    lines = [r for r in caplog.records if r.name == "l2cocc_ros.ros.tf"]
    assert len(lines) == 1 and "invalid TF link" in lines[0].getMessage()
    assert listener.ignored == 2000
    np.testing.assert_array_equal(listener.buffer.lookup_transform("velodyne", "cam", 7 * S), np.eye(4))
