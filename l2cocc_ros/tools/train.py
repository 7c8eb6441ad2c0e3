"""``l2cocc train``: train L2COcc-C / -L / -D with Lightning (one device, DDP on several, or torchrun).

Examples::

    l2cocc train --config tiny_l2cocc_c --data data/synth --sequences-train 00 --sequences-val 08 \\
        --max-steps 300 --out runs/tiny_c
    l2cocc train --config semantickitti_l2cocc_l --data $SK/dataset --labels $SK/labels --devices 4 --out runs/l
    l2cocc train --config semantickitti_l2cocc_d --data $SK/dataset --labels $SK/labels \\
        --stereo $SK/sequences_msnet3d_depth --teacher runs/l/best.pt --devices 4 --out runs/d
    torchrun --nproc_per_node 4 -m l2cocc_ros.tools.train --config ... --devices 4 ...
    l2cocc train ... --out runs/tiny_c --resume        # continue from runs/tiny_c/checkpoints/last.ckpt
    l2cocc train ... --init-from runs/tiny_c/best.pt --out runs/tiny_c2   # new schedule from trained weights

Every file the samples read is checked before the first step (``l2cocc check-data``); a bad one ends the
run with one line naming it and exit code 1.

Writes ``OUT/checkpoints/{best-*,last}.ckpt`` (Lightning, for --resume), ``OUT/best.pt`` / ``OUT/last.pt``
(our checkpoint format, for ``l2cocc eval``, the engine and the node), ``OUT/config.yaml`` and TensorBoard
logs in ``OUT/tb``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from l2cocc_ros import exit_codes
from l2cocc_ros.core.data.training_sets import DEFAULT_TRAIN, DEFAULT_VAL, experiment_from_spec, make_dataset

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2cocc train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", "-c", required=True, help="preset name (e.g. tiny_l2cocc_c) or a YAML file")
    p.add_argument("--data", "-d", required=True, help="dataset root (the folder holding sequences/)")
    p.add_argument("--labels", default=None,
                   help="preprocessed labels root (<seq>/<id>_1_1.npy, _1_2.npy); default: raw voxels/*.label")
    p.add_argument("--stereo", default=None,
                   help="stereo depth root (sequences/<seq>/<id>.npy); default: compute with --stereo-backend")
    p.add_argument("--stereo-backend", default="sgbm", help="on-the-fly stereo backend when --stereo is not given")
    p.add_argument("--sequences-train", nargs="+", default=None, help="training sequences (default: the paper split)")
    p.add_argument("--sequences-val", nargs="*", default=None, help="validation sequences (default: the paper split)")
    p.add_argument("--out", "-o", required=True, help="run directory")
    p.add_argument("--max-steps", type=int, default=None, help="optimiser steps (default: the config's train.steps)")
    p.add_argument("--devices", default="1", help="devices per node (a number or 'auto'); >1 = DDP (+ SyncBN on GPUs)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"], help="device type")
    p.add_argument("--num-nodes", type=int, default=1, help="nodes (DDP across nodes)")
    p.add_argument("--val-every", type=int, default=500, help="validate every N steps")
    p.add_argument("--ckpt-every", type=int, default=100, help="write checkpoints/last.ckpt every N steps")
    p.add_argument("--num-workers", type=int, default=4, help="data-loader workers per process")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from these weights (ours, a Lightning .ckpt or a state_dict) with a fresh optimiser "
                        "and schedule; for -D a -C checkpoint initialises the student")
    p.add_argument("--teacher", default=None, help="-D: trained L2COcc-L checkpoint (best.pt or a released .ckpt)")
    p.add_argument("--no-color-jitter", action="store_true", help="disable the training colour jitter (0.4/0.4/0.4)")
    p.add_argument("--seed", type=int, default=None, help="global seed (default: the config's train.seed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from l2cocc_ros.core.checkpoint import CheckpointError
    from l2cocc_ros.core.config import dump_config
    from l2cocc_ros.core.training import fit

    try:
        cfg = experiment_from_spec(args.config)
        devices = args.devices if args.devices == "auto" else int(args.devices)
        if args.max_steps is not None and args.max_steps <= 0:
            raise ValueError(f"--max-steps must be > 0; got {args.max_steps}")
        if cfg.model.variant == "d" and args.teacher is None and not args.resume:
            raise ValueError("variant 'd' needs --teacher (a trained L2COcc-L checkpoint)")
        if args.teacher is not None and not Path(args.teacher).is_file():
            raise FileNotFoundError(f"--teacher checkpoint not found: {args.teacher}")
        if args.init_from is not None:
            if args.resume:
                raise ValueError("--resume and --init-from exclude each other (--resume continues OUT's own run)")
            if not Path(args.init_from).is_file():
                raise FileNotFoundError(f"--init-from checkpoint not found: {args.init_from}")
        train_seqs = args.sequences_train or DEFAULT_TRAIN[cfg.model.dataset]
        val_seqs = DEFAULT_VAL[cfg.model.dataset] if args.sequences_val is None else args.sequences_val
        common = dict(labels=args.labels, stereo=args.stereo, stereo_backend=args.stereo_backend)
        train_set = make_dataset(cfg, args.data, train_seqs, train=True, color_jitter=not args.no_color_jitter,
                                 **common)
        val_set = make_dataset(cfg, args.data, val_seqs, train=False, **common) if val_seqs else None
    except (ValueError, FileNotFoundError) as exc:
        print(f"l2cocc train: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    from l2cocc_ros.core.data.check import check_dataset

    problems = check_dataset(train_set) + (check_dataset(val_set) if val_set is not None else [])
    if problems:  # before the first step, not at frame 9,000
        more = f" (and {len(problems) - 1} more; 'l2cocc check-data' lists them)" if len(problems) > 1 else ""
        print(f"l2cocc train: error: bad dataset file {problems[0]}{more}", file=sys.stderr)
        return exit_codes.FAILED
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    logger.info("training %s: %d train frames (%s), %d val frames -> %s", cfg.name, len(train_set),
                " ".join(train_seqs), len(val_set) if val_set is not None else 0, out)
    try:
        trainer, system = fit(cfg, train_set, val_set, out, max_steps=args.max_steps, devices=devices,
                              accelerator=args.accelerator, num_nodes=args.num_nodes, resume=args.resume,
                              teacher_ckpt=args.teacher, init_ckpt=args.init_from, val_every=args.val_every,
                              ckpt_every=args.ckpt_every, num_workers=args.num_workers,
                              progress_bar=not args.no_progress, seed=args.seed)
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"l2cocc train: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except (ValueError, OSError) as exc:  # a file that passed the check but fails to read (a data-loader worker
        # re-raises it with the worker's traceback in the text: its last line is the reader's message)
        lines = [line for line in str(exc).splitlines() if line.strip()]
        print(f"l2cocc train: error: {lines[-1] if lines else type(exc).__name__}", file=sys.stderr)
        return exit_codes.FAILED
    scores = getattr(system, "last_val_scores", None)
    if trainer.is_global_zero:
        summary = f"finished at step {trainer.global_step}"
        if scores is not None:
            summary += f": val IoU {100 * scores['iou']:.2f}  mIoU {100 * scores['miou']:.2f}"
        print(summary)
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
