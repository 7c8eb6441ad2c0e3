"""Overload: frames arrive at 3x the rate the node can process. Newest frame wins: latency stays bounded by
about two processing times, queues stay bounded, and every frame is either processed or counted as dropped."""
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from l2cocc_ros.core.stamps import stamp_to_ns
from l2cocc_ros.msg import SemanticVoxelGrid
from l2cocc_ros.ros.node import L2COccNode
from l2cocc_ros.ros.qos import OUTPUT_QOS, TF_STATIC_QOS

from node_helpers import make_frame, parameters, static_tf

BASE = "/l2cocc_node/input/"
TOPICS = [(Image, BASE + "left/image"), (CameraInfo, BASE + "left/camera_info"), (Image, BASE + "right/image"),
          (CameraInfo, BASE + "right/camera_info")]


def test_three_times_overload_keeps_latency_bounded_and_counts_drops():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = L2COccNode(context=ctx, parameter_overrides=parameters())
    feeder = rclpy.create_node("feeder", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(feeder)
    received = []  # (receive time [ns], grid stamp [ns])
    clock = feeder.get_clock()
    feeder.create_subscription(SemanticVoxelGrid, "/l2cocc_node/output/semantic_grid",
                               lambda m: received.append((clock.now().nanoseconds, stamp_to_ns(m.header.stamp))),
                               OUTPUT_QOS)
    feeder.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(static_tf())
    pubs = [feeder.create_publisher(t, topic, 5) for t, topic in TOPICS]
    frames = [make_frame(clock.now().to_msg(), seed=i) for i in range(3)]  # payloads, re-stamped when sent

    def send(i):
        stamp = clock.now().to_msg()
        for pub, msg in zip(pubs, frames[i % 3].msgs):
            msg.header.stamp = stamp
            pub.publish(msg)

    def spin_until(cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cond():
            ex.spin_once(timeout_sec=0.01)
        return cond()

    try:
        # warm-up frame: measures how long one frame takes here
        send(0)
        assert spin_until(lambda: received, 90.0)
        proc_s = node.status.last_processing_ms * 1e-3
        period = proc_s / 3.0
        duration = min(6.0 * proc_s, 24.0)
        n_sent, t0, max_queued = 1, time.monotonic(), 0
        while time.monotonic() - t0 < duration:
            send(n_sent)
            n_sent += 1
            next_t = time.monotonic() + period
            while time.monotonic() < next_t:
                ex.spin_once(timeout_sec=max(0.0, min(0.01, next_t - time.monotonic())))
            max_queued = max(max_queued, node.sync.queued())
        # drain: the frame in progress plus at most the one waiting
        snap = lambda: node.status.snapshot()  # noqa: E731
        assert spin_until(lambda: snap()["frames_processed"] + snap()["frames_dropped"] == snap()["frames_in"]
                          and node._slot is None and len(received) == snap()["frames_processed"], 4 * proc_s + 30)
        time.sleep(0.2)
        s = snap()
        assert s["frames_in"] == n_sent, s  # every sent set was synchronized
        assert s["frames_processed"] + s["frames_dropped"] == n_sent and s["rejected_total"] == 0
        assert s["frames_dropped"] >= n_sent // 3, s  # ~2/3 of the frames cannot be processed at 3x
        assert max_queued <= 4 * node.config.sync_queue_size
        latencies = [(rx - st) * 1e-9 for rx, st in received]
        worst_proc = max(proc_s, s["last_processing_time_ms"] * 1e-3)
        # newest frame wins: a frame waits at most one processing time, then is processed (+ slack for 2 cores)
        bound = 2.5 * worst_proc + 1.0
        assert max(latencies) < bound, (latencies, worst_proc)
        assert latencies[-1] < bound  # no growth over the run
        print(f"overload: proc {proc_s * 1e3:.0f} ms, sent {n_sent} at {1 / period:.2f} Hz, processed "
              f"{s['frames_processed']}, dropped {s['frames_dropped']}, latency max {max(latencies) * 1e3:.0f} ms "
              f"(bound {bound * 1e3:.0f} ms), max queued {max_queued}")
        stamps = [st for _, st in received]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    finally:
        ex.shutdown()
        node.destroy_node()
        feeder.destroy_node()
        rclpy.shutdown(context=ctx)
