#!/usr/bin/env python3
"""Stereo backends: time, peak memory and FLOPs per frame (depth of the left image on the backend's device).

Each case runs in its own process, so its peak memory is its own: on the CPU the peak resident set size of that
process (and what the runs added over the process after the backend was built); on CUDA
``torch.cuda.max_memory_allocated``. Time is the median (and p90) of ``--runs`` timed calls after one warm-up,
synchronised on CUDA. FLOPs are ``torch.utils.flop_counter`` over one call (convolutions, matmuls; the
comparisons and sums of census matching and everything OpenCV does are not counted: "-").

MSNet timings need no trained weights: a file with the official keys and default-initialised values is made in
a temporary folder (timing and memory do not depend on the values). The pair is a textured image with a 30 px
shift; KITTI's fx.

    python bench/stereo.py                                   # every backend at 376x1241 on the CPU
    python bench/stereo.py --cases msnet3d:188x620 sgbm:376x1241 --runs 3
    python bench/stereo.py --device cuda --cases msnet3d:376x1241 msnet2d:376x1241   # GPU rows

``run_cases(cases, device, runs)`` returns the rows and ``format_table(rows)`` the Markdown table, for other
bench scripts (bench/gpu_check).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("sgbm", "torch_census", "msnet3d", "msnet2d")
DEFAULT_CASES = tuple(f"{b}:376x1241" for b in BACKENDS)
FX, BASELINE = 718.856, 0.54


def _pair(h: int, w: int):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    tex = cv2.resize(rng.integers(0, 255, (h // 4, (w + 200) // 4, 3), dtype=np.uint8), (w + 200, h),
                     interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(tex[:, 100:100 + w]), np.ascontiguousarray(tex[:, 130:130 + w])


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _make_backend(name: str, device: str, weights_dir: str):
    import torch

    from l2cocc_ros.core.stereo import get_stereo_backend
    from l2cocc_ros.core.stereo.msnet.backend import MSNET_MODELS

    kwargs = {}
    if name in MSNET_MODELS:
        path = os.path.join(weights_dir, f"{name}.ckpt")
        torch.manual_seed(0)
        torch.save({"model": {f"module.{k}": v for k, v in MSNET_MODELS[name]().state_dict().items()}}, path)
        kwargs["weights"] = path
    elif name == "torch_census":
        kwargs["num_disparities"] = 128
    return get_stereo_backend(name, **kwargs).to(device)


def measure(case: str, device: str = "cpu", runs: int = 5) -> Dict[str, object]:
    """One case ``backend:HxW`` in this process: {case, device, ms_p50, ms_p90, runs, peak_mb, added_mb, gflops}."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    name, size = case.split(":")
    h, w = (int(v) for v in size.split("x"))
    left, right = _pair(h, w)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        backend = _make_backend(name, device, tmp)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            backend.depth(left, right, FX, BASELINE)  # also the warm-up
        sync()
        idle = _rss_mb()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            depth = backend.depth(left, right, FX, BASELINE)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    assert depth.shape == (h, w) and depth.device.type == dev.type
    flops = counter.get_total_flops()
    times.sort()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        added = float("nan")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        added = peak - idle
    return {"case": case, "device": str(dev), "ms_p50": statistics.median(times),
            "ms_p90": times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))], "runs": runs,
            "peak_mb": peak, "added_mb": added, "gflops": flops / 1e9 if flops else None}


def run_cases(cases: Sequence[str], device: str = "cpu", runs: int = 5) -> List[Dict[str, object]]:
    """Every case in a fresh process (its own peak memory); a failing case gives a row with its error."""
    rows = []
    for case in cases:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", case, "--device", device, "--runs", str(runs)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode == 0:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            rows.append({"case": case, "device": device, "error": done.stderr.strip().splitlines()[-1:]})
        print(f"  {case} on {device}: {rows[-1]}", file=sys.stderr)
    return rows


def format_table(rows: Sequence[Dict[str, object]]) -> str:
    """Markdown table of ``run_cases`` rows."""
    lines = ["| backend | image (HxW) | device | p50 [ms] | p90 [ms] | runs | peak memory [MB] | added by the runs [MB] "
             "| GFLOPs (counted) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name, size = str(r["case"]).split(":")
        if "error" in r:
            lines.append(f"| {name} | {size} | {r['device']} | failed: {r['error']} | | | | | |")
            continue
        mem = "GPU allocated" if str(r["device"]).startswith("cuda") else "RSS"
        added = "-" if r["added_mb"] != r["added_mb"] else f"{r['added_mb']:.0f}"
        gf = "-" if not r["gflops"] else f"{r['gflops']:.1f}"
        lines.append(f"| {name} | {size} | {r['device']} | {r['ms_p50']:.1f} | {r['ms_p90']:.1f} | {r['runs']} | "
                     f"{r['peak_mb']:.0f} ({mem}) | {added} | {gf} |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"cpu {cpu}, cores {os.cpu_count()}, gpu {gpu}, torch {torch.__version__}, "
            f"python {platform.python_version()}, torch_threads {torch.get_num_threads()}, load average {load} "
            f"(1/5/15 min, at the end: other jobs share the cores)")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="backend:HxW (backends: %s)"
                   % ", ".join(BACKENDS))
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--runs", type=int, default=5, help="timed calls per case (after one warm-up)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one case, print JSON
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.runs)))
        return 0
    rows = run_cases(args.cases, args.device, args.runs)
    print(f"Machine: {machine()}\n")
    print(format_table(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
