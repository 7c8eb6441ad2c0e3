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
