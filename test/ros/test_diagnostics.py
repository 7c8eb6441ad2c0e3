"""NodeStatus levels and throttling with a fake clock (no DDS)."""
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from l2cocc_ros.ros.diagnostics import NodeStatus
from l2cocc_ros.ros.params import DiagnosticLimits


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def make():
    clock = Clock()
    return NodeStatus(DiagnosticLimits(max_processing_time_warn_ms=200, max_consecutive_delay_error_ms=1000,
                                       rejection_window_s=5, log_throttle_s=2), clock=clock), clock


def level(status):
    return bytes([status.level()[0]])


def test_ok_warn_error_transitions():
    s, clock = make()
    assert level(s) == DiagnosticStatus.OK
    s.input_arrived()
    s.frame_published(150.0, 180.0)
    assert level(s) == DiagnosticStatus.OK
    s.frame_published(350.0, 400.0)
    assert level(s) == DiagnosticStatus.WARN and "processing took 350 ms" in s.level()[1]
    s.frame_published(100.0, 120.0)
    clock.t = 1.5
    s.input_arrived()  # input keeps arriving, no grid for 1.5 s
    assert level(s) == DiagnosticStatus.ERROR and "no grid published for 1500 ms" in s.level()[1]
    s.frame_published(100.0, 120.0)
    assert level(s) == DiagnosticStatus.OK
    clock.t = 20.0  # input stopped: silence is not an error
    assert level(s) == DiagnosticStatus.OK


def test_rejections_warn_for_a_window_and_logs_are_throttled_per_kind():
    s, clock = make()
    assert s.rejected_input("encoding", "yuv422") is True
    assert s.rejected_input("encoding", "yuv422") is False  # within 2 s
    assert s.rejected_input("tf", "no frame") is True  # other kind: own throttle
    assert level(s) == DiagnosticStatus.WARN and "tf: no frame" in s.level()[1]
    clock.t = 2.5
    assert s.rejected_input("encoding", "yuv422") is True
    clock.t = 8.0
    assert level(s) == DiagnosticStatus.OK
    snap = s.snapshot()
    assert snap["rejected.encoding"] == 3 and snap["rejected.tf"] == 1 and snap["rejected_total"] == 4
    with pytest.raises(ValueError, match="unknown rejection kind 'bogus'"):
        s.rejected_input("bogus", "")


def test_missing_tf_is_an_error_and_the_message_carries_every_counter():
    s, _ = make()
    s.tf_state(False, "frame 'cam' does not exist")
    s.dropped(3)
    msg = s.to_msg(Time(sec=3), "l2cocc_node: perception", "/l2cocc_node", {"sync.dropped_stale": 2})
    (st,) = msg.status
    values = {kv.key: kv.value for kv in st.values}
    assert st.level == DiagnosticStatus.ERROR and "frame 'cam' does not exist" in st.message
    assert values["frames_dropped"] == "3" and values["tf"] == "missing" and values["sync.dropped_stale"] == "2"
    assert msg.header.stamp.sec == 3


def test_text_is_bounded_whatever_the_input():
    from rclpy.serialization import serialize_message

    from l2cocc_ros.ros.diagnostics import LogThrottle, clip_text

    s, clock = make()
    s.rejected_input("tf", "frame 'x' does not exist in TF (known: " + "'frame', " * 100_000 + ")")
    s.tf_state(False, "z" * 1_000_000)
    msg = s.to_msg(Time(), "n", "hw", {"timing.x_ms": 1.0, "huge": "q" * 1_000_000})
    assert len(serialize_message(msg)) < 16_000
    assert all(len(kv.value) <= 1000 for kv in msg.status[0].values) and len(msg.status[0].message) <= 2000
    assert clip_text("abc", 5) == "abc" and len(clip_text("a" * 50, 10)) == 10
    assert clip_text("a" * 5000).endswith("[4000 more characters]") or "more characters]" in clip_text("a" * 5000)
    throttle = LogThrottle(2.0, clock=clock)
    assert throttle.due() == 0 and throttle.due() is None and throttle.due() is None
    clock.t = 2.5
    assert throttle.due() == 2
