#!/usr/bin/env python3
"""Stereo quality on the synthetic world: disparity error of the weights-free backends against the rendered truth.

The synthetic world (``core/data/synth``) renders the left image's true depth; the true disparity is
``fx * b / depth`` (rectified pair, b = 0.54 m). For every backend: density (pixels with a disparity, among
pixels with a true depth), end-point error (EPE, mean |d - d_true| in px where both exist), bad-3px (share of
those with |error| > 3 px), bad-3px counting holes as bad (what a model reading the depth map sees), and the
median relative depth error. MSNet is left out: with random weights it is not a depth estimator (no trained
weights here).

    python bench/stereo_quality.py                         # 4 worlds x 2 frames at 620x188
    python bench/stereo_quality.py --seeds 1 2 --frames 0 --width 1241 --height 376
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKENDS = {"sgbm": {}, "torch_census": {}}


def evaluate(seeds, frames, width: int, height: int, num_disparities: int) -> Dict[str, Dict[str, float]]:
    """Pooled metrics per backend over every (seed, frame) pair."""
    from l2cocc_ros.core.data.synth import SynthConfig, SynthSequence
    from l2cocc_ros.core.stereo import get_stereo_backend

    cfg = SynthConfig(width=width, height=height)
    backends = {name: get_stereo_backend(name, num_disparities=num_disparities, **kw) for name, kw in BACKENDS.items()}
    acc = {name: {"truth": 0, "valid": 0, "abs_err": 0.0, "bad": 0, "rel": []} for name in backends}
    for seed in seeds:
        seq = SynthSequence(seed, cfg)
        fx, baseline = seq.calib["P2"][0, 0], cfg.baseline
        for index in frames:
            frame = seq.frame(index, voxels=False)
            truth_ok = frame.depth > 0
            d_true = np.where(truth_ok, fx * baseline / np.maximum(frame.depth, 1e-6), 0.0)
            for name, backend in backends.items():
                disp = backend.disparity(frame.left, frame.right).cpu().numpy()
                ok = truth_ok & (disp > 0)
                err = np.abs(disp - d_true)[ok]
                a = acc[name]
                a["truth"] += int(truth_ok.sum())
                a["valid"] += int(ok.sum())
                a["abs_err"] += float(err.sum())
                a["bad"] += int((err > 3).sum())
                a["rel"].append((np.abs(fx * baseline / disp[ok] - frame.depth[ok]) / frame.depth[ok]))
            print(f"  seed {seed} frame {index} done", file=sys.stderr)
    out = {}
    for name, a in acc.items():
        out[name] = {"density": a["valid"] / a["truth"], "epe_px": a["abs_err"] / max(a["valid"], 1),
                     "bad3": a["bad"] / max(a["valid"], 1),
                     "bad3_holes": (a["bad"] + a["truth"] - a["valid"]) / a["truth"],
                     "rel_depth_median": float(np.median(np.concatenate(a["rel"])))}
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14], help="synthetic worlds")
    p.add_argument("--frames", type=int, nargs="+", default=[0, 10], help="frame indices per world")
    p.add_argument("--width", type=int, default=620)
    p.add_argument("--height", type=int, default=188)
    p.add_argument("--num-disparities", type=int, default=64, help="search range of both backends [px]")
    args = p.parse_args(argv)
    res = evaluate(args.seeds, args.frames, args.width, args.height, args.num_disparities)
    print(f"{len(args.seeds)} worlds x {len(args.frames)} frames at {args.width}x{args.height}, "
          f"num_disparities {args.num_disparities}, other options default\n")
    print("| backend | density | EPE [px] | bad-3px | bad-3px, holes counted | median rel. depth error |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in res.items():
        print(f"| {name} | {100 * m['density']:.1f} % | {m['epe_px']:.2f} | {100 * m['bad3']:.1f} % | "
              f"{100 * m['bad3_holes']:.1f} % | {100 * m['rel_depth_median']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
