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

With ``--checkpoint CKPT`` it also scores a trained camera model on the held-out synthetic sequence of the
README's training runs (sequence 08, world seed 99, frames 0/15/30 at 1241x376) fed (a) the rendered true
depth, (b) SGBM, (c) torch_census depth maps (``l2cocc preprocess stereo`` with default options): completion
IoU and mIoU as ``l2cocc eval``.
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


def occupancy(checkpoint: str, config: Optional[str], work: Path, seed: int = 99, frames=(0, 15, 30)
              ) -> Dict[str, Dict[str, float]]:
    """IoU / mIoU of ``checkpoint`` on the held-out sequence for each depth source (true, sgbm, torch_census)."""
    from l2cocc_ros.core.checkpoint import load_model
    from l2cocc_ros.core.data import kitti_io
    from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset
    from l2cocc_ros.core.data.synth import SynthConfig, SynthSequence, write_sequence
    from l2cocc_ros.core.stereo import get_stereo_backend
    from l2cocc_ros.tools.evaluate import evaluate_model, results_dict
    from l2cocc_ros.tools.preprocess import preprocess_stereo

    data = work / "data"
    for start in frames:
        if not (data / "sequences" / "08" / "voxels" / f"{start:06d}.label").is_file():
            write_sequence(data, "08", frames=1, seed=seed, start=start, config=SynthConfig())
    truth = work / "depth_true" / "sequences" / "08"
    seq = SynthSequence(seed, SynthConfig())
    for index in frames:
        if not (truth / f"{index:06d}.npy").is_file():
            kitti_io.write_npy(truth / f"{index:06d}.npy", seq.frame(index, voxels=False).depth.astype("float32"))
    roots = {"true depth": work / "depth_true"}
    for name in ("sgbm", "torch_census"):
        roots[name] = work / f"depth_{name}"
        preprocess_stereo(data, roots[name], ["08"], backend=get_stereo_backend(name), progress=False)
    model, exp = load_model(checkpoint, config)
    out = {}
    for name, root in roots.items():
        ds = SemanticKITTIDataset(data, ["08"], modalities="camera", stereo_root=root,
                                  input_size=exp.model.image_size, lidar_depth=False)
        res = results_dict(evaluate_model(model, ds, progress=False), ds.table.names)
        out[name] = {"iou": res["iou"], "miou": res["miou"], "frames": res["n_frames"]}
        print(f"  {name}: {out[name]}", file=sys.stderr)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14], help="synthetic worlds")
    p.add_argument("--frames", type=int, nargs="+", default=[0, 10], help="frame indices per world")
    p.add_argument("--width", type=int, default=620)
    p.add_argument("--height", type=int, default=188)
    p.add_argument("--num-disparities", type=int, default=64, help="search range of both backends [px]")
    p.add_argument("--checkpoint", default=None, help="a trained camera model: also score the occupancy")
    p.add_argument("--config", default=None, help="its preset (for files that do not carry one)")
    p.add_argument("--work", type=Path, default=Path("runs/stereo_quality"), help="folder for the held-out data")
    p.add_argument("--skip-disparity", action="store_true", help="only the occupancy table")
    args = p.parse_args(argv)
    if args.checkpoint:
        occ = occupancy(args.checkpoint, args.config, args.work)
        print(f"held-out synthetic sequence 08 (seed 99, frames 0/15/30, 1241x376), model {args.checkpoint}\n")
        print("| depth fed to the model | IoU | mIoU | frames |")
        print("|---|---:|---:|---:|")
        for name, m in occ.items():
            print(f"| {name} | {100 * m['iou']:.1f} % | {100 * m['miou']:.1f} % | {m['frames']} |")
        print()
    if args.skip_disparity:
        return 0
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
