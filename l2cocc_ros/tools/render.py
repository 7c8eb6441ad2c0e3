"""``l2cocc render``: draw a grid file (bird's-eye view + 3D view) to PNG, optionally next to the ground truth.

The drawing is :mod:`l2cocc_ros.tools.rendering`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from l2cocc_ros import exit_codes
from l2cocc_ros.core.classes import class_table
from l2cocc_ros.tools.rendering import load_labels, render_grid

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2cocc render", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", type=Path, help="grid to draw: voxel .label (raw ids) or .npy (training ids)")
    p.add_argument("-g", "--gt", type=Path, help="ground truth drawn next to it (.label or .npy)")
    p.add_argument("--invalid", type=Path, help=".invalid file: voxels of INPUT to show as unknown")
    p.add_argument("--gt-invalid", type=Path, help=".invalid file for the ground truth")
    p.add_argument("-o", "--output", type=Path, help="PNG to write (default: INPUT with suffix .png)")
    p.add_argument("-d", "--dataset", default="semantic_kitti", choices=["semantic_kitti", "kitti360"],
                   help="class table (default %(default)s)")
    p.add_argument("-t", "--title", help="title line (default: the input file name)")
    p.add_argument("--panel-height", type=int, default=512, help="height of each view in pixels")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``l2cocc render``; returns the exit status."""
    args = _parser().parse_args(argv)
    table = class_table(args.dataset)
    missing = [str(p) for p in (args.input, args.gt, args.invalid, args.gt_invalid) if p is not None and not p.is_file()]
    if missing:
        print(f"l2cocc render: error: not found: {', '.join(missing)}", file=sys.stderr)
        return exit_codes.USAGE
    labels = load_labels(args.input, table, args.invalid)
    gt = load_labels(args.gt, table, args.gt_invalid) if args.gt else None
    title = args.title or (f"{args.input.name}  vs  ground truth {args.gt.name}" if gt is not None else args.input.name)
    out = args.output or args.input.with_suffix(".png")
    render_grid(labels, table, title=title, gt=gt, panel_height=args.panel_height).save(out)
    logger.info("wrote %s", out)
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
