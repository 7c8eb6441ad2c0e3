"""replay: a bag's raw CDR payloads reach subscribers unchanged; /tf_static is latched; corrupt bags are named."""
import threading
import time

import numpy as np
import pytest

from l2cocc_ros.core.data.bag_layout import BagNames
from l2cocc_ros.tools.kitti2bag import convert_sequence
from l2cocc_ros.tools.replay import BagError, main, open_bag, replay

from test_kitti2bag import make_sequence  # noqa: E402  (same folder)


def _bag_payloads(path):
    reader = open_bag(path)
    try:
        out = {}
        for c, _, raw in reader.messages():
            out.setdefault(c.topic, []).append(bytes(raw))
        return out
    finally:
        reader.close()


def test_replay_sends_recorded_bytes(tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from l2cocc_ros.ros.qos import TF_STATIC_QOS

    root = make_sequence(tmp_path / "ds", n=4)
    bag = tmp_path / "bag"
    convert_sequence(root, "08", bag)
    expected = _bag_payloads(bag)
    names = BagNames()
    rclpy.init()
    try:
        node = rclpy.create_node("replay_probe")
        got = {}

        def keep(topic):
            return lambda raw: got.setdefault(topic, []).append(bytes(raw))

        node.create_subscription(Image, names.left_image, keep(names.left_image), 10, raw=True)
        node.create_subscription(CameraInfo, names.right_info, keep(names.right_info), 10, raw=True)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        stop = threading.Event()
        spinner = threading.Thread(target=lambda: [executor.spin_once(0.02) for _ in iter(stop.is_set, True)])
        spinner.start()
        try:
            stats = replay(bag, rate=5.0, wait_for=[names.left_image], wait_timeout_s=10)
            deadline = time.monotonic() + 5
            while len(got.get(names.left_image, [])) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            # a late joiner still gets the latched /tf_static from a second replay of just that topic
            late = []
            node.create_subscription(TFMessage, "/tf_static", lambda raw: late.append(bytes(raw)), TF_STATIC_QOS,
                                     raw=True)
            replay(bag, rate=100.0, topics=["/tf_static"])
        finally:
            stop.set()
            spinner.join(5)
        assert stats.error is None
        assert stats.published[names.left_image] == 4 and stats.published["/tf_static"] == 1
        assert got[names.left_image] == expected[names.left_image]
        assert got[names.right_info] == expected[names.right_info]
        assert late == expected["/tf_static"]
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_missing_and_corrupt_bags(tmp_path, capsys):
    with pytest.raises(BagError, match="does not exist"):
        open_bag(tmp_path / "nope")
    root = make_sequence(tmp_path / "ds", n=2)
    bag = tmp_path / "bag"
    convert_sequence(root, "08", bag)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 3])  # truncated mid-way
    assert main([str(bag), "--rate", "50"]) == 1
    assert "error" in capsys.readouterr().err
    assert main([str(tmp_path / "nope")]) == 1
