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
    assert main([str(tmp_path / "nope")]) == 2  # no bag there: refused before playing


def _all_messages(bag):
    reader = open_bag(bag)
    try:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    finally:
        reader.close()


def test_truncated_mcap_plays_every_intact_message_then_names_the_file(tmp_path, capsys):
    root = make_sequence(tmp_path / "ds", n=3)
    bag = tmp_path / "bag"
    convert_sequence(root, "08", bag)
    full = _all_messages(bag)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    cut = len(data) * 2 // 3
    mcap.write_bytes(data[:cut])
    # intact: the payload lies wholly before the cut (found by its bytes in the original file)
    intact = [m for m in full if 0 <= data.find(m[2]) and data.find(m[2]) + len(m[2]) <= cut]
    assert 0 < len(intact) < len(full)
    stats = replay(bag, rate=1000.0)
    assert sum(stats.published.values()) == len(intact)
    assert stats.error and str(mcap) in stats.error and "damaged" in stats.error
    assert main([str(bag), "--rate", "1000"]) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("l2cocc replay: error")]
    assert len(err) == 1 and str(mcap) in err[0] and f"played {len(intact)} messages" in captured.out
    bare = tmp_path / "bare.mcap"  # a bare truncated .mcap file (kitti2mcap's layout)
    bare.write_bytes(data[:cut])
    assert sum(replay(bare, rate=1000.0).published.values()) == len(intact)


def test_sqlite_bag_with_a_damaged_page_plays_every_readable_row(tmp_path):
    import sqlite3

    root = make_sequence(tmp_path / "ds", n=3)
    bag = tmp_path / "bag"
    convert_sequence(root, "08", bag, storage="sqlite3")
    full = _all_messages(bag)
    db = next(bag.glob("*.db3"))
    raw = bytearray(db.read_bytes())
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    k = len(raw) // page // 2
    raw[k * page:(k + 1) * page] = b"\xff" * page
    db.write_bytes(bytes(raw))
    stats = replay(bag, rate=1000.0)
    n = sum(stats.published.values())
    # one damaged page holds at most a few rows (the images span several overflow pages each)
    assert len(full) - 3 <= n < len(full)
    assert stats.error and str(db) in stats.error and "unreadable row" in stats.error


def test_a_read_error_part_way_resumes_from_the_storage_file_without_repeats(tmp_path, monkeypatch):
    import l2cocc_ros.tools.replay as replay_mod

    root = make_sequence(tmp_path / "ds", n=3)
    bag = tmp_path / "bag"
    convert_sequence(root, "08", bag, storage="sqlite3")
    full = _all_messages(bag)
    real_open = replay_mod.open_bag

    def failing_open(path):
        reader = real_open(path)
        inner = reader.messages

        def messages(**kw):
            for i, m in enumerate(inner(**kw)):
                if i == 7:
                    raise OSError("disk I/O error")
                yield m
        reader.messages = messages
        return reader

    monkeypatch.setattr(replay_mod, "open_bag", failing_open)
    stats = replay(bag, rate=1000.0)
    counts = {}
    for topic, _, _ in full:
        counts[topic] = counts.get(topic, 0) + 1
    assert stats.published == counts  # everything once: 7 from rosbags, the rest from the salvage
    assert "read failed after 7 messages" in stats.error and str(bag) in stats.error
