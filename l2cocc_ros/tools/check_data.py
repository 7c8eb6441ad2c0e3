"""``l2cocc check-data``: validate a dataset before training (every file a sample reads, by its structure).

Checks what ``l2cocc train`` would read for a config's variant: images (PNG structure; ``--full`` decodes
them), velodyne scans, raw voxel labels or the preprocessed ``.npy`` labels, stereo depth files. ``l2cocc
train`` runs the same check at start-up and stops before its first step when a file is bad.

Exit codes: 0 = every file fine, 1 = bad or missing files (listed, one per line), 2 = bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from l2cocc_ros import exit_codes

__all__ = ["main"]

MAX_LISTED = 50


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2cocc check-data", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", "-c", required=True, help="preset name (e.g. tiny_l2cocc_c) or a YAML file")
    p.add_argument("--data", "-d", required=True, help="dataset root (the folder holding sequences/)")
    p.add_argument("--labels", default=None, help="preprocessed labels root (as for l2cocc train)")
    p.add_argument("--stereo", default=None, help="stereo depth root (as for l2cocc train)")
    p.add_argument("--sequences", nargs="+", default=None,
                   help="sequences to check (default: the paper's train and val split)")
    p.add_argument("--full", action="store_true", help="also decode every image (slow)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from l2cocc_ros.core.data.check import check_dataset
    from l2cocc_ros.core.data.training_sets import DEFAULT_TRAIN, DEFAULT_VAL, experiment_from_spec, make_dataset

    try:
        cfg = experiment_from_spec(args.config)
        seqs = args.sequences or DEFAULT_TRAIN[cfg.model.dataset] + DEFAULT_VAL[cfg.model.dataset]
        dataset = make_dataset(cfg, args.data, seqs, labels=args.labels, stereo=args.stereo, stereo_backend="sgbm",
                               train=False)
    except FileNotFoundError as exc:  # missing files are a finding, listed by the dataset
        print(f"l2cocc check-data: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    except ValueError as exc:
        print(f"l2cocc check-data: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    problems = check_dataset(dataset, full=args.full, progress=not args.no_progress)
    for line in problems[:MAX_LISTED]:
        print(line)
    if len(problems) > MAX_LISTED:
        print(f"... and {len(problems) - MAX_LISTED} more")
    n = len(dataset)
    if problems:
        print(f"l2cocc check-data: {len(problems)} bad file(s) in {n} frames of {' '.join(seqs)}", file=sys.stderr)
        return exit_codes.FAILED
    print(f"OK: {n} frames of {' '.join(seqs)}, every file readable{' and decoded' if args.full else ''}")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
