"""``l2cocc_node``: synchronized stereo (+ LiDAR) in, semantic voxel grid + RViz markers + diagnostics out.

Constructor order (style rule 13): declare parameters -> config -> engine -> TF -> publishers and
subscriptions -> worker thread and timers. Subscriptions only synchronize and hand the newest set to an
inference thread ("newest frame wins": one slot; a set still waiting when a newer one arrives is dropped and
counted), so callbacks never block and latency stays bounded by about two processing times. The worker
converts (image, CameraInfo, cloud, TF), calls the engine, converts back and publishes; every bad input is
rejected with a counter, a throttled log line and a diagnostic, never an exception out of the node.

Run: ``ros2 run l2cocc_ros l2cocc_node --ros-args --params-file ...`` or ``l2cocc node --ros-args ...``.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Float64
from visualization_msgs.msg import MarkerArray

from l2cocc_ros import exit_codes
from l2cocc_ros.core.checkpoint import SHIPPED_CAMERA_CHECKPOINT
from l2cocc_ros.core.classes import class_table
from l2cocc_ros.core.engine import InferenceEngine
from l2cocc_ros.core.stamps import stamp_to_ns
from l2cocc_ros.core.stereo import get_stereo_backend
from l2cocc_ros.msg import SemanticVoxelGrid
from l2cocc_ros.ros.diagnostics import NodeStatus, clip_text
from l2cocc_ros.ros.frame import InputRejected, SyncedInputs, frame_from_inputs, input_topics
from l2cocc_ros.ros.grid_msg import grid_to_msg
from l2cocc_ros.ros.markers import MarkerEncoder, MarkerOptions
from l2cocc_ros.ros.params import NodeConfig, declare_parameters, read_parameters
from l2cocc_ros.ros.qos import OUTPUT_QOS
from l2cocc_ros.ros.sync import make_synchronizer
from l2cocc_ros.ros.tf import TfLookup, TransformUnavailable

__all__ = ["L2COccNode", "main", "NODE_NAME"]

logger = logging.getLogger(__name__)

NODE_NAME = "l2cocc_node"
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
"""The shipped parameter files (source tree; ``l2cocc node`` without ``--params-file`` uses them)."""
_SHIPPED_PARAM_FILES: List[str] = []  # set by main() when it added the shipped files (named in the first log line)

#: how far ahead of the node's clock a stamp may lie [s] (clocks of two machines can differ; years cannot)
MAX_STAMP_AHEAD_S = 3600.0

USAGE = """usage: l2cocc_node [--ros-args [--params-file config/l2cocc_node.param.yaml \\
           --params-file config/common.param.yaml] [-p checkpoint:=MODEL.pt] [-r __ns:=/NS] [-r ~/input/...:=TOPIC]]

Without --params-file the shipped parameter files are used; without checkpoint the shipped camera model.
Variant and preset come from the checkpoint (set them only for the authors' .ckpt files).

Semantic scene completion (L2COcc) from a synchronized stereo pair (+ LiDAR for variant l).
Inputs:  ~/input/{left,right}/image, ~/input/{left,right}/camera_info, ~/input/pointcloud (variant l), TF
Outputs: ~/output/semantic_grid, ~/output/markers, /diagnostics, ~/debug/{processing_time,pipeline_latency,
         cyclic_time}_ms
Parameters: see config/l2cocc_node.param.yaml, config/common.param.yaml and schema/*.schema.json.
"""


class L2COccNode(Node):
    """The perception node (topics, parameters and behaviour in the module docstring and README).

    Args:
        node_name: ROS node name.
        **kwargs: passed to ``rclpy.node.Node`` (e.g. ``context``, ``parameter_overrides``).

    Raises:
        ValueError, FileNotFoundError: invalid parameters (every problem is listed), or a checkpoint that does
            not load; the node is not created.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        # 1. parameters -> config
        declare_parameters(self)
        self.config: NodeConfig = read_parameters(self)
        cfg = self.config
        # 2. engine
        shipped = " and ".join(_SHIPPED_PARAM_FILES)
        self.get_logger().info(
            f"model: {cfg.checkpoint or 'random weights'} (variant {cfg.variant}, preset {cfg.preset}"
            f"{', the shipped camera model' if cfg.checkpoint == str(SHIPPED_CAMERA_CHECKPOINT) else ''})"
            f"{'; parameters: the shipped files ' + shipped if shipped else ''}")
        self.engine = self._build_engine(cfg)
        self.table = class_table(self.engine.cfg.dataset)
        self.status = NodeStatus(cfg.diagnostics)
        # 3. TF
        self.tf = TfLookup(self)
        # 4. publishers and subscriptions
        self.grid_pub = self.create_publisher(SemanticVoxelGrid, "~/output/semantic_grid", OUTPUT_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, "~/output/markers", OUTPUT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.processing_pub = self.create_publisher(Float64, "~/debug/processing_time_ms", OUTPUT_QOS)
        self.latency_pub = self.create_publisher(Float64, "~/debug/pipeline_latency_ms", OUTPUT_QOS)
        self.cyclic_pub = self.create_publisher(Float64, "~/debug/cyclic_time_ms", OUTPUT_QOS)
        self.markers = MarkerEncoder(self.engine.cfg.grid, self.table, MarkerOptions(
            crop_min=cfg.markers_crop_min, crop_max=cfg.markers_crop_max, downsample=cfg.markers_downsample,
            alpha=cfg.markers_alpha))
        topics = input_topics(with_cloud=self.engine.needs_points)
        self.sync, self._subscriptions_sync = make_synchronizer(
            self, topics, cfg.sync_queue_size, cfg.sync_slop_s, self._on_synchronized,
            on_lost=lambda name, n: self.status.samples_lost(topics[name][1].removeprefix("~/input/"), n))
        # 5. worker and timers
        self._cond = threading.Condition()
        self._slot: Optional[SyncedInputs] = None
        self._stopping = False
        self._last_stamp_ns: Optional[int] = None
        self._noted: set = set()
        # stereo matching needs images wider than its disparity range (OpenCV fails on narrower ones)
        stereo = self.engine.stereo
        nd, ds = int(getattr(stereo, "num_disparities", 0)), int(getattr(stereo, "downscale", 1))
        self._min_width = ds * (-(-nd // ds) + 1) if nd else 2
        self._last_marker_t = -np.inf
        self._last_publish_t: Optional[float] = None
        self.last_timings_ms: dict = {}
        self._worker = threading.Thread(target=self._run, name="l2cocc_inference", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(cfg.diagnostics.period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"ready: {self.engine.cfg.name} (variant {cfg.variant}) on {self.engine.device}, grid frame "
            f"{cfg.grid_frame!r}, stereo {cfg.stereo_backend}, markers via "
            f"{'numpy CDR' if self.markers.use_bytes else 'message objects'}, tf {self.tf.backend}")

    # ----------------------------------------------------------------------------------------- set-up
    def _build_engine(self, cfg: NodeConfig) -> InferenceEngine:
        stereo = get_stereo_backend(cfg.stereo_backend, **cfg.stereo_options)
        kw = dict(device=cfg.device, stereo_backend=stereo, precision=cfg.precision,
                  with_confidence=cfg.publish_confidence, channels_last=cfg.channels_last,
                  cuda_graphs=cfg.cuda_graphs,
                  device_preprocess=cfg.device_preprocess)
        if cfg.checkpoint:
            return InferenceEngine.from_checkpoint(cfg.checkpoint, preset=cfg.preset, **kw)
        self.get_logger().warning(f"checkpoint is empty and allow_random_weights is true: {cfg.preset} runs with "
                                  "RANDOM weights (its output is meaningless)")
        return InferenceEngine.from_preset(cfg.preset, **kw)

    # -------------------------------------------------------------------------------------- callbacks
    def _on_synchronized(self, named: Dict[str, object]) -> None:
        """Put the newest synchronized set in the slot; a set still waiting there is dropped (counted)."""
        self.status.input_arrived()
        with self._cond:
            if self._slot is not None:
                self.status.dropped()
            self._slot = SyncedInputs(**named)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stopping:
                    self._cond.wait(timeout=0.5)
                if self._stopping:
                    return
                msgs, self._slot = self._slot, None
            try:
                self._process(msgs)
            except InputRejected as rej:
                self._reject(rej.kind, rej.reason)
            except Exception as exc:  # noqa: BLE001 - the live path never dies on one frame
                self._reject("inference", f"{type(exc).__name__}: {exc}")

    def _reject(self, kind: str, reason: str) -> None:
        if self.status.rejected_input(kind, reason):
            self.get_logger().warning(f"rejected input ({kind}): {clip_text(reason)} [throttled]")

    # ------------------------------------------------------------------------------------- the frame
    def _process(self, msgs: SyncedInputs) -> None:
        """One synchronized set: the frame (validated when built), its stamp, the engine, the outputs."""
        t0 = time.perf_counter()
        self._check_stamp_plausible(msgs.stamp)  # before TF: stamp 0 would look up the latest transform
        frame = frame_from_inputs(msgs, self._lookup, cameras=self.engine.needs_cameras, min_width=self._min_width,
                                  grid=self.engine.cfg.grid, note=self._note_once)
        self._accept_stamp(frame.stamp_ns)  # after validation: a rejected set never moves the last stamp
        t_convert = time.perf_counter()
        result = self.engine.infer(frame)
        t_engine = time.perf_counter()
        self._publish(msgs.stamp, result)
        t_end = time.perf_counter()
        processing_ms = (t_end - t0) * 1e3
        latency_ms = (self.get_clock().now().nanoseconds - frame.stamp_ns) * 1e-6
        self.last_timings_ms = {"convert": (t_convert - t0) * 1e3, **result.timings_ms,
                                "publish": (t_end - t_engine) * 1e3, "processing": processing_ms}
        self.processing_pub.publish(Float64(data=processing_ms))
        self.latency_pub.publish(Float64(data=latency_ms))
        if self._last_publish_t is not None:  # time between two published grids
            self.cyclic_pub.publish(Float64(data=(t_end - self._last_publish_t) * 1e3))
        self._last_publish_t = t_end
        self.status.frame_published(processing_ms, latency_ms)
        self.get_logger().debug("timings [ms]: " + ", ".join(f"{k} {v:.1f}" for k, v in self.last_timings_ms.items()))

    def _check_stamp_plausible(self, stamp) -> None:
        """Refuse stamps no sensor gives: unset (0), negative, nanoseconds past a second, or far ahead of this
        node's clock (a garbage stamp accepted there would reset the node and publish a grid stamped with it)."""
        if not 0 <= stamp.nanosec < 1_000_000_000:
            raise InputRejected("stamp", f"stamp nanosec {stamp.nanosec} is not in [0, 1e9): a malformed stamp")
        stamp_ns = stamp_to_ns(stamp)
        if stamp_ns == 0:
            raise InputRejected("stamp", "stamp is 0 (unset): the driver did not stamp the image")
        if stamp_ns < 0:
            raise InputRejected("stamp", f"stamp {stamp_ns * 1e-9:.3f} s is negative (before 1970): not a capture time")
        now_ns = self.get_clock().now().nanoseconds
        ahead = (stamp_ns - now_ns) * 1e-9
        if now_ns > 0 and ahead > MAX_STAMP_AHEAD_S:  # (a sim clock that has not started yet reads 0)
            raise InputRejected("stamp", f"stamp {stamp_ns * 1e-9:.3f} s is {ahead:.0f} s ahead of this node's clock "
                                f"(more than {MAX_STAMP_AHEAD_S:.0f} s): a wrong clock or a garbage stamp")

    def _note_once(self, key: str, text: str) -> None:
        """Input that is used but is not what ROS specifies: one warning per kind for the node's life."""
        if key not in self._noted:
            self._noted.add(key)
            self.get_logger().warning(clip_text(text) + " [once]")

    def _reset_if_time_looped(self, stamp_ns: int) -> bool:
        """A stamp more than ``stamp_reset_s`` before the last frame's (a bag loop): forget the sync queues,
        the dynamic TF history and the last stamp. Returns whether it reset."""
        last = self._last_stamp_ns
        jump = (last - stamp_ns) * 1e-9 if last is not None else 0.0
        if not (self.config.stamp_reset_s > 0.0 and jump > self.config.stamp_reset_s):
            return False
        self.get_logger().warning(f"time jumped back by {jump:.3f} s: resetting (sync queues, TF history)")
        self.status.resets += 1
        self.tf.clear_dynamic()
        self.sync.reset()
        self._last_stamp_ns = None
        return True

    def _accept_stamp(self, stamp_ns: int) -> None:
        """Record a valid frame's stamp; one not after the last frame's is rejected (or resets, see above)."""
        self._reset_if_time_looped(stamp_ns)
        last = self._last_stamp_ns
        if last is not None and stamp_ns <= last:
            raise InputRejected("stamp_jump_back", f"stamp {stamp_ns * 1e-9:.3f} s is not after the last frame's "
                                f"{last * 1e-9:.3f} s (jump {(last - stamp_ns) * 1e-9:.3f} s)")
        self._last_stamp_ns = stamp_ns

    def _lookup(self, source: str, stamp_ns: int) -> np.ndarray:
        """T_grid_from_source at the stamp (TF, else the configured fallback)."""
        cfg = self.config
        try:
            t = self.tf.lookup(cfg.grid_frame, source, stamp_ns, cfg.tf_timeout_s)
            self.status.tf_state(True, f"{cfg.grid_frame} <- {source}")
            return t
        except TransformUnavailable as exc:
            if self._reset_if_time_looped(stamp_ns):  # after a bag loop TF's history lies in the future
                return self._lookup(source, stamp_ns)
            if cfg.tf_fallback is not None:
                self.status.tf_state(True, f"fallback transform ({exc})")
                return cfg.tf_fallback
            self.status.tf_state(False, str(exc))
            raise InputRejected("tf", f"no transform {cfg.grid_frame} <- {source!r}: {exc}") from None

    def _publish(self, stamp, result) -> None:
        """The grid, and the markers while someone subscribes (rate-limited)."""
        cfg = self.config
        msg = grid_to_msg(result.labels, stamp=stamp, frame_id=cfg.grid_frame, grid=self.engine.cfg.grid,
                          table=self.table, model_variant=f"l2cocc-{cfg.variant}",
                          model_name=Path(cfg.checkpoint).name if cfg.checkpoint else f"{cfg.preset} (random weights)",
                          confidence=result.confidence)
        self.grid_pub.publish(msg)
        now = time.monotonic()
        if (cfg.markers_enabled and self.marker_pub.get_subscription_count() > 0
                and now - self._last_marker_t >= 1.0 / cfg.markers_max_rate_hz):
            self._last_marker_t = now
            self.marker_pub.publish(self.markers.encode(result.labels, stamp=stamp, frame_id=cfg.grid_frame))

    # ------------------------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        extra = {f"timing.{k}_ms": round(v, 2) for k, v in self.last_timings_ms.items()}
        extra["tf.ignored"] = self.tf.ignored
        s = self.sync.stats
        extra.update({"sync.dropped_overflow": s.dropped_overflow, "sync.dropped_stale": s.dropped_stale,
                      "sync.emitted": s.emitted})
        self.diag_pub.publish(self.status.to_msg(self.get_clock().now().to_msg(), f"{self.get_name()}: perception",
                                                 self.get_fully_qualified_name(), extra))

    def destroy_node(self) -> None:
        """Stop the inference thread (waits for the frame in progress), then destroy the node."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=60.0)
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> int:
    """Entry point: ``args`` are the command-line arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        0 on a normal exit (Ctrl-C, external shutdown), 2 when the parameters are invalid.
    """
    from rclpy.executors import ExternalShutdownException

    argv = [NODE_NAME, *(sys.argv[1:] if args is None else args)]
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in own or "--help" in own:
        sys.stdout.write(USAGE)
        return exit_codes.OK
    logging.basicConfig(level=logging.INFO)
    if "--params-file" not in argv:
        files = [str(CONFIG_DIR / "l2cocc_node.param.yaml"), str(CONFIG_DIR / "common.param.yaml")]
        if "--ros-args" not in argv:
            argv.append("--ros-args")
        at = argv.index("--ros-args") + 1
        argv[at:at] = ["--params-file", files[0], "--params-file", files[1]]
        _SHIPPED_PARAM_FILES[:] = files
    rclpy.init(args=argv)
    node = None
    try:
        node = L2COccNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:  # rclpy's RCLError when a signal shuts the context down while spin() builds a wait set
        if rclpy.ok():
            raise
    except (ValueError, FileNotFoundError) as exc:
        logger.error("l2cocc_node cannot start: %s", exc)
        return exit_codes.USAGE
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
