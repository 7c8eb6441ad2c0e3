"""``l2cocc ckpt-check PATH --config PRESET``: does a checkpoint load strictly into a preset's model?

Accepts our checkpoints, the authors' released Lightning ``.ckpt`` files (``model.`` prefix stripped;
``teacher.*`` dropped for a -C model) and plain state_dicts. Files are read with ``weights_only=True``;
a file holding pickled Python objects is refused with instructions to extract its weights.

Exit codes: 0 = OK, 1 = the keys/shapes do not match (a report grouped by top-level prefix is printed),
2 = bad arguments, unreadable or unsafe file.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from l2cocc_ros import exit_codes

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from l2cocc_ros.core.config import preset_names

    p = argparse.ArgumentParser(
        prog="l2cocc ckpt-check", description="Check that a checkpoint loads strictly into a preset's model.",
        epilog="exit status: 0 OK, 1 keys/shapes differ (report printed), 2 bad arguments or unreadable/unsafe file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", help="checkpoint file (.ckpt / .pt)")
    p.add_argument("--config", "-c", required=True, metavar="PRESET",
                   help=f"a config YAML file, or a preset: {', '.join(preset_names())}")
    p.add_argument("--examples", type=int, default=3, help="example keys shown per prefix in a mismatch report")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from l2cocc_ros.core.checkpoint import CheckpointError, CheckpointMismatchError, load_released
    from l2cocc_ros.core.config import get_preset, load_config
    from l2cocc_ros.core.model.l2cocc import build_model

    try:
        cfg = load_config(args.config) if args.config.endswith((".yaml", ".yml")) else get_preset(args.config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"ckpt-check: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    model = build_model(cfg.model)
    try:
        report = load_released(args.path, model)
    except CheckpointMismatchError as exc:
        print(f"MISMATCH {args.path} vs preset {args.config}:\n{exc.report.format(args.examples)}")
        return exit_codes.FAILED
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"ckpt-check: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    note = f"; {report.format()}" if report.dropped else ""
    print(f"OK {args.path} loads strictly into {args.config}: {report.num_params:,} trainable parameters{note}")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
