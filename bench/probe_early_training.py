"""Instrumented first steps of a training run: why does a camera model predict all-empty early?

Runs ``--steps`` optimiser steps of ``L2COccSystem`` (the training recipe of ``l2cocc train``, without
Lightning) over a preprocessed dataset and prints, per step: every loss term, the learning rate, the share of
valid voxels predicted occupied (argmax != empty) and truly occupied, the mean logit margin
``logit[empty] - max(other logits)`` on truly occupied voxels, and the gradient norm of the head's last layer.

Example::

    python -P bench/probe_early_training.py --config micro_l2cocc_c --data runs/synth_bench/data \\
        --labels runs/synth_bench/labels --stereo runs/synth_bench/stereo --sequences 00 01 --steps 40
"""
from __future__ import annotations

import argparse
import time

import torch

from l2cocc_ros.core.config import get_preset, with_overrides
from l2cocc_ros.core.training.data import collate_single
from l2cocc_ros.core.training.system import L2COccSystem, build_optimizer
from l2cocc_ros.core.data.training_sets import make_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="micro_l2cocc_c")
    p.add_argument("--data", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--stereo", required=True)
    p.add_argument("--sequences", nargs="+", default=["00"])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--schedule-steps", type=int, default=1000, help="OneCycle length (the run being probed)")
    p.add_argument("--override", default=None, help="YAML/JSON mapping of config overrides")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = get_preset(args.config)
    if args.override:
        import yaml
        cfg = with_overrides(cfg, yaml.safe_load(args.override))
    system = L2COccSystem(cfg)
    system.model.train()
    data = make_dataset(cfg, args.data, args.sequences, labels=args.labels, stereo=args.stereo,
                        stereo_backend="sgbm", train=True)
    import dataclasses
    opt, sched = build_optimizer(system.model.parameters(), dataclasses.replace(cfg.train, steps=args.schedule_steps))
    head = system.model.pts_bbox_head.occ_convs[0][3].weight if hasattr(system.model, "pts_bbox_head") else None
    print("step   lr       loss terms                                                   pred_occ  true_occ  "
          "margin_occ  |g_head|  s/step")
    for step in range(args.steps):
        t0 = time.perf_counter()
        batch = collate_single([data[step % len(data)]])
        out = system.model(batch["inputs"])
        losses = system.compute_losses(batch, out)
        loss = torch.stack(list(losses.values())).sum()
        opt.zero_grad()
        loss.backward()
        gnorm = float(head.grad.norm()) if head is not None and head.grad is not None else float("nan")
        opt.step()
        sched.step()
        with torch.no_grad():
            logits, target = out["logits"].detach(), batch["target"]
            valid = target != 255
            pred = logits.argmax(1)
            occ = valid & (target > 0)
            other = logits[:, 1:].max(1).values
            margin = (logits[:, 0] - other)[occ].mean()
        terms = " ".join(f"{k[5:]}={float(v):.3f}" for k, v in losses.items())
        print(f"{step:4d} {opt.param_groups[0]['lr']:.2e}  {terms:60s} {float((pred[valid] > 0).float().mean()):.4f}"
              f"    {float(occ.sum() / valid.sum()):.4f}    {float(margin):+.3f}     {gnorm:.2e}  "
              f"{time.perf_counter() - t0:.2f}", flush=True)


if __name__ == "__main__":
    main()
