"""``l2cocc synth``: write a synthetic sequence in the SemanticKITTI layout.

Example::

    l2cocc synth --out data/synth --sequence 08 --frames 20 --seed 0 --width 620 --height 188

writes ``data/synth/sequences/08/{calib.txt,poses.txt,times.txt,image_2,image_3,velodyne,labels,voxels}``
(see :mod:`l2cocc_ros.core.data.synth` for the contents).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from l2cocc_ros import exit_codes

from ..core.data.synth import KITTI_SIZE, SynthConfig, write_sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``l2cocc synth``."""
    p = argparse.ArgumentParser(
        prog="l2cocc synth",
        description="Write a synthetic sequence (procedural street, stereo pair, 64-beam LiDAR, voxel ground truth) "
                    "in the SemanticKITTI layout: OUT/sequences/SEQ/{calib.txt,poses.txt,times.txt,image_2,image_3,"
                    "velodyne,labels,voxels}.")
    p.add_argument("-o", "--out", required=True, help="dataset root; the sequence goes to OUT/sequences/SEQ")
    p.add_argument("-s", "--sequence", default="08", help="two-digit sequence name (default %(default)s)")
    p.add_argument("-n", "--frames", type=int, default=5, help="number of frames (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="world seed; same seed -> same bytes (default %(default)s)")
    p.add_argument("--start", type=int, default=0,
                   help="first frame id; frames do not depend on it, so later ids extend a sequence "
                        "(default %(default)s)")
    p.add_argument("-W", "--width", type=int, default=KITTI_SIZE[0], help="image width [px] (default %(default)s)")
    p.add_argument("-H", "--height", type=int, default=KITTI_SIZE[1], help="image height [px] (default %(default)s)")
    p.add_argument("--voxel-every", type=int, default=1,
                   help="write voxel ground truth every N-th frame id; SemanticKITTI uses 5 (default %(default)s)")
    p.add_argument("--lidar-azimuth-steps", type=int, default=SynthConfig.lidar_azimuth_steps,
                   help="LiDAR columns per revolution (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``l2cocc synth``; returns the exit status (0 ok, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SynthConfig(width=args.width, height=args.height, voxel_every=args.voxel_every,
                             lidar_azimuth_steps=args.lidar_azimuth_steps)
        if args.frames < 1 or args.start < 0 or args.seed < 0:
            raise ValueError(f"--frames must be >= 1, --start and --seed >= 0 (got {args.frames}, {args.start}, "
                             f"{args.seed})")
    except ValueError as exc:
        print(f"l2cocc synth: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    from tqdm import tqdm

    t0 = time.perf_counter()
    with tqdm(total=args.frames, desc=f"synth seq {args.sequence}", unit="frame", disable=args.no_progress) as bar:
        try:
            out = write_sequence(args.out, args.sequence, args.frames, args.seed, args.start, config, bar.update)
        except ValueError as exc:
            print(f"l2cocc synth: error: {exc}", file=sys.stderr)
            return exit_codes.USAGE
    print(f"wrote {args.frames} frames ({args.width}x{args.height}, seed {args.seed}) to {out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
