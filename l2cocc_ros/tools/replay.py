"""``l2cocc replay``: play a rosbag2 into DDS with rclpy, re-sending the recorded CDR bytes.

Works on bags written by ``l2cocc kitti2bag``, kitti2mcap's bare ``.mcap`` files and any rosbag2 (sqlite3 or
mcap) whose message packages are importable. Messages are never converted field by field: each recorded
payload goes out as it is (``Publisher.publish(bytes)``) at the recorded pace scaled by ``--rate``.
``/tf_static`` is always latched (RELIABLE + TRANSIENT_LOCAL, depth 1), also when the bag lacks QoS metadata;
``--clock`` publishes ``/clock`` for nodes run with ``use_sim_time``. On a machine with the ros2 CLI,
``ros2 bag play`` works on the same bags.

Run it with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (scripts/env.sh sets it).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from l2cocc_ros.core.stamps import ns_to_tuple

__all__ = ["BagError", "ReplayStats", "open_bag", "message_class", "replay", "main"]

logger = logging.getLogger(__name__)

LATCHED_TOPICS = ("/tf_static",)


class BagError(RuntimeError):
    """A bag that cannot be opened or read (names the bag and what is wrong)."""


@dataclass
class ReplayStats:
    """What a replay sent."""

    published: Dict[str, int]
    duration_s: float
    error: Optional[str] = None


def open_bag(path: Path):
    """Open a rosbag2 directory or a bare ``.mcap`` file with rosbags; raise BagError naming the problem."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for corrupt metadata / storage
        raise BagError(f"bag {path} cannot be opened: {exc}") from exc
    return reader


def message_class(msgtype: str):
    """rclpy message class for a type name like ``sensor_msgs/msg/Image``."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not available in this ROS environment: {exc}") from exc


def _qos_for(connection):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from l2cocc_ros.ros.qos import TF_STATIC_QOS

    if connection.topic in LATCHED_TOPICS:
        return TF_STATIC_QOS
    profiles = getattr(connection.ext, "offered_qos_profiles", None) or []
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    if profiles:
        prof = profiles[0]
        if prof.reliability.name == "BEST_EFFORT":
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if prof.durability.name == "TRANSIENT_LOCAL":
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return qos


def _wait_for_subscribers(node, publishers, topics: Sequence[str], timeout_s: float) -> None:
    import rclpy

    deadline = time.monotonic() + timeout_s
    pending = [t for t in topics if t in publishers]
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if publishers[t].get_subscription_count() == 0]
        rclpy.spin_once(node, timeout_sec=0.05)
    if pending:
        raise BagError(f"no subscriber appeared on {', '.join(pending)} within {timeout_s:.0f} s")


def replay(bag: Path, *, rate: float = 1.0, clock: bool = False, topics: Optional[Sequence[str]] = None,
           wait_for: Sequence[str] = (), wait_timeout_s: float = 30.0, node_name: str = "l2cocc_replay") -> ReplayStats:
    """Publish the messages of ``bag`` at ``rate`` x the recorded pace.

    Args:
        bag: rosbag2 directory or .mcap file.
        rate: speed factor (> 0); 2.0 plays twice as fast.
        clock: also publish rosgraph_msgs/Clock on /clock with each message's bag time.
        topics: only these topics (default all).
        wait_for: topics that must have a subscriber before playback starts.
        wait_timeout_s: how long to wait for them.

    Returns:
        ReplayStats; if the bag turns out corrupt part-way, ``error`` says where and everything before
        it has been published.
    """
    import rclpy
    from rclpy.serialization import serialize_message

    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    reader = open_bag(bag)
    try:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        if not connections:
            raise BagError(f"bag {bag} has none of the topics {list(topics or [])}")
        own_context = not rclpy.ok()
        if own_context:
            rclpy.init()
        node = rclpy.create_node(node_name)
        try:
            publishers = {}
            for c in connections:
                if c.topic not in publishers:
                    publishers[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, _qos_for(c))
            clock_pub = None
            if clock:
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(Clock, "/clock", 10)
            if wait_for:
                _wait_for_subscribers(node, publishers, wait_for, wait_timeout_s)
            return _play(reader, connections, publishers, clock_pub, rate, node, serialize_message)
        finally:
            node.destroy_node()
            if own_context:
                rclpy.shutdown()
    finally:
        reader.close()


def _play(reader, connections, publishers, clock_pub, rate, node, serialize_message) -> ReplayStats:
    import rclpy

    published: Dict[str, int] = {}
    t_wall0 = time.monotonic()
    t_bag0 = None
    error = None
    try:
        for connection, stamp_ns, raw in reader.messages(connections=connections):
            if t_bag0 is None:
                t_bag0 = stamp_ns
            delay = (stamp_ns - t_bag0) / 1e9 / rate - (time.monotonic() - t_wall0)
            while delay > 0:  # keep the executor alive while waiting (discovery, QoS handshakes)
                rclpy.spin_once(node, timeout_sec=min(delay, 0.05))
                delay = (stamp_ns - t_bag0) / 1e9 / rate - (time.monotonic() - t_wall0)
            if clock_pub is not None:
                from rosgraph_msgs.msg import Clock

                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = ns_to_tuple(stamp_ns)
                clock_pub.publish(serialize_message(msg))
            publishers[connection.topic].publish(bytes(raw))
            published[connection.topic] = published.get(connection.topic, 0) + 1
    except Exception as exc:  # a truncated / corrupt storage file surfaces while iterating
        n = sum(published.values())
        error = f"bag read failed after {n} messages: {type(exc).__name__}: {exc}"
        logger.error(error)
    # give reliable transports a moment to deliver the last samples before the publishers go away
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    return ReplayStats(published=published, duration_s=time.monotonic() - t_wall0, error=error)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="l2cocc replay", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 directory or .mcap file")
    parser.add_argument("-r", "--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--clock", action="store_true", help="publish /clock (for use_sim_time)")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC",
                        help="wait until these topics have a subscriber before playing")
    parser.add_argument("--wait-timeout", type=float, default=30.0, help="seconds to wait for --wait-for")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "ROS_AUTOMATIC_DISCOVERY_RANGE" not in os.environ:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    try:
        stats = replay(args.bag, rate=args.rate, clock=args.clock, topics=args.topics, wait_for=args.wait_for,
                       wait_timeout_s=args.wait_timeout)
    except (BagError, ValueError) as exc:
        print(f"l2cocc replay: error: {exc}", file=sys.stderr)
        return 1
    for topic, n in sorted(stats.published.items()):
        print(f"{topic:45s} {n:6d}")
    print(f"played {sum(stats.published.values())} messages in {stats.duration_s:.1f} s")
    if stats.error:
        print(f"l2cocc replay: error: {stats.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
