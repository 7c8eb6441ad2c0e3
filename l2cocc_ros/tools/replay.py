"""``l2cocc replay``: play a rosbag2 into DDS with rclpy, re-sending the recorded CDR bytes.

Works on bags written by ``l2cocc kitti2bag``, kitti2mcap's bare ``.mcap`` files and any rosbag2 (sqlite3 or
mcap) whose message packages are importable. Messages are never converted field by field: each recorded
payload goes out as it is (``Publisher.publish(bytes)``) at the recorded pace scaled by ``--rate``.
``/tf_static`` is always latched (RELIABLE + TRANSIENT_LOCAL, depth 1), also when the bag lacks QoS metadata;
``--clock`` publishes ``/clock`` for nodes run with ``use_sim_time``. A damaged bag (a truncated .mcap without
its summary, a sqlite3 file with a bad page) plays every message still readable record by record
(:func:`salvage`), then ends with one error line naming the storage file (exit code 1). On a machine with the ros2 CLI,
``ros2 bag play`` works on the same bags.

Run it with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (scripts/env.sh sets it).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from l2cocc_ros.core.stamps import ns_to_tuple
from l2cocc_ros import exit_codes

__all__ = ["BagError", "ReplayStats", "Salvage", "open_bag", "message_class", "salvage", "replay", "main"]

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


@dataclass
class Salvage:
    """What could be read from a damaged bag's storage file, record by record.

    Attributes:
        path: the storage file (.mcap or .db3).
        topics: topic -> message type name.
        messages: (topic, bag time [ns], raw CDR) in time order.
        damage: what stopped the reading, or "" when every record was read.
    """

    path: Path
    topics: Dict[str, str]
    messages: List[Tuple[str, int, bytes]]
    damage: str = ""


def _storage_file(bag: Path) -> Optional[Path]:
    bag = Path(bag)
    if bag.is_file():
        return bag
    files = sorted(bag.glob("*.mcap")) + sorted(bag.glob("*.db3"))
    return files[0] if files else None


def _string(buf: memoryview, pos: int) -> Tuple[str, int]:
    n = struct.unpack_from("<I", buf, pos)[0]
    return bytes(buf[pos + 4:pos + 4 + n]).decode(), pos + 4 + n


def _mcap_records(buf: memoryview):
    """(opcode, content, complete) of each record; the last one may be cut short (complete False)."""
    pos = 0
    while pos + 9 <= len(buf):
        op, n = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
        end = pos + 9 + n
        yield op, buf[pos + 9:min(end, len(buf))], end <= len(buf)
        pos = end


def _salvage_mcap(path: Path) -> Salvage:
    """Every complete Schema / Channel / Message record of an MCAP file read front to back, also inside a
    truncated uncompressed chunk; stops at the first damaged record."""
    data = memoryview(path.read_bytes())
    out = Salvage(path, {}, [])
    if bytes(data[:8]) != b"\x89MCAP0\r\n":
        out.damage = "not an MCAP file (bad magic)"
        return out
    schemas: Dict[int, str] = {}
    channels: Dict[int, str] = {}

    def read(records) -> bool:
        for op, body, complete in records:
            try:
                if op == 0x06:  # chunk: start, end, size, crc, compression, records
                    compression, pos = _string(body, 28)
                    if compression:
                        if not complete:
                            out.damage = f"truncated {compression} chunk"
                            return False
                        continue  # a whole compressed chunk: nothing of it is readable without the codec
                    if not read(_mcap_records(body[pos + 8:])) or not complete:
                        out.damage = out.damage or "truncated chunk"
                        return False
                    continue
                if not complete:
                    out.damage = f"record 0x{op:02x} cut short"
                    return False
                if op == 0x03:
                    sid = struct.unpack_from("<H", body, 0)[0]
                    schemas[sid] = _string(body, 2)[0]
                elif op == 0x04:
                    cid, sid = struct.unpack_from("<HH", body, 0)
                    topic = _string(body, 4)[0]
                    channels[cid] = topic
                    out.topics[topic] = schemas.get(sid, "")
                elif op == 0x05:
                    cid, _, log_time = struct.unpack_from("<HIQ", body, 0)
                    if cid in channels:
                        out.messages.append((channels[cid], log_time, bytes(body[22:])))
            except (struct.error, UnicodeDecodeError) as exc:
                out.damage = f"record 0x{op:02x} unreadable ({exc})"
                return False
        return True

    read(_mcap_records(data[8:]))
    out.messages.sort(key=lambda m: m[1])
    return out


def _salvage_sqlite(path: Path) -> Salvage:
    """Every message row of a rosbag2 sqlite3 file that can still be read, one row at a time."""
    import sqlite3

    out = Salvage(path, {}, [])
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = {tid: name for tid, name, _ in con.execute("SELECT id, name, type FROM topics")}
        out.topics = {name: mtype for _, name, mtype in con.execute("SELECT id, name, type FROM topics")}
        try:
            ids = [r[0] for r in con.execute("SELECT id FROM messages")]
        except sqlite3.DatabaseError as exc:  # the id index is damaged: probe the row ids one by one
            out.damage = str(exc)
            top = con.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
            ids = range(1, top + 1)
        bad = 0
        for rid in ids:
            try:
                row = con.execute("SELECT topic_id, timestamp, data FROM messages WHERE id = ?", (rid,)).fetchone()
            except sqlite3.DatabaseError as exc:
                bad, out.damage = bad + 1, str(exc)
                continue
            if row is not None and row[0] in names:
                out.messages.append((names[row[0]], int(row[1]), bytes(row[2])))
        if bad:
            out.damage = f"{bad} unreadable row(s): {out.damage}"
    except sqlite3.DatabaseError as exc:
        out.damage = str(exc)
    finally:
        con.close()
    out.messages.sort(key=lambda m: m[1])
    return out


def salvage(bag: Path) -> Optional[Salvage]:
    """Read what is readable of a damaged bag's storage file (None when the bag has none we know)."""
    path = _storage_file(bag)
    if path is None:
        return None
    return _salvage_sqlite(path) if path.suffix == ".db3" else _salvage_mcap(path)


class _Source:
    """A connection as ``_qos_for`` and the publishers need it, for topics known only from a salvage."""

    def __init__(self, topic: str, msgtype: str) -> None:
        self.topic, self.msgtype, self.ext = topic, msgtype, None


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
    reader, opened = None, None
    try:
        reader = open_bag(bag)
    except BagError as exc:  # e.g. a truncated .mcap without its summary: play what its records still hold
        rescued = salvage(bag)
        if rescued is None or not rescued.messages:
            raise
        opened = (exc, rescued)
    try:
        if reader is not None:
            sources = [c for c in reader.connections if topics is None or c.topic in topics]
        else:
            sources = [_Source(t, m) for t, m in opened[1].topics.items() if topics is None or t in topics]
        if not sources:
            raise BagError(f"bag {bag} has none of the topics {list(topics or [])}")
        own_context = not rclpy.ok()
        if own_context:
            rclpy.init()
        node = rclpy.create_node(node_name)
        try:
            publishers = {}
            for c in sources:
                if c.topic not in publishers:
                    publishers[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, _qos_for(c))
            clock_pub = None
            if clock:
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(Clock, "/clock", 10)
            if wait_for:
                _wait_for_subscribers(node, publishers, wait_for, wait_timeout_s)
            if reader is not None:
                messages = ((c.topic, t, raw) for c, t, raw in reader.messages(connections=sources))
            else:
                exc, rescued = opened
                logger.warning("%s; playing the %d messages readable in %s", exc, len(rescued.messages),
                               rescued.path)
                messages = iter(rescued.messages)
            stats = _play(bag, messages, set(publishers), publishers, clock_pub, rate, node, serialize_message)
            if opened is not None:
                stats.error = (f"bag {bag} is damaged ({opened[1].damage or opened[0]}): played the "
                               f"{sum(stats.published.values())} messages readable in {opened[1].path}")
            return stats
        finally:
            node.destroy_node()
            if own_context:
                rclpy.shutdown()
    finally:
        if reader is not None:
            reader.close()


def _resume(bag: Path, topics, played_at_last: Dict[str, int], last_ns: int) -> Tuple[Iterator, Optional[Salvage]]:
    """The readable messages after the last one played (bag time ``last_ns``; ``played_at_last`` per topic at
    that time were already sent), from a record-by-record salvage of the storage file."""
    rescued = salvage(bag)
    if rescued is None:
        return iter(()), None
    skip = dict(played_at_last)

    def rest():
        for topic, t, raw in rescued.messages:
            if topic not in topics or t < last_ns:
                continue
            if t == last_ns and skip.get(topic, 0) > 0:
                skip[topic] -= 1
                continue
            yield topic, t, raw

    return rest(), rescued


def _play(bag, messages, topics, publishers, clock_pub, rate, node, serialize_message) -> ReplayStats:
    import rclpy

    published: Dict[str, int] = {}
    t_wall0 = time.monotonic()
    t_bag0 = None
    last_ns, at_last = None, {}
    error, rescued = None, None
    while True:
        try:
            for topic, stamp_ns, raw in messages:
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
                publishers[topic].publish(bytes(raw))
                published[topic] = published.get(topic, 0) + 1
                if stamp_ns != last_ns:
                    last_ns, at_last = stamp_ns, {}
                at_last[topic] = at_last.get(topic, 0) + 1
            break
        except Exception as exc:  # a truncated / corrupt storage file surfaces while iterating
            if rescued is not None:  # the salvage itself failed: stop here
                error = f"{error}; then {type(exc).__name__}: {exc}"
                break
            n = sum(published.values())
            error = f"bag {bag}: read failed after {n} messages: {type(exc).__name__}: {exc}"
            messages, rescued = _resume(bag, topics, at_last, last_ns if last_ns is not None else -1)
            if rescued is None:
                break
            logger.warning("%s; playing on with what is readable in %s", error, rescued.path)
    if rescued is not None:
        error += (f"; played {sum(published.values())} readable messages in all from {rescued.path}"
                  + (f" ({rescued.damage})" if rescued.damage else ""))
    if error:
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
    except (BagError, ValueError) as exc:  # the bag cannot be opened at all
        print(f"l2cocc replay: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    for topic, n in sorted(stats.published.items()):
        print(f"{topic:45s} {n:6d}")
    print(f"played {sum(stats.published.values())} messages in {stats.duration_s:.1f} s")
    if stats.error:
        print(f"l2cocc replay: error: {stats.error}", file=sys.stderr)
        return exit_codes.FAILED
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
