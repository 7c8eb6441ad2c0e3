"""Hostile input against the running node (in-process, tiny camera model with random weights): what the
middleware loses is counted, and every text the node logs or publishes stays bounded."""
from types import SimpleNamespace

from rclpy.event_handler import QoSSubscriptionEventType

from test_node_bad_input import Graph


def test_samples_the_middleware_loses_are_counted_in_diagnostics():
    # every input subscription carries a message_lost handler (rmw_fastrtps supports the event); what it
    # reports shows up per input in /diagnostics
    g = Graph()
    try:
        handlers = {}
        for sub in g.node._subscriptions_sync:
            lost = [h for h in sub.event_handlers if h.event_type == QoSSubscriptionEventType.RCL_SUBSCRIPTION_MESSAGE_LOST]
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
