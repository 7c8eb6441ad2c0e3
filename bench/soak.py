#!/usr/bin/env python3
"""Soak: minutes of a 5x flood of stereo sets with bad sets mixed in, then a calm phase; RSS and latency sampled.

One process, DDS off the network (``ROS_AUTOMATIC_DISCOVERY_RANGE=OFF``): the node runs the tiny camera preset
with RANDOM weights on the CPU (as the node tests do; the model's output is meaningless, its cost is real),
fed 200x64 synthetic stereo pairs (test/ros/node_helpers.py) stamped with the wall clock.

- flood: sets at ``--flood-factor`` x the KITTI rate (10 Hz), every ``--bad-every``-th one a bad set of a
  rotating kind (bad encoding, size mismatch, zero P, fx = 1e300, 1x1 image, unknown TF frame, stamp 0,
  negative stamp, a stamp in 2038, a jump back) and a burst of refused /tf samples;
- calm: valid sets at half the rate the node managed during warm-up, to see latency come back, each followed
  by a bad set of the next kind (the flood drops most bad sets unjudged: newest frame wins; here each is
  judged and counted under its kind).

Prints a table (inputs sent, frames processed, dropped, rejected per kind, RSS start/peak/end, latency p50/p95
during and after the flood). Run: ``python bench/soak.py --flood-s 180 --calm-s 60`` (scripts/env.sh first).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test" / "ros"))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_messages.xml"))

import numpy as np  # noqa: E402

KITTI_HZ = 10.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def bad_sets():
    """Generators of bad sets, each: (name, make(stamp_msg) -> 4 messages)."""
    from node_helpers import make_frame

    from l2cocc_ros.ros.image import numpy_to_image

    def with_stamp(msgs, stamp):
        for m in msgs:
            m.header.stamp = stamp
        return list(msgs)

    def bad_encoding(stamp):
        msgs = list(make_frame(stamp).msgs)
        msgs[0].encoding = "yuv999"
        return msgs

    def narrow(stamp):
        msgs = list(make_frame(stamp).msgs)
        msgs[2] = numpy_to_image(np.zeros((64, 100, 3), np.uint8), "rgb8", stamp=stamp, frame_id="camera_color_right")
        return msgs

    def zero_p(stamp):
        msgs = list(make_frame(stamp).msgs)
        msgs[1].p = [0.0] * 12
        return msgs

    def huge_fx(stamp):
        msgs = list(make_frame(stamp).msgs)
        for info in (msgs[1], msgs[3]):
            p = list(info.p)
            p[3], p[0], p[5] = p[3] / p[0] * 1e300, 1e300, 1e300
            info.p = p
        return msgs

    def tiny(stamp):
        msgs = list(make_frame(stamp).msgs)
        px = np.full((1, 1, 3), 128, np.uint8)
        msgs[0] = numpy_to_image(px, "rgb8", stamp=stamp, frame_id="camera_color_left")
        msgs[2] = numpy_to_image(px, "rgb8", stamp=stamp, frame_id="camera_color_right")
        msgs[1].height = msgs[1].width = msgs[3].height = msgs[3].width = 1
        return msgs

    def unknown_frame(stamp):
        return list(make_frame(stamp, frame_id="nowhere_" + "x" * 5000).msgs)

    def stamp_zero(stamp):
        from builtin_interfaces.msg import Time
        return with_stamp(make_frame(stamp).msgs, Time(sec=0, nanosec=0))

    def negative(stamp):
        from builtin_interfaces.msg import Time
        return with_stamp(make_frame(stamp).msgs, Time(sec=-5, nanosec=0))

    def year_2038(stamp):
        from builtin_interfaces.msg import Time
        return with_stamp(make_frame(stamp).msgs, Time(sec=2_147_000_000, nanosec=0))

    def jump_back(stamp):
        from builtin_interfaces.msg import Time
        return with_stamp(make_frame(stamp).msgs, Time(sec=stamp.sec - 1, nanosec=stamp.nanosec))

    return [("encoding", bad_encoding), ("size_mismatch", narrow), ("zero P", zero_p), ("fx 1e300", huge_fx),
            ("1x1 image", tiny), ("unknown frame", unknown_frame), ("stamp 0", stamp_zero),
            ("negative stamp", negative), ("year 2038", year_2038), ("jump back", jump_back)]


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flood-s", type=float, default=180.0, help="flood duration [s]")
    ap.add_argument("--calm-s", type=float, default=60.0, help="calm phase after the flood [s]")
    ap.add_argument("--flood-factor", type=float, default=5.0, help="flood rate as a multiple of KITTI's 10 Hz")
    ap.add_argument("--bad-every", type=int, default=7, help="every N-th set of the flood is a bad one")
    args = ap.parse_args(argv)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from node_helpers import make_frame, parameters, static_tf
    from l2cocc_ros.msg import SemanticVoxelGrid
    from l2cocc_ros.ros.node import L2COccNode
    from l2cocc_ros.ros.qos import OUTPUT_QOS, TF_STATIC_QOS
    from l2cocc_ros.ros.sync import stamp_to_ns
    from l2cocc_ros.ros.tf import transform_msg_from_matrix

    rss = {"start": rss_mb()}
    rclpy.init()
    node = L2COccNode(parameter_overrides=parameters())
    feeder = rclpy.create_node("soak_feeder")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(feeder)
    clock = feeder.get_clock()
    received = []  # (receive [ns], stamp [ns])
    feeder.create_subscription(SemanticVoxelGrid, "/l2cocc_node/output/semantic_grid",
                               lambda m: received.append((clock.now().nanoseconds, stamp_to_ns(m.header.stamp))),
                               OUTPUT_QOS)
    feeder.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(static_tf())
    tf_pub = feeder.create_publisher(TFMessage, "/tf", 10)
    base = "/l2cocc_node/input/"
    pubs = [feeder.create_publisher(t, base + n, 5) for t, n in (
        (Image, "left/image"), (CameraInfo, "left/camera_info"), (Image, "right/image"),
        (CameraInfo, "right/camera_info"))]
    payloads = [make_frame(clock.now().to_msg(), seed=i) for i in range(4)]
    bad = bad_sets()
    samples = []  # (phase, rss)
    stop = threading.Event()

    def sampler():
        while not stop.wait(1.0):
            samples.append(rss_mb())

    def spin_for(seconds):
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            ex.spin_once(timeout_sec=min(0.01, left))

    def send_valid(i):
        stamp = clock.now().to_msg()
        for pub, msg in zip(pubs, payloads[i % 4].msgs):
            msg.header.stamp = stamp
            pub.publish(msg)

    sent = {"valid": 0, "bad": 0, "tf_garbage": 0}
    try:
        deadline = time.monotonic() + 10.0  # discovery of the static TF
        while time.monotonic() < deadline and not node.tf.buffer.can_transform("velodyne", "camera_color_left"):
            ex.spin_once(timeout_sec=0.05)
        for i in range(3):  # warm-up: processing time here
            n = len(received)
            send_valid(i)
            sent["valid"] += 1
            end = time.monotonic() + 120
            while len(received) == n and time.monotonic() < end:
                ex.spin_once(timeout_sec=0.01)
        proc_s = node.status.last_processing_ms * 1e-3
        rss["warm"] = rss_mb()
        threading.Thread(target=sampler, daemon=True).start()
        flood_period = 1.0 / (KITTI_HZ * args.flood_factor)
        t0 = time.monotonic()
        n_flood_start = len(received)
        i = 0
        while time.monotonic() - t0 < args.flood_s:
            i += 1
            if i % args.bad_every == 0:
                name, make = bad[(i // args.bad_every) % len(bad)]
                for pub, msg in zip(pubs, make(clock.now().to_msg())):
                    pub.publish(msg)
                sent["bad"] += 1
                if (i // args.bad_every) % len(bad) == 0:  # a burst of refused /tf samples now and then
                    garbage = [transform_msg_from_matrix(np.eye(4), "velodyne", "camera_color_left",
                                                         clock.now().to_msg())] * 50
                    tf_pub.publish(TFMessage(transforms=garbage))
                    sent["tf_garbage"] += 50
            else:
                send_valid(i)
                sent["valid"] += 1
            spin_for(flood_period)
        flood_rx = received[n_flood_start:]
        spin_for(3 * proc_s + 2.0)  # drain
        n_calm_start = len(received)
        rss["flood_end"] = rss_mb()
        calm_period = 2.0 * max(proc_s, node.status.last_processing_ms * 1e-3)
        t1 = time.monotonic()
        k = 0
        while time.monotonic() - t1 < args.calm_s:
            send_valid(i)
            i += 1
            sent["valid"] += 1
            spin_for(0.2)  # the worker (idle) takes the valid set; the bad one waits in the slot, then is judged
            name, make = bad[k % len(bad)]
            k += 1
            for pub, msg in zip(pubs, make(clock.now().to_msg())):
                pub.publish(msg)
            sent["bad"] += 1
            spin_for(calm_period)
        spin_for(3 * proc_s + 2.0)
        calm_rx = received[n_calm_start:]
        stop.set()
        rss["end"] = rss_mb()
        snap = node.status.snapshot()
        sync = node.sync.stats if node.sync is not None else None
    finally:
        stop.set()
        ex.shutdown()
        node.destroy_node()
        feeder.destroy_node()
        rclpy.try_shutdown()

    lat_flood = [(rx - st) * 1e-6 for rx, st in flood_rx]
    lat_calm = [(rx - st) * 1e-6 for rx, st in calm_rx]
    rows = [
        ("machine", f"{os.cpu_count()} CPUs (shared), CPU only; tiny_l2cocc_c, random weights, 200x64 stereo"),
        ("warm-up processing time", f"{proc_s * 1e3:.0f} ms per frame"),
        ("flood", f"{args.flood_s:.0f} s at {args.flood_factor:g}x KITTI ({KITTI_HZ * args.flood_factor:.0f} sets/s), "
                  f"every {args.bad_every}th set bad; then {args.calm_s:.0f} s calm at {1 / calm_period:.2f} sets/s"),
        ("inputs sent", f"{sent['valid']} valid sets, {sent['bad']} bad sets, {sent['tf_garbage']} refused-TF samples"),
        ("synchronized sets (frames_in)", snap["frames_in"]),
        ("frames processed", snap["frames_processed"]),
        ("dropped (newest frame wins)", snap["frames_dropped"]),
        ("sync dropped (overflow / stale)", f"{sync.dropped_overflow} / {sync.dropped_stale}" if sync else "n/a"),
        ("rejected total", snap["rejected_total"]),
    ]
    rows += [(f"rejected.{k[len('rejected.'):]}", v) for k, v in snap.items() if k.startswith("rejected.") and v]
    rows += [
        ("tf.ignored", node.tf.ignored), ("lost (middleware)", snap.get("lost_total", 0)),
        ("resets", snap["resets"]),
        ("RSS start / after warm-up / peak / end [MB]",
         f"{rss['start']:.0f} / {rss['warm']:.0f} / {max(samples + [rss['end']]):.0f} / {rss['end']:.0f}"),
        ("latency during flood p50 / p95 [ms]", f"{pct(lat_flood, 50):.0f} / {pct(lat_flood, 95):.0f} "
                                                f"({len(lat_flood)} grids)"),
        ("latency after flood p50 / p95 [ms]", f"{pct(lat_calm, 50):.0f} / {pct(lat_calm, 95):.0f} "
                                               f"({len(lat_calm)} grids)"),
    ]
    width = max(len(str(k)) for k, _ in rows)
    print("| what | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
