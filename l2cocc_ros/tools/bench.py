"""``l2cocc bench`` (also ``python bench/run.py``): how fast images become a published grid, and at what memory.

Prints tables (median and p95 of repeated runs) and writes them, with the machine (CPU model, GPU name, torch
version), to ``bench/RESULTS.md``:

* ``node``: the node's own work per frame without the model: Image -> RGB array + resize/crop/normalise,
  the SemanticVoxelGrid message (fill + serialise + publish), and the RViz markers (numpy CDR encode +
  publish) for 20k / 100k / 200k occupied voxels.
* ``engine``: per stage (stereo, preprocess, image encoder, depth net, lift-splat, voxel proposal, EVT,
  3D backbone, TPV, head, argmax) and end to end, for a preset on a device, with peak memory (CPU RSS of
  a fresh process per configuration; GPU max allocated).
* ``agreement``: a fast path (autocast precision, channels_last, torch.compile or CUDA graphs, device
  preprocessing) against fp32 eager on the same inputs: % of voxels with the same label and the IoU between
  the two outputs.

Each engine configuration runs in its own subprocess so peak RSS belongs to it alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from l2cocc_ros import exit_codes

__all__ = ["stats_ms", "machine_info", "bench_node", "bench_engine", "bench_agreement", "main"]

REPO = Path(__file__).resolve().parents[2]

#: fast-path flags of a spec (``PRESET:DEVICE:...:channels_last:compile``) -> InferenceEngine keyword
FAST_FLAGS = {"channels_last": "channels_last", "compile": "compile_model", "cuda_graphs": "cuda_graphs",
              "device_preprocess": "device_preprocess"}

# model stages, in forward order: (name, top-level attributes of the segmentor)
STAGES = (
    ("image encoder", ("img_backbone", "img_neck")),
    ("depth net", ("depth_net",)),
    ("lift-splat", ("img_view_transformer",)),
    ("voxel proposal", ("proposal_layer",)),
    ("EVT", ("VoxFormer_head",)),
    ("LiDAR encoder", ("lidar_tokenizer",)),
    ("3D backbone", ("voxel_backbone", "voxel_neck")),
    ("TPV", ("tpv_generator", "tpv_aggregator")),
    ("head", ("pts_bbox_head",)),
)


def stats_ms(samples: Sequence[float]) -> Dict[str, float]:
    """Median and p95 of timings in ms."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timing samples (runs must be >= 1)")
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "n": int(a.size)}


def _time(fn: Callable[[], object], runs: int, warmup: int = 2) -> Dict[str, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return stats_ms(out)


def machine_info() -> Dict[str, str]:
    """CPU model, core count, GPU name and library versions."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "torch_threads": str(torch.get_num_threads())}


# ------------------------------------------------------------------------------------------------ node
def _occupied_volume(n_occupied: int, num_classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(256 * 256 * 32, np.uint8)
    idx = rng.choice(labels.size, n_occupied, replace=False)
    labels[idx] = rng.integers(1, num_classes, n_occupied)
    return labels.reshape(256, 256, 32)


def bench_node(runs: int = 50, voxel_counts: Sequence[int] = (20_000, 100_000, 200_000)) -> List[Dict[str, object]]:
    """Per-frame costs of the node's adapters (no model). Needs the ROS environment (rclpy, messages)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")
    import rclpy
    from rclpy.serialization import serialize_message
    from builtin_interfaces.msg import Time
    from visualization_msgs.msg import MarkerArray

    from l2cocc_ros.core.preprocess import build_camera_inputs
    from l2cocc_ros.core.classes import semantic_kitti
    from l2cocc_ros.core.grid import SEMANTIC_KITTI_GRID
    from l2cocc_ros.msg import SemanticVoxelGrid
    from l2cocc_ros.ros.grid_msg import grid_to_msg
    from l2cocc_ros.ros.image import image_to_rgb, numpy_to_image
    from l2cocc_ros.ros.markers import MarkerEncoder, MarkerOptions

    table = semantic_kitti()
    rows: List[Dict[str, object]] = []
    rng = np.random.default_rng(0)
    p2 = np.array([[718.856, 0, 607.1928, 45.38225], [0, 718.856, 185.2157, -0.1130887], [0, 0, 1, 0.003779761]])
    image = numpy_to_image(rng.integers(0, 255, (376, 1241, 3), dtype=np.uint8), "bgr8", stamp=(1, 0),
                           frame_id="camera")
    depth = rng.uniform(2, 50, (376, 1241)).astype(np.float32)

    def decode_preprocess():
        rgb = image_to_rgb(image)
        build_camera_inputs(rgb, p2, (384, 1280), stereo_depth=depth, T_grid_from_cam=np.eye(4))

    rows.append({"step": "image decode + preprocess (1241x376 -> 384x1280)", "voxels": "-",
                 **_time(decode_preprocess, runs)})
    # with fast.device_preprocess the node only decodes; resize/normalise run on the model's device
    rows.append({"step": "image decode only (fast.device_preprocess)", "voxels": "-",
                 **_time(lambda: image_to_rgb(image), runs)})
    rclpy.init()
    try:
        node = rclpy.create_node("l2cocc_bench")
        got = []
        grid_pub = node.create_publisher(SemanticVoxelGrid, "bench/grid", 1)
        marker_pub = node.create_publisher(MarkerArray, "bench/markers", 1)
        node.create_subscription(SemanticVoxelGrid, "bench/grid", lambda raw: got.append(len(raw)), 1, raw=True)
        node.create_subscription(MarkerArray, "bench/markers", lambda raw: got.append(len(raw)), 1, raw=True)
        encoder = MarkerEncoder(SEMANTIC_KITTI_GRID, table, MarkerOptions())
        for n in voxel_counts:
            labels = _occupied_volume(n, table.num_classes)

            def grid_step():
                msg = grid_to_msg(labels, stamp=(1, 0), frame_id="velodyne", grid=SEMANTIC_KITTI_GRID, table=table,
                                  model_variant="l2cocc-c", model_name="bench")
                grid_pub.publish(msg)
                rclpy.spin_once(node, timeout_sec=0)

            def marker_step():
                out = encoder.encode(labels, stamp=Time(sec=1), frame_id="velodyne")
                marker_pub.publish(out)
                rclpy.spin_once(node, timeout_sec=0)

            def marker_encode():
                encoder.encode(labels, stamp=Time(sec=1), frame_id="velodyne")

            rows.append({"step": "grid message (fill + publish)", "voxels": n, **_time(grid_step, runs)})
            rows.append({"step": "markers encode", "voxels": n, **_time(marker_encode, runs)})
            rows.append({"step": "markers encode + publish", "voxels": n, **_time(marker_step, runs)})
            rows[-3]["bytes"] = len(serialize_message(grid_to_msg(
                labels, stamp=(1, 0), frame_id="velodyne", grid=SEMANTIC_KITTI_GRID, table=table,
                model_variant="c", model_name="b")))
            out = encoder.encode(labels, stamp=Time(sec=1), frame_id="velodyne")
            rows[-1]["bytes"] = len(out) if isinstance(out, bytes) else len(serialize_message(out))
        node.destroy_node()
    finally:
        rclpy.shutdown()
    return rows


# ---------------------------------------------------------------------------------------------- engine
def _synthetic_frame(width: int = 1241, height: int = 376, seed: int = 0):
    """A textured stereo pair with a known disparity field (SGBM finds it) and KITTI seq-00 calibration."""
    rng = np.random.default_rng(seed)
    import cv2

    tex = cv2.resize(rng.integers(0, 255, (height // 4, (width + 200) // 4, 3), dtype=np.uint8),
                     (width + 200, height), interpolation=cv2.INTER_NEAREST)
    left = np.ascontiguousarray(tex[:, 100:100 + width])
    right = np.ascontiguousarray(tex[:, 130:130 + width])  # 30 px disparity everywhere
    p2 = np.array([[718.856, 0, 607.1928, 45.38225], [0, 718.856, 185.2157, -0.1130887], [0, 0, 1, 0.003779761]])
    p3 = p2.copy()
    p3[0, 3] = p2[0, 3] - 718.856 * 0.54
    t_velo_cam = np.array([[0, 0, 1, 0.27], [-1, 0, 0, 0.0], [0, -1, 0, -0.08], [0, 0, 0, 1.0]])
    pts = np.column_stack([rng.uniform(0, 50, 20000), rng.uniform(-25, 25, 20000), rng.uniform(-2, 3, 20000),
                           rng.uniform(0, 1, 20000)]).astype(np.float32)
    return left, right, p2, p3, t_velo_cam, pts


def _stage_hooks(model, records: Dict[str, float], sync: Callable[[], None]):
    handles = []
    for stage, attrs in STAGES:
        for attr in attrs:
            module = getattr(model, attr, None)
            if module is None:
                continue

            def pre(_m, _i, stage=stage):
                sync()
                records.setdefault("_t0_" + stage, time.perf_counter())

            def post(_m, _i, _o, stage=stage):
                sync()
                t0 = records.pop("_t0_" + stage, None)
                if t0 is not None:
                    records[stage] = records.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3

            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
    return handles


def _fast_columns(fast: Dict[str, bool]) -> Dict[str, bool]:
    """A result's fast-path columns (flag names) from InferenceEngine keywords."""
    return {flag: bool(fast.get(kw, False)) for flag, kw in FAST_FLAGS.items()}


def bench_engine(preset: str, device: str = "cpu", runs: int = 5, precision: str = "fp32",
                 **fast: bool) -> Dict[str, object]:
    """Per-stage and end-to-end times of one preset (random weights; timing does not depend on them).

    ``fast``: InferenceEngine fast-path keywords (the values of ``FAST_FLAGS``). Compiled paths are timed end to
    end only (a per-stage hook would split the compiled graphs) and warm up for two frames (CUDA graphs record
    on the first calls); the others for one.
    """
    import torch

    from l2cocc_ros.core.engine import InferenceEngine
    from l2cocc_ros.core.frame import StereoFrame

    engine = InferenceEngine.from_preset(preset, device=device, precision=precision, **fast)
    compiled = bool(fast.get("compile_model") or fast.get("cuda_graphs"))
    dev = engine.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    left, right, p2, p3, t_velo_cam, pts = _synthetic_frame()
    frame = StereoFrame.from_projections(left, right, p2, p3, t_velo_cam, stamp_ns=0, points=pts)
    records: Dict[str, float] = {}
    model = getattr(engine.model, "_orig_mod", engine.model)
    hooks = [] if compiled else _stage_hooks(model, records, sync)
    warmup = 2 if compiled else 1
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    samples: Dict[str, List[float]] = {}
    for i in range(runs + warmup):
        records.clear()
        res = engine.infer(frame)
        if i < warmup:
            continue
        for k, v in {**res.timings_ms, **records}.items():
            if not k.startswith("_t0_"):
                samples.setdefault(k, []).append(v)
    for h in hooks:
        h.remove()
    out = {"preset": preset, "device": str(dev), "precision": precision, **_fast_columns(fast),
           "stages": {k: stats_ms(v) for k, v in samples.items()},
           "cpu_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if dev.type == "cuda":
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def bench_agreement(preset: str, device: str, precision: str, seed: int = 0, **fast: bool) -> Dict[str, object]:
    """Labels of a fast path (``precision`` + InferenceEngine ``fast`` keywords) vs fp32 eager on the same input
    (same weights); the fast path's second frame is compared (CUDA graphs record on the first)."""
    from l2cocc_ros.core.engine import InferenceEngine
    from l2cocc_ros.core.frame import StereoFrame

    left, right, p2, p3, t_velo_cam, pts = _synthetic_frame()
    frame = StereoFrame.from_projections(left, right, p2, p3, t_velo_cam, stamp_ns=0, points=pts)
    ref = InferenceEngine.from_preset(preset, device=device, seed=seed).infer(frame).labels
    engine = InferenceEngine.from_preset(preset, device=device, seed=seed, precision=precision, **fast)
    for _ in range(2):
        got = engine.infer(frame).labels
    inter = np.logical_and(ref > 0, got > 0).sum()
    union = np.logical_or(ref > 0, got > 0).sum()
    return {"preset": preset, "device": device, "precision": precision, **_fast_columns(fast),
            "agreement_pct": float(100.0 * (ref == got).mean()),
            "occupancy_iou_pct": float(100.0 * inter / max(union, 1))}


# ---------------------------------------------------------------------------------------------- report
def _in_subprocess(kind: str, kwargs: Dict[str, object], timeout_s: float) -> Dict[str, object]:
    code = ("import json,sys; from l2cocc_ros.tools import bench; "
            f"print('BENCH_JSON'+json.dumps(bench.bench_{kind}(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-P", "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO, env=dict(os.environ))
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON"):
            return json.loads(line[len("BENCH_JSON"):])
    raise RuntimeError(f"bench_{kind}({kwargs}) failed:\n{proc.stderr[-3000:]}")


def _node_table(rows) -> str:
    lines = ["| step | occupied voxels | message [bytes] | p50 [ms] | p95 [ms] | runs |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['voxels']} | {r.get('bytes', '-')} | {r['p50']:.2f} | {r['p95']:.2f} | {r['n']} |"
              for r in rows]
    return "\n".join(lines)


def _engine_table(results) -> str:
    order = ["stereo", "preprocess"] + [s for s, _ in STAGES] + ["model", "argmax", "total"]
    heads = [_path_name(r) for r in results]
    lines = ["| stage | " + " | ".join(f"{h} p50 / p95 [ms]" for h in heads) + " |",
             "|---|" + "---:|" * len(results)]
    for stage in order:
        cells = []
        for r in results:
            s = r["stages"].get(stage)
            cells.append(f"{s['p50']:.1f} / {s['p95']:.1f}" if s else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| runs | " + " | ".join(str(r["stages"]["total"]["n"]) for r in results) + " |")
    lines.append("| peak CPU RSS [MB] | " + " | ".join(f"{r['cpu_peak_rss_mb']:.0f}" for r in results) + " |")
    if any("gpu_max_allocated_mb" in r for r in results):
        lines.append("| GPU max allocated [MB] | " + " | ".join(
            f"{r['gpu_max_allocated_mb']:.0f}" if "gpu_max_allocated_mb" in r else "-" for r in results) + " |")
    return "\n".join(lines)


def _targets_table(node_rows, engine_results, agreement_rows) -> str:
    """Issue targets vs what this run measured: met, missed by how much, or not measured."""
    lines = ["| target | measured | verdict |", "|---|---:|---|"]

    def verdict(value, limit, higher_is_better=False):
        if higher_is_better:
            return "met" if value >= limit else f"missed by {limit - value:.2f} points"
        return "met" if value <= limit else f"missed by {value / limit:.1f}x"

    if node_rows:
        p50 = {r["step"]: r["p50"] for r in node_rows if r["voxels"] in (100_000, "-")}
        rest = [p50["grid message (fill + publish)"], p50["markers encode + publish"]]
        for image_step in ("image decode + preprocess (1241x376 -> 384x1280)",
                           "image decode only (fast.device_preprocess)"):
            parts = [p50[image_step]] + rest
            lines.append(f"| node overhead p50 at 100k occupied voxels <= 5 ms (2-core CPU): {image_step}, grid, "
                         f"markers | {sum(parts):.1f} ms ({' + '.join(f'{v:.1f}' for v in parts)}) | "
                         f"{verdict(sum(parts), 5.0)} |")
    gpu = [r for r in engine_results or [] if str(r["device"]).startswith("cuda") and "semantickitti" in r["preset"]]
    if gpu:
        best = min(gpu, key=lambda r: r["stages"]["total"]["p50"])
        t, mem = best["stages"]["total"]["p50"], best.get("gpu_max_allocated_mb", float("nan"))
        lines.append(f"| full-resolution end to end (stereo included) p50 <= 40 ms on GPU | {t:.1f} ms "
                     f"({_path_name(best)}) | {verdict(t, 40.0)} |")
        lines.append(f"| GPU memory <= 2.5 GB | {mem / 1024:.2f} GB | {verdict(mem / 1024, 2.5)} |")
    else:
        lines.append("| full-resolution end to end p50 <= 40 ms, <= 2.5 GB on an H100 | not measured (no GPU in this run) | - |")
    gpu_agree = [r for r in agreement_rows or [] if str(r["device"]).startswith("cuda")]
    if gpu_agree:
        worst = min(gpu_agree, key=lambda r: r["agreement_pct"])
        lines.append(f"| fast path voxel agreement >= 99.5 % vs fp32 eager | {worst['agreement_pct']:.3f} % | "
                     f"{verdict(worst['agreement_pct'], 99.5, higher_is_better=True)} |")
    else:
        lines.append("| fast path voxel agreement >= 99.5 % on GPU | not measured (no GPU in this run) | - |")
    return "\n".join(lines)


def _fast_path(r: Dict[str, object], sep: str = " + ") -> str:
    """The precision and the fast-path flags of a result, e.g. ``bf16 + channels_last``."""
    return sep.join([str(r["precision"])] + [flag for flag in FAST_FLAGS if r.get(flag)])


def _path_name(r: Dict[str, object]) -> str:
    return f"{r['preset']} {r['device']} {_fast_path(r, ' ')}"


def _agreement_table(rows) -> str:
    lines = ["| preset | device | path | voxels equal [%] | occupancy IoU [%] |", "|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['device']} | {_fast_path(r)} | {r['agreement_pct']:.3f} | {r['occupancy_iou_pct']:.3f} |")
    return "\n".join(lines)


def _fast_kwargs(flags: Sequence[str]) -> Dict[str, bool]:
    """InferenceEngine fast-path keywords from the flags of a spec.

    Raises:
        ValueError: an unknown flag (the valid ones are listed).
    """
    unknown = sorted(set(flags) - set(FAST_FLAGS))
    if unknown:
        raise ValueError(f"unknown fast-path flag(s) {unknown}; valid: {sorted(FAST_FLAGS)}")
    return {kw: flag in flags for flag, kw in FAST_FLAGS.items()}


def _split_spec(spec: str) -> List[str]:
    """Split PRESET:DEVICE:... where DEVICE may itself be ``cuda:N``."""
    parts = spec.split(":")
    if len(parts) > 2 and parts[1] == "cuda" and parts[2].isdigit():
        parts[1:3] = [f"cuda:{parts[2]}"]
    return parts


def _spec_kwargs(spec: str, *, with_runs: bool) -> Dict[str, object]:
    """Keywords of ``bench_engine`` (``PRESET:DEVICE:RUNS[:PRECISION][:FLAG...]``, ``with_runs``) or of
    ``bench_agreement`` (``PRESET:DEVICE:PRECISION[:FLAG...]``), checked before anything runs.

    Raises:
        ValueError: a malformed spec, an unknown flag, or flags that cannot run together or on the device.
    """
    parts = _split_spec(spec)
    if len(parts) < 3:
        raise ValueError(f"{spec!r}: expected PRESET:DEVICE:{'RUNS' if with_runs else 'PRECISION'}[:...]")
    preset, device, *rest = parts
    kw: Dict[str, object] = {"preset": preset, "device": device}
    if with_runs:
        runs = rest.pop(0)
        if not runs.isdigit() or int(runs) < 1:
            raise ValueError(f"{spec!r}: RUNS must be a positive integer, got {runs!r}")
        kw["runs"] = int(runs)
    kw["precision"] = rest.pop(0) if rest and (not with_runs or rest[0] not in FAST_FLAGS) else "fp32"
    fast = _fast_kwargs(rest)
    from l2cocc_ros.core.engine import check_fast_path

    try:
        check_fast_path(device.split(":")[0], compile_model=fast["compile_model"], cuda_graphs=fast["cuda_graphs"])
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    return {**kw, **fast}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="l2cocc bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["node", "engine", "agreement"],
                        choices=["node", "engine", "agreement"], help="what to measure")
    parser.add_argument("--node-runs", type=int, default=50, help="repetitions of each node step")
    parser.add_argument("--engine", nargs="+", default=["tiny_l2cocc_c:cpu:10", "semantickitti_l2cocc_c:cpu:2"],
                        metavar="PRESET:DEVICE:RUNS[:PRECISION][:channels_last][:compile|:cuda_graphs][:device_preprocess]",
                        help="engine configurations (DEVICE: cpu, cuda or cuda:N)")
    parser.add_argument("--agreement", nargs="+", default=["tiny_l2cocc_c:cpu:fp32:channels_last"],
                        metavar="PRESET:DEVICE:PRECISION[:channels_last][:compile|:cuda_graphs][:device_preprocess]",
                        help="fast paths to compare")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md", help="markdown report")
    parser.add_argument("--timeout", type=float, default=3600, help="per configuration [s]")
    args = parser.parse_args(argv)
    try:
        engine_kw = [_spec_kwargs(spec, with_runs=True) for spec in args.engine]
        agreement_kw = [_spec_kwargs(spec, with_runs=False) for spec in args.agreement]
    except ValueError as exc:
        parser.error(str(exc))

    failed: List[str] = []

    def measure(kind: str, kw: Dict[str, object], spec: str) -> Optional[Dict[str, object]]:
        """One configuration; a failure is reported and the others still run."""
        try:
            return _in_subprocess(kind, kw, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            last = str(exc).strip().splitlines()[-1]
            print(f"{spec}: FAILED: {last}", file=sys.stderr, flush=True)
            failed.append(f"- `{spec}` ({kind}): {last}")
            return None

    info = machine_info()
    report = [f"# Benchmark results ({time.strftime('%Y-%m-%d')})", "",
              "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), "",
              f"Command: `l2cocc bench {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    rows = results = agreement = None
    if "node" in args.sections:
        rows = measure("node", {"runs": args.node_runs}, "node")
        if rows is not None:
            report += ["## Node overhead per frame (no model)", "", _node_table(rows), ""]
            print(report[-2], flush=True)
    if "engine" in args.sections:
        results = []
        for spec, kw in zip(args.engine, engine_kw):
            res = measure("engine", kw, spec)
            if res is not None:
                results.append(res)
                print(f"{spec}: total p50 {res['stages']['total']['p50']:.1f} ms", flush=True)
        report += ["## Engine per stage (random weights, synthetic 1241x376 stereo pair)", "",
                   _engine_table(results), ""]
        print(report[-2], flush=True)
    if "agreement" in args.sections:
        agreement = [r for r in (measure("agreement", kw, spec) for spec, kw in zip(args.agreement, agreement_kw))
                     if r is not None]
        report += ["## Fast path vs fp32 eager (same weights, same input)", "", _agreement_table(agreement), ""]
        print(report[-2], flush=True)
    report += ["## Targets (issue 7)", "", _targets_table(rows, results, agreement), ""]
    print(report[-2], flush=True)
    if failed:
        report += ["## Failed configurations", "", *failed, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")
    return exit_codes.FAILED if failed else exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
