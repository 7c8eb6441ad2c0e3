"""``l2cocc score``: score the node's live grids against ground truth while a KITTI bag is replayed.

Subscribes to the node's SemanticVoxelGrid topic (and, for latency, to the left image topic), matches each
grid to its frame by stamp (``stamp = start + times.txt[i]``, as ``l2cocc kitti2bag`` writes it), accumulates
the official SSC metric (completion IoU, per-class IoU, mIoU) over the frames that have ground truth, prints
a running line per frame and writes every prediction in the official layout
(``OUT/sequences/XX/predictions/NNNNNN.label``) as soon as it arrives, so frames already scored survive a
replay that dies part-way. ``l2cocc eval --predictions OUT`` on those files gives the same numbers.

Latency = arrival of the grid - arrival of the left image with the same stamp, both in this process.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from l2cocc_ros.core.classes import ClassTable, semantic_kitti
from l2cocc_ros.core.data import kitti_io
from l2cocc_ros.core.data.bag_layout import DEFAULT_START_S, BagNames, frame_stamp_ns
from l2cocc_ros.core.data.predictions import load_ground_truth, write_prediction
from l2cocc_ros.core.metrics import SSCMetrics
from l2cocc_ros.core.stamps import stamp_to_ns
from l2cocc_ros import exit_codes

__all__ = ["FrameScore", "Scorer", "cdr_header_stamp_ns", "main"]

logger = logging.getLogger(__name__)


def cdr_header_stamp_ns(raw: bytes) -> int:
    """Stamp (ns) of a serialised message that starts with a std_msgs/Header (after the 4-byte CDR header)."""
    if len(raw) < 12:
        raise ValueError(f"message of {len(raw)} bytes is too short to hold a header")
    endian = "<" if raw[1] == 1 else ">"
    sec, nsec = struct.unpack_from(endian + "iI", raw, 4)
    return stamp_to_ns((sec, nsec))


@dataclass
class FrameScore:
    """The outcome of one received grid."""

    frame: int
    stamp_ns: int
    latency_ms: Optional[float]
    scored: bool
    iou: Optional[float] = None
    miou: Optional[float] = None


@dataclass
class Scorer:
    """Matches grids to frames, accumulates metrics and writes predictions (no ROS inside: feed it arrays).

    Args:
        dataset: root holding ``sequences/``.
        sequence: e.g. "08".
        out: root of the predictions (official layout).
        start_s: stamp of ``times.txt`` 0.0, as given to kitti2bag.
        table: class table of the grids.
    """

    dataset: Path
    sequence: str
    out: Path
    start_s: float = DEFAULT_START_S
    table: ClassTable = field(default_factory=semantic_kitti)

    def __post_init__(self) -> None:
        seq_dir = Path(self.dataset) / "sequences" / self.sequence
        times = kitti_io.read_times(seq_dir / "times.txt")
        self._frame_of = {int(s): i for i, s in enumerate(frame_stamp_ns(times, self.start_s))}
        self._voxels = seq_dir / "voxels"
        self.metrics = SSCMetrics(self.table.num_classes)
        self.frames: List[FrameScore] = []
        self.unmatched = 0
        self._image_arrival: Dict[int, float] = {}
        self._lock = threading.Lock()

    def frame_of(self, stamp_ns: int) -> Optional[int]:
        """Frame id of a stamp (exact, or within 1 ms), or None."""
        frame = self._frame_of.get(int(stamp_ns))
        if frame is None:
            for s, f in self._frame_of.items():
                if abs(s - stamp_ns) < 1_000_000:
                    return f
        return frame

    def image_arrived(self, stamp_ns: int, t: Optional[float] = None) -> None:
        """Record when the left image of a stamp arrived (for the latency)."""
        with self._lock:
            self._image_arrival.setdefault(int(stamp_ns), time.monotonic() if t is None else t)

    def add(self, labels: np.ndarray, stamp_ns: int, t: Optional[float] = None) -> Optional[FrameScore]:
        """Score and save one grid; returns None (and counts it) if no frame has that stamp."""
        t = time.monotonic() if t is None else t
        frame = self.frame_of(stamp_ns)
        if frame is None:
            self.unmatched += 1
            logger.warning("grid with stamp %d ns matches no frame of sequence %s", stamp_ns, self.sequence)
            return None
        pred = np.where(labels == 255, 0, labels).astype(np.uint8)  # unknown -> empty, as in the .label file
        write_prediction(self.out, self.sequence, frame, pred, self.table)
        with self._lock:
            arrived = self._image_arrival.pop(int(stamp_ns), None)
        score = FrameScore(frame, int(stamp_ns), None if arrived is None else 1000.0 * (t - arrived), False)
        if (self._voxels / f"{frame:06d}.label").is_file():
            target = load_ground_truth(self.dataset, self.sequence, f"{frame:06d}", self.table)
            self.metrics.update(pred, target)
            s = self.metrics.compute()
            score.scored, score.iou, score.miou = True, float(s["iou"]), float(s["miou"])
        self.frames.append(score)
        return score

    def summary(self) -> Dict[str, object]:
        """Frames, latencies (p50/p95) and the accumulated metrics."""
        lat = np.array([f.latency_ms for f in self.frames if f.latency_ms is not None])
        s = self.metrics.compute()
        return {
            "frames": len(self.frames),
            "scored_frames": sum(f.scored for f in self.frames),
            "unmatched_grids": self.unmatched,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
            "iou": float(s["iou"]),
            "miou": float(s["miou"]),
            "iou_per_class": {n: float(v) for n, v in zip(self.table.names, s["iou_per_class"])},
        }


def run_live(scorer: Scorer, grid_topic: str, image_topic: str, *, expected_frames: Optional[int],
             idle_timeout_s: float, timeout_s: float, echo: bool = True) -> None:
    """Spin an rclpy node feeding ``scorer`` until enough grids arrived or nothing came for a while."""
    import rclpy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from l2cocc_ros.msg import SemanticVoxelGrid
    from l2cocc_ros.ros.grid_msg import msg_to_grid
    from l2cocc_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS

    own_context = not rclpy.ok()
    if own_context:
        rclpy.init()
    node = rclpy.create_node("l2cocc_score")
    last = {"t": time.monotonic(), "first": None}

    def on_image(raw: bytes) -> None:
        scorer.image_arrived(cdr_header_stamp_ns(raw))

    def on_grid(raw: bytes) -> None:
        now = time.monotonic()
        grid = msg_to_grid(deserialize_message(raw, SemanticVoxelGrid))
        stamp = stamp_to_ns(grid.stamp)
        last["t"], last["first"] = now, last["first"] or now
        score = scorer.add(grid.labels, stamp, now)
        if echo and score is not None:
            lat = "   n/a" if score.latency_ms is None else f"{score.latency_ms:6.0f}"
            acc = f"IoU {100 * score.iou:5.1f}  mIoU {100 * score.miou:5.1f}" if score.scored else "(no ground truth)"
            print(f"frame {score.frame:06d}  latency {lat} ms  running {acc}", flush=True)

    node.create_subscription(Image, image_topic, on_image, SENSOR_QOS, raw=True)
    node.create_subscription(SemanticVoxelGrid, grid_topic, on_grid, OUTPUT_QOS, raw=True)
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout_s:
            rclpy.spin_once(node, timeout_sec=0.05)
            if expected_frames is not None and len(scorer.frames) >= expected_frames:
                break
            if last["first"] is not None and time.monotonic() - last["t"] > idle_timeout_s:
                break
    finally:
        node.destroy_node()
        if own_context:
            rclpy.shutdown()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="l2cocc score", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, type=Path, help="root holding sequences/ (ground truth)")
    parser.add_argument("-s", "--sequence", required=True, help="sequence id, e.g. 08")
    parser.add_argument("-o", "--out", required=True, type=Path, help="root for predictions (official layout)")
    parser.add_argument("--grid-topic", default="/l2cocc_node/output/semantic_grid", help="the node's grid topic")
    parser.add_argument("--image-topic", default=BagNames().left_image, help="left image topic (for latency)")
    parser.add_argument("--start", type=float, default=DEFAULT_START_S, help="stamp of times.txt 0.0 [s]")
    parser.add_argument("--frames", type=int, default=None, help="stop after this many grids")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="stop when no grid came for this long [s]")
    parser.add_argument("--timeout", type=float, default=600.0, help="stop after this long in any case [s]")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        scorer = Scorer(args.dataset, args.sequence, args.out, args.start)
    except (FileNotFoundError, ValueError) as exc:
        print(f"l2cocc score: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    try:
        run_live(scorer, args.grid_topic, args.image_topic, expected_frames=args.frames,
                 idle_timeout_s=args.idle_timeout, timeout_s=args.timeout)
    except KeyboardInterrupt:
        pass
    summary = scorer.summary()
    print(scorer.metrics.table(list(scorer.table.names)))
    print(json.dumps({k: v for k, v in summary.items() if k != "iou_per_class"}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return exit_codes.OK if summary["frames"] else exit_codes.FAILED


if __name__ == "__main__":
    sys.exit(main())
