"""Hostile input against the running node (in-process, tiny camera model with random weights): what the
middleware loses is counted, and every text the node logs or publishes stays bounded."""
from types import SimpleNamespace

import numpy as np

from rclpy.event_handler import QoSSubscriptionEventType

from test_node_bad_input import Graph


def test_samples_the_middleware_loses_are_counted_in_diagnostics():
    # every input subscription carries a message_lost handler (rmw_fastrtps supports the event); what it
    # reports shows up per input in /diagnostics
    g = Graph()
    try:
        handlers = {}
        for sub in g.node._subscriptions_sync:
            lost = [h for h in sub.event_handlers
                    if h.event_type == QoSSubscriptionEventType.RCL_SUBSCRIPTION_MESSAGE_LOST]
            assert len(lost) == 1, sub.topic_name
            handlers[sub.topic_name] = lost[0]
        assert sorted(handlers) == sorted(f"/l2cocc_node/input/{s}" for s in (
            "left/image", "left/camera_info", "right/image", "right/camera_info"))
        handlers["/l2cocc_node/input/left/image"].callback(SimpleNamespace(total_count=3, total_count_change=3))
        handlers["/l2cocc_node/input/right/image"].callback(SimpleNamespace(total_count=4, total_count_change=1))
        values = {kv.key: kv.value for kv in g.latest_status().values}
        assert values["lost_total"] == "4" and values["lost.left/image"] == "3" and values["lost.right/image"] == "1"
        assert values["tf.ignored"] == "0"
    finally:
        g.close()


def test_a_rejected_set_never_moves_the_last_stamp():
    # one garbage set stamped 2.5 s ahead (less than stamp_reset_s, so no reset) must not make the next valid
    # frames fail as stamp_jump_back: validation comes before the stamp is recorded
    from sensor_msgs.msg import Image

    from node_helpers import make_frame, stamp_of

    g = Graph()
    try:
        g.send(make_frame(stamp_of(10.0)).msgs, None)
        left, linfo, right, rinfo = make_frame(stamp_of(12.5)).msgs
        bad = Image(height=left.height, width=left.width, encoding="yuv422", step=left.width * 2)
        bad.header = left.header
        bad.data = bytes(left.width * 2 * left.height)
        g.send([bad, linfo, right, rinfo], "encoding")
        for t in (10.1, 10.2):
            g.send(make_frame(stamp_of(t), seed=int(t * 10)).msgs, None)
        assert g.node.status.rejected["stamp_jump_back"] == 0 and g.node.status.frames_processed == 3
    finally:
        g.close()


def test_left_camera_info_with_tx_is_used_as_ros_defines_it_and_warned_once(capfd):
    # kitti2mcap writes KITTI's P_rect_20 (offset from cam0, Tx = -fx * 0.06 m) into the left CameraInfo; ROS
    # says Tx = 0 for the left camera, whose own frame TF gives: the node must not shift the geometry by 6 cm
    from l2cocc_ros.core.frame import StereoFrame
    from l2cocc_ros.ros.grid_msg import msg_to_grid

    from node_helpers import BASELINE, FX, P_LEFT, P_RIGHT, T_VELO_FROM_CAM, make_frame, stamp_of

    g = Graph()
    try:
        frames = [make_frame(stamp_of(t), seed=s) for t, s in ((5.0, 1), (5.1, 2))]
        for frame in frames:
            left, linfo, right, rinfo = frame.msgs
            linfo.p = [float(v) for v in (P_LEFT + [[0, 0, 0, -FX * 0.06], [0] * 4, [0] * 4]).ravel()]
            rinfo.p = [float(v) for v in (P_RIGHT + [[0, 0, 0, -FX * 0.06], [0] * 4, [0] * 4]).ravel()]
            g.send(frame.msgs, None)
        got = msg_to_grid(g.grids[-1]).labels
        f = frames[-1]
        right_way = g.node.engine.infer(StereoFrame(f.left, f.right, P_LEFT, BASELINE, T_VELO_FROM_CAM, 5_100_000_000))
        np.testing.assert_array_equal(got, right_way.labels)
        shifted = np.reshape(f.msgs[1].p, (3, 4))  # the old behaviour: P used as is
        wrong_way = g.node.engine.infer(StereoFrame(f.left, f.right, shifted, BASELINE, T_VELO_FROM_CAM, 5_100_000_000))
        assert (wrong_way.labels != got).any()  # the test can tell the two apart
        warnings = [line for line in capfd.readouterr().err.splitlines() if "left CameraInfo P has Tx" in line]
        assert len(warnings) == 1 and "0.0600 m" in warnings[0]
    finally:
        g.close()


def test_stamps_no_sensor_gives_are_refused_under_their_own_kind():
    from l2cocc_ros.ros.grid_msg import msg_to_grid

    from node_helpers import make_frame, stamp_of

    g = Graph()
    try:
        g.send(make_frame(stamp_of(10.0)).msgs, None)
        for bad in (0.0, 2_147_000_000.0):  # unset; January 2038
            g.send(make_frame(stamp_of(bad)).msgs, "stamp")
        negative = make_frame(stamp_of(0.0)).msgs
        for m in negative:
            m.header.stamp.sec = -5
        g.send(negative, "stamp")
        g.send(make_frame(stamp_of(10.1)).msgs, None)
        assert g.node.status.resets == 0 and g.node.status.rejected["stamp"] == 3
        assert [msg_to_grid(m).stamp for m in g.grids] == [(10, 0), (10, 100_000_000)]
        assert "stamp" in g.node.status.last_rejection[0]
    finally:
        g.close()
