"""``bench/gpu_check``: validate a GPU for this package in one command (at most 8 minutes on an H100 / H200).

Every check runs in its own process with a timeout (a CUDA device-side assert kills only its process) and the
whole run keeps to an overall budget: a check that would start past it is reported as skipped. Results go to
``bench/gpu_check.json`` and a Markdown table ``bench/GPU_CHECK.md`` with the GPU's name.

Checks (full-size SemanticKITTI presets on the GPU; random weights where no trained checkpoint is shipped,
which the agreement table says):

* ``fp32 eager``: -C per stage latency, end to end, peak GPU memory, host syncs per frame;
* ``fp16`` / ``bf16`` with ``channels_last`` and ``device_preprocess``; the same with ``cuda_graphs``;
* ``torch_census stereo`` alone on the GPU, and end to end image -> labels with it (stereo included);
* ``msnet3d`` / ``msnet2d`` stereo on the GPU (``bench/stereo.py``'s measurement: time, peak memory, counted
  FLOPs; official-layout weights with default values: timing does not depend on them);
* ``-L`` engine;
* ``agreement``: every fast path against fp32 eager, two frames alternated (a stale CUDA-graph replay fails),
  the shipped trained -L (and the trained -C / -D that are shipped) as well;
* ``train step``: one optimiser step per variant (-C, -D, -L): finite loss and gradients, step time, peak memory.

``--cpu-dry-run`` runs every step end to end on the CPU with the tiny presets and one timed run (CUDA graphs
replaced by the same static-stage capture with the eager backend), to prove the script before a GPU is at
hand; its output goes to ``bench/gpu_check_cpu_dry_run.{json,md}`` and is no GPU number.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from l2cocc_ros.core.checkpoint import SHIPPED_LIDAR_CHECKPOINT
from l2cocc_ros.tools import bench

__all__ = ["plan", "stereo_step", "stereo_backend_step", "train_step", "main"]

BENCH_DIR = bench.REPO / "bench"


def plan(dry_run: bool) -> List[Dict[str, object]]:
    """The checks, in run order: ``name``, ``fn`` (a function of this module or of ``bench``), ``kwargs``,
    ``timeout_s``."""
    dev = "cpu" if dry_run else "cuda"
    full = "tiny" if dry_run else "semantickitti"
    runs = 1 if dry_run else 10
    steps = 1 if dry_run else 2  # training steps (the second is timed on a GPU, after cuDNN's first-call setup)
    size = dict(width=414, height=126) if dry_run else {}  # a third of KITTI's size: CPU stereo in seconds
    warm = dict(warmup=0) if dry_run else {}  # the dry run proves the steps, it times nothing
    fast = dict(channels_last=True, device_preprocess=True)
    graphs = {"graphs_backend": "eager"} if dry_run else {"cuda_graphs": True}

    def engine(name, preset, precision="fp32", timeout=60, **kw):
        return {"name": name, "fn": "engine", "timeout_s": timeout,
                "kwargs": dict(preset=preset, device=dev, runs=runs, precision=precision, **size, **warm, **kw)}

    def agree(name, preset, precision, timeout=90, **kw):
        return {"name": name, "fn": "agreement", "timeout_s": timeout,
                "kwargs": dict(preset=preset, device=dev, precision=precision, **kw)}

    c, l = f"{full}_l2cocc_c", f"{full}_l2cocc_l"
    shipped_l = SHIPPED_LIDAR_CHECKPOINT.stem  # the shipped trained -L's preset
    checks = [
        engine("fp32 eager -C", c),
        engine("fp16 channels_last device_preprocess -C", c, "fp16", **fast),
        engine("bf16 channels_last device_preprocess -C", c, "bf16", **fast),
        {"name": "torch_census stereo", "fn": "stereo", "timeout_s": 45,
         "kwargs": dict(device=dev, runs=max(runs, 3), **size)},
        engine("end to end bf16 fast + torch_census stereo -C", c, "bf16", stereo="torch_census", **fast),
        *({"name": f"{net} stereo", "fn": "stereo_backend", "timeout_s": 90,
           "kwargs": dict(backend=net, device=dev, runs=max(runs, 3),
                          **(dict(width=208, height=64) if dry_run else {}))} for net in ("msnet3d", "msnet2d")),
        engine("fp32 eager -L", l),
        agree("agreement fp16 -C", c, "fp16"),
        agree("agreement bf16 channels_last device_preprocess -C", c, "bf16", **fast),
        agree(f"agreement fp16 -L (trained {shipped_l})", shipped_l, "fp16"),
        agree(f"agreement bf16 -L (trained {shipped_l})", shipped_l, "bf16", channels_last=True),
    ]
    for small in ("tiny", "micro"):  # trained camera models, once shipped
        for v in ("c", "d"):
            if (bench.CHECKPOINTS / f"{small}_l2cocc_{v}.pt").is_file():
                checks.append(agree(f"agreement bf16 -{v.upper()} (trained {small})", f"{small}_l2cocc_{v}", "bf16"))
    checks += [
        {"name": "train step -C", "fn": "train", "timeout_s": 90, "kwargs": dict(preset=c, device=dev, steps=steps)},
        {"name": "train step -D", "fn": "train", "timeout_s": 120,
         "kwargs": dict(preset=f"{full}_l2cocc_d", device=dev, steps=steps)},
        {"name": "train step -L", "fn": "train", "timeout_s": 60, "kwargs": dict(preset=l, device=dev, steps=steps)},
        # last: compile warm-up of the static stages (minutes on a GPU) must not starve the others
        engine("cuda_graphs bf16 channels_last device_preprocess -C", c, "bf16", timeout=150, **fast, **graphs),
        agree("agreement cuda_graphs bf16 fast -C (frames A, B, A, B)", c, "bf16", timeout=150, **fast, **graphs),
    ]
    return checks


def _engine_kwargs(kw: Dict[str, object]) -> Dict[str, object]:
    """Split off ``graphs_backend`` (the dry run's stand-in for CUDA graphs) from bench keywords."""
    return {k: v for k, v in kw.items() if k != "graphs_backend"}


def _with_graphs_backend(kw: Dict[str, object], fn):
    """Run a bench function; with ``graphs_backend`` every engine built inside captures its static-shape stages
    with that torch.compile backend (``eager`` on a CPU: the same whole-graph tracing as ``cuda_graphs``)."""
    backend = kw.get("graphs_backend")
    if backend is None:
        return fn(**kw)
    from l2cocc_ros.core import engine as engine_mod

    real_init = engine_mod.InferenceEngine.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if kwargs.get("precision", "fp32") != "fp32" or kwargs.get("channels_last"):  # the fast engine only
            engine_mod.capture_static_stages(self.model, backend=backend)

    engine_mod.InferenceEngine.__init__ = init
    try:
        return fn(**_engine_kwargs(kw))
    finally:
        engine_mod.InferenceEngine.__init__ = real_init


def stereo_step(device: str, runs: int = 5, width: int = 1241, height: int = 376) -> Dict[str, object]:
    """torch_census depth of a full KITTI-size pair on ``device``: p50 / p95 ms, valid fraction, peak memory."""
    import torch

    from l2cocc_ros.core.stereo import get_stereo_backend

    left, right, p2, _, _, _ = bench._synthetic_frame(width, height)
    backend = get_stereo_backend("torch_census").to(device)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def once():
        out = backend.depth(left, right, float(p2[0, 0]), 0.54)
        sync()
        return out

    depth = once()
    timing = bench._time(once, runs, warmup=1)
    out = {"device": str(dev), "size": f"{width}x{height}", **timing,
           "valid_pct": float(100.0 * (depth > 0).float().mean())}
    if dev.type == "cuda":
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def stereo_backend_step(backend: str, device: str, runs: int = 5, width: int = 1241,
                        height: int = 376) -> Dict[str, object]:
    """A stereo backend's depth of a ``height`` x ``width`` pair on ``device``, measured by ``bench/stereo.py``
    (p50 / p90 ms, peak memory, counted GFLOPs)."""
    spec = importlib.util.spec_from_file_location("l2cocc_stereo_bench", BENCH_DIR / "stereo.py")
    stereo_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stereo_bench)
    return stereo_bench.measure(f"{backend}:{height}x{width}", device, runs)


def train_step(preset: str, device: str, steps: int = 2) -> Dict[str, object]:
    """``steps`` optimiser steps of a variant on a synthetic batch (fp32, as Lightning trains here).

    Returns the last step's loss, whether every loss and gradient was finite, the step time of the last step and
    the peak memory. Raises if a loss or a gradient is not finite (the check fails).
    """
    import torch

    from l2cocc_ros.core.preprocess import build_camera_inputs
    from l2cocc_ros.core.config import get_preset
    from l2cocc_ros.core.training import L2COccSystem, build_optimizer

    exp = get_preset(preset)
    dev = torch.device(device)
    torch.manual_seed(0)
    system = L2COccSystem(exp)
    model = system.model.to(dev).train()
    opt, _ = build_optimizer(model.parameters(), exp.train)
    left, _, p2, _, t_velo_cam, pts = bench._synthetic_frame()
    rng = np.random.default_rng(0)
    inputs, _ = build_camera_inputs(left, p2, exp.model.image_size, stereo_depth=rng.uniform(3, 40, left.shape[:2])
                                    .astype(np.float32), T_grid_from_cam=t_velo_cam)
    inputs["points"] = torch.from_numpy(pts)
    x, y, z = exp.model.grid.dims
    t12 = torch.randint(0, exp.model.num_classes, (1, x // 2, y // 2, z // 2))
    lidar_depth = torch.zeros(1, 1, *exp.model.image_size)
    lidar_depth[..., ::4, ::4] = 12.0
    batch = {"inputs": {k: v.to(dev) for k, v in inputs.items()},
             "target": t12.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3).to(dev),
             "target_1_2": t12.to(dev), "lidar_depth": lidar_depth.to(dev)}
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(batch["inputs"])
        losses = system.compute_losses(batch, out)
        loss = torch.stack(list(losses.values())).sum()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        if not finite:
            raise FloatingPointError(f"{preset}: non-finite loss or gradient ({ {k: float(v) for k, v in losses.items()} })")
        opt.step()
        sync()
        step_ms = (time.perf_counter() - t0) * 1e3
    out = {"preset": preset, "device": str(dev), "loss": float(loss), "terms": len(losses), "params_with_grad":
           len(grads), "finite": True, "step_ms": step_ms,
           "cpu_peak_rss_mb": bench.resource.getrusage(bench.resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if dev.type == "cuda":
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


_FUNCTIONS = {"engine": bench.bench_engine, "agreement": bench.bench_agreement, "stereo": stereo_step,
              "stereo_backend": stereo_backend_step, "train": train_step}


def _child(fn: str, kwargs_json: str) -> None:
    """Entry of a check's process: print one ``GPU_CHECK_JSON`` line."""
    kwargs = json.loads(kwargs_json)
    print("GPU_CHECK_JSON" + json.dumps(_with_graphs_backend(kwargs, _FUNCTIONS[fn])), flush=True)


def _run_check(check: Dict[str, object], timeout_s: float) -> Dict[str, object]:
    code = "import sys; from l2cocc_ros.tools import gpu_check; gpu_check._child(sys.argv[1], sys.argv[2])"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-P", "-c", code, str(check["fn"]), json.dumps(check["kwargs"])],
                              capture_output=True, text=True, timeout=timeout_s, cwd=bench.REPO, env=bench.child_env())
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"no result within {timeout_s:.0f} s", "wall_s": timeout_s}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("GPU_CHECK_JSON"):
            return {"status": "ok", "result": json.loads(line[len("GPU_CHECK_JSON"):]), "wall_s": wall}
    return {"status": "failed", "error": f"exit {proc.returncode}:\n{proc.stderr[-6000:]}", "wall_s": wall}


def _summary(check: Dict[str, object]) -> str:
    """One table cell of what a check measured."""
    r = check.get("result") or {}
    if check["fn"] == "engine" and r:
        s = r["stages"]
        text = f"total p50 {s['total']['p50']:.1f} ms (model {s['model']['p50']:.1f}, stereo {s['stereo']['p50']:.1f})"
        if "gpu_max_allocated_mb" in r:
            text += f", peak {r['gpu_max_allocated_mb']:.0f} MB"
        if "syncs_per_frame" in r:
            text += f", {r['syncs_per_frame']} syncs/frame"
        return text
    if check["fn"] == "agreement" and r:
        return (f"{r['agreement_pct']:.3f} % equal (worst of {len(r['agreement_per_call'])} calls), "
                f"IoU {r['occupancy_iou_pct']:.2f} %, weights {r['weights']}")
    if check["fn"] == "stereo" and r:
        return f"p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, {r['valid_pct']:.0f} % valid ({r['size']})"
    if check["fn"] == "stereo_backend" and r:
        gflops = f", {r['gflops']:.1f} GFLOPs" if r.get("gflops") else ""
        return f"p50 {r['ms_p50']:.1f} ms, p90 {r['ms_p90']:.1f} ms, peak {r['peak_mb']:.0f} MB{gflops} ({r['case']})"
    if check["fn"] == "train" and r:
        mem = f", peak {r['gpu_max_allocated_mb']:.0f} MB" if "gpu_max_allocated_mb" in r else ""
        return f"loss {r['loss']:.3f} finite, grads finite ({r['params_with_grad']}), step {r['step_ms']:.0f} ms{mem}"
    return str(check.get("error", "")).strip().splitlines()[0][:160] if check.get("error") else "-"


def _stage_table(checks: List[Dict[str, object]]) -> List[str]:
    engines = [c for c in checks if c["fn"] == "engine" and c.get("status") == "ok"]
    if not engines:
        return []
    order = ["stereo", "preprocess"] + [s for s, _ in bench.STAGES] + ["model", "argmax", "total"]
    lines = ["| stage p50 [ms] | " + " | ".join(c["name"] for c in engines) + " |", "|---|" + "---:|" * len(engines)]
    for stage in order:
        cells = [c["result"]["stages"].get(stage) for c in engines]
        if any(cells):
            lines.append(f"| {stage} | " + " | ".join(f"{x['p50']:.1f}" if x else "-" for x in cells) + " |")
    return lines


def report(checks: List[Dict[str, object]], info: Dict[str, str], dry_run: bool, wall_s: float) -> str:
    """The Markdown report."""
    title = "CPU dry run of bench/gpu_check (NOT GPU numbers)" if dry_run else f"GPU check on {info['gpu']}"
    lines = [f"# {title} ({time.strftime('%Y-%m-%d')})", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), "",
             f"Command: `bench/gpu_check{' --cpu-dry-run' if dry_run else ''}`, {wall_s:.0f} s in all.", "",
             "| check | status | wall [s] | result |", "|---|---|---:|---|"]
    for c in checks:
        lines.append(f"| {c['name']} | {c.get('status', '-')} | {c.get('wall_s', 0):.0f} | {_summary(c)} |")
    stages = _stage_table(checks)
    if stages:
        lines += ["", "## Engine stages", ""] + stages
    failed = [c for c in checks if c.get("status") in ("failed", "timeout")]
    if failed:
        lines += ["", "## Errors", ""]
        for c in failed:
            lines += [f"### {c['name']}", "", "```", str(c["error"]).strip(), "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="every step on the CPU, tiny presets")
    parser.add_argument("--budget", type=float, default=None,
                        help="overall seconds (default 480 on a GPU, 300 for the dry run)")
    parser.add_argument("--only", nargs="+", default=None, metavar="WORD",
                        help="run only the checks whose name contains one of these words")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where the JSON and Markdown go")
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    if not dry:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here: run on a GPU machine, or --cpu-dry-run to check the script")
    budget = args.budget or (300.0 if dry else 480.0)
    checks = [c for c in plan(dry) if not args.only or any(w in c["name"] for w in args.only)]
    info = bench.machine_info()
    t_start = time.perf_counter()
    for check in checks:
        left = budget - (time.perf_counter() - t_start)
        if left < 5:
            check.update(status="skipped", error="overall budget spent")
        else:  # the timeouts are a GPU's; a CPU runs the tiny presets several times slower
            check.update(_run_check(check, min(float(check["timeout_s"]) * (3 if dry else 1), left)))
        print(f"{check['name']}: {check['status']} ({check.get('wall_s', 0):.0f} s) {_summary(check)}", flush=True)
    wall = time.perf_counter() - t_start
    stem = "gpu_check_cpu_dry_run" if dry else "gpu_check"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps({"machine": info, "dry_run": dry, "wall_s": wall,
                                                           "checks": checks}, indent=1) + "\n")
    md = args.out_dir / ("gpu_check_cpu_dry_run.md" if dry else "GPU_CHECK.md")
    md.write_text(report(checks, info, dry, wall))
    print(f"wrote {md} and {stem}.json ({wall:.0f} s)")
    return 0 if all(c.get("status") == "ok" for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
