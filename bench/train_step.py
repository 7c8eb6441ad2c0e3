"""Training step time of camera presets on one CPU thread (forward + losses + backward + AdamW step).

Median of ``--steps`` steps after ``--warmup`` steps, over the frames of a preprocessed dataset (the synthetic
benchmark), with the recipe of ``l2cocc train`` (``L2COccSystem.compute_losses``, ``build_optimizer``). Prints a
table; parameter counts are of the deployed camera model. A loaded machine inflates every number alike.

Example::

    OMP_NUM_THREADS=1 python -P bench/train_step.py --data runs/synth_bench/data --labels runs/synth_bench/labels \\
        --stereo runs/synth_bench/stereo --presets tiny_l2cocc_c micro_l2cocc_c
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from l2cocc_ros.core.config import get_preset
from l2cocc_ros.core.training.data import collate_single
from l2cocc_ros.core.training.system import L2COccSystem, build_optimizer
from l2cocc_ros.tools.train import make_dataset


def step_times(preset: str, args: argparse.Namespace) -> tuple:
    torch.manual_seed(0)
    cfg = get_preset(preset)
    system = L2COccSystem(cfg)
    system.model.train()
    data = make_dataset(cfg, args.data, args.sequences, labels=args.labels, stereo=args.stereo,
                        stereo_backend="sgbm", train=True)
    opt, sched = build_optimizer(system.model.parameters(), cfg.train)
    times = []
    for i in range(args.warmup + args.steps):
        batch = collate_single([data[i % len(data)]])
        t0 = time.perf_counter()
        losses = system.compute_losses(batch, system.model(batch["inputs"]))
        opt.zero_grad()
        torch.stack(list(losses.values())).sum().backward()
        opt.step()
        sched.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    params = sum(p.numel() for n, p in system.model.named_parameters() if not n.startswith("teacher."))
    return params, statistics.median(times), min(times), max(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--stereo", required=True)
    p.add_argument("--sequences", nargs="+", default=["00"])
    p.add_argument("--presets", nargs="+", default=["tiny_l2cocc_c", "micro_l2cocc_c"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = [(name, *step_times(name, args)) for name in args.presets]
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, {args.steps} steps each")
    print(f"{'preset':<18} {'params':>10} {'median s/step':>14} {'min':>7} {'max':>7}")
    for name, params, med, lo, hi in rows:
        print(f"{name:<18} {params:>10,} {med:>14.2f} {lo:>7.2f} {hi:>7.2f}")


if __name__ == "__main__":
    main()
