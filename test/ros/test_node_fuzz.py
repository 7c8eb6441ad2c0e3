"""A small seeded fuzz of the running node (in-process, tiny models with random weights): each category of
bad input is sent between valid frames, in a shuffled order. After every bad set the node is alive, the bad
set landed in its own rejection counter (or, for TF garbage, in ``tf.ignored``), the next valid frame gives a
grid, no log line is over 4 KB and no /diagnostics message over 64 KB."""
import string

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from l2cocc_ros.core.transforms import make_transform
from l2cocc_ros.ros.image import numpy_to_image
from l2cocc_ros.ros.pointcloud import create_cloud_xyzi
from l2cocc_ros.ros.tf import transform_msg_from_matrix

from node_helpers import make_frame, stamp_of
from test_node_bad_input import Graph

MAX_LOG_LINE, MAX_DIAG_BYTES = 4096, 65536


def _name(rng, n):
    return "".join(rng.choice(list(string.ascii_lowercase), n))


def camera_cases(rng):
    """name -> (make(t_last) -> (msgs, stamp used)) , expected kind."""
    def bad_encoding(t):
        left, li, right, ri = make_frame(stamp_of(t)).msgs
        left.encoding = _name(rng, 12)
        return [left, li, right, ri]

    def short_data(t):
        left, li, right, ri = make_frame(stamp_of(t)).msgs
        left.data = bytes(left.data[: len(left.data) // 3])
        return [left, li, right, ri]

    def narrow(t):
        left, li, right, ri = make_frame(stamp_of(t)).msgs
        right = numpy_to_image(np.zeros((left.height, left.width // 2, 3), np.uint8), "rgb8", stamp=stamp_of(t),
                               frame_id="camera_color_right")
        return [left, li, right, ri]

    def zero_p(t):
        left, li, right, ri = make_frame(stamp_of(t)).msgs
        li.p = [0.0] * 12
        return [left, li, right, ri]

    def nan_p(t):
        left, li, right, ri = make_frame(stamp_of(t)).msgs
        p = list(li.p)
        p[int(rng.integers(0, 3))] = float("nan")
        li.p = p
        return [left, li, right, ri]

    def huge_fx(t):
        left, li, right, ri = make_frame(stamp_of(t)).msgs
        for info in (li, ri):
            p = list(info.p)
            p[3] = p[3] / p[0] * 1e300
            p[0] = p[5] = 1e300
            info.p = p
        return [left, li, right, ri]

    def tiny_image(t):
        left, li, right, ri = make_frame(stamp_of(t)).msgs
        px = np.full((1, 1, 3), 128, np.uint8)
        left = numpy_to_image(px, "rgb8", stamp=stamp_of(t), frame_id="camera_color_left")
        right = numpy_to_image(px, "rgb8", stamp=stamp_of(t), frame_id="camera_color_right")
        for info in (li, ri):
            info.height = info.width = 1
        return [left, li, right, ri]

    def unknown_frame(t):
        return list(make_frame(stamp_of(t), frame_id="frame_" + _name(rng, 20_000)).msgs)

    return [
        ("encoding", bad_encoding, "encoding"), ("short image data", short_data, "encoding"),
        ("size mismatch", narrow, "size_mismatch"), ("zero P", zero_p, "camera_info"),
        ("NaN in P", nan_p, "camera_info"), ("fx = 1e300", huge_fx, "camera_info"),
        ("1x1 image", tiny_image, "image_size"), ("unknown frame", unknown_frame, "tf"),
    ]


STAMP_CASES = [("jump back 1 s", lambda t: t - 1.0, "stamp_jump_back"), ("stamp 0", lambda t: 0.0, "stamp"),
               ("nanosec 1e9", lambda t: None, "stamp"),
               ("negative stamp", lambda t: -5.0, "stamp"), ("year 2038", lambda t: 2_147_000_000.0, "stamp")]


def _check_text(g, capfd, caplog):
    err = capfd.readouterr().err
    long_lines = [len(line) for line in err.splitlines() if len(line.encode()) > MAX_LOG_LINE]
    long_lines += [len(r.getMessage()) for r in caplog.records if len(r.getMessage().encode()) > MAX_LOG_LINE]
    assert not long_lines, f"log lines over 4 KB: {long_lines}"
    sizes = [len(serialize_message(d)) for d in g.diags]
    assert max(sizes, default=0) <= MAX_DIAG_BYTES, sizes


def test_fuzz_camera_variant(capfd, caplog):
    rng = np.random.default_rng(1234)
    g = Graph()
    caplog.set_level("WARNING")
    try:
        t = 10.0
        g.send(make_frame(stamp_of(t)).msgs, None)
        cases = camera_cases(rng)
        cases += [(name, (lambda t, f=f: _with_stamp(t, f(t))), kind) for name, f, kind in STAMP_CASES]
        cases.append(("TF garbage", None, None))
        order = rng.permutation(len(cases))
        expected = {}
        for i in order:
            name, make, kind = cases[i]
            t = round(t + 0.1, 3)
            if make is None:
                _send_tf_garbage(g, rng)
            else:
                before = g.node.status.rejected[kind]
                g.send(make(t), kind)
                assert g.node.status.rejected[kind] == before + 1, name
                expected[kind] = expected.get(kind, 0) + 1
            t = round(t + 0.1, 3)
            g.send(make_frame(stamp_of(t), seed=int(i)).msgs, None)  # a valid frame right after: processed
            assert g.node._worker.is_alive(), name
        snap = g.node.status.snapshot()
        assert {k: snap[f"rejected.{k}"] for k in expected} == expected
        assert snap["rejected.inference"] == 0 and snap["frames_processed"] == len(cases) + 1
        g.latest_status()
        _check_text(g, capfd, caplog)
    finally:
        g.close()


def _with_stamp(t, bad):
    """A valid set stamped ``bad`` seconds (negative: a negative sec field; None: nanosec = 1e9 at t)."""
    msgs = list(make_frame(stamp_of(max(bad, 0.0) if bad is not None else t)).msgs)
    for m in msgs:
        if bad is None:
            m.header.stamp.nanosec = 1_000_000_000
        elif bad < 0:
            m.header.stamp.sec = int(bad)
    return msgs


def _send_tf_garbage(g, rng):
    """/tf messages the listener must refuse: NaN transform, a self-loop, a sample for the static link, and
    hundreds of fresh long frame names; lookups of the camera keep working."""
    if not hasattr(g, "tf_pub"):
        g.tf_pub = g.feeder.create_publisher(TFMessage, "/tf", 100)
        assert g.spin_until(lambda: g.tf_pub.get_subscription_count() > 0, 5.0)
    before = g.node.tf.ignored
    bad = [transform_msg_from_matrix(np.eye(4), "velodyne", "camera_color_left", stamp_of(1.0)),
           transform_msg_from_matrix(np.eye(4), "a", "a", stamp_of(1.0))]
    ts = transform_msg_from_matrix(np.eye(4), "x", "y", stamp_of(1.0))
    ts.transform.translation.x = float("nan")
    bad.append(ts)
    names = [transform_msg_from_matrix(make_transform((1, 0, 0), (0, 0, 0, 1)), "root_" + _name(rng, 300),
                                       "f_" + _name(rng, 300), stamp_of(1.0)) for _ in range(300)]
    g.tf_pub.publish(TFMessage(transforms=bad + names))
    assert g.spin_until(lambda: g.node.tf.ignored >= before + 3, 10.0), g.node.tf.ignored
    assert g.node.tf.buffer.can_transform("velodyne", "camera_color_left", 5 * 10**9)


def test_fuzz_lidar_variant(capfd, caplog):
    from sensor_msgs.msg import PointField

    from l2cocc_ros.ros.pointcloud import XYZI_FIELDS

    rng = np.random.default_rng(99)
    g = Graph(variant="l", preset="tiny_l2cocc_l")
    caplog.set_level("WARNING")

    def cloud(t, xyzi):
        return create_cloud_xyzi(Header(stamp=stamp_of(t), frame_id="velodyne"), xyzi)

    def good_points(n=3000):
        return np.column_stack([rng.uniform(0, 50, n), rng.uniform(-25, 25, n), rng.uniform(-2, 4, n),
                                rng.uniform(0, 1, n)]).astype(np.float32)

    def frame(t, c):
        return list(make_frame(stamp_of(t)).msgs) + [c]

    def float64_fields(t):
        c = cloud(t, good_points())
        c.fields = [PointField(name=f.name, offset=f.offset, datatype=PointField.FLOAT64, count=1)
                    for f in XYZI_FIELDS[:3]]
        return c

    def short_data(t):
        c = cloud(t, good_points())
        c.data = bytes(c.data[:100])
        return c

    cases = [
        ("no point", lambda t: cloud(t, np.zeros((0, 4), np.float32))),
        ("all NaN", lambda t: cloud(t, np.full((40, 4), np.nan, np.float32))),
        ("all outside the grid", lambda t: cloud(t, good_points() + np.float32([500, 0, 0, 0]))),
        ("float64 over float32", float64_fields), ("short data", short_data),
    ]
    try:
        t = 1.0
        g.send(frame(t, cloud(t, good_points())), None)
        for i in rng.permutation(len(cases)):
            name, make = cases[i]
            t = round(t + 0.1, 3)
            g.send(frame(t, make(t)), "pointcloud")
            t = round(t + 0.1, 3)
            g.send(frame(t, cloud(t, good_points())), None)
            assert g.node._worker.is_alive(), name
        snap = g.node.status.snapshot()
        assert snap["rejected.pointcloud"] == len(cases) and snap["rejected.inference"] == 0
        g.latest_status()
        _check_text(g, capfd, caplog)
    finally:
        g.close()
