"""``l2cocc preprocess``: the label and stereo-depth files the datasets read (docs/model.md §3.5, §7).

* ``l2cocc preprocess labels --dataset ROOT --out LABELS [--sequences 00 01 ...]`` writes
  ``LABELS/<seq>/<id>_1_1.npy`` (256x256x32 uint8, 255 = ignore) and ``<id>_1_2.npy`` (128x128x16, LMSCNet
  rule) from ``sequences/<seq>/voxels/<id>.label`` + ``.invalid``. With ``--kitti360 --from-labels DIR``
  it reads SSCBench's ``DIR/<seq>/<id>_1_1.npy`` instead and adds the missing ``_1_2``.
* ``l2cocc preprocess stereo --dataset ROOT --out DEPTH [--backend sgbm]`` writes
  ``DEPTH/sequences/<seq>/<id>.npy`` (float32 metres at the original image size, 0 = invalid) from the
  rectified pair and the calibration (f = P2[0,0], b from P2/P3). ``--backend msnet3d --weights
  MSNet3D_SF_DS_KITTI2015.ckpt`` writes the maps the released models were trained on (VoxFormer's
  ``image2depth``: depth = 0.54 m * fx / disp, ``--baseline calibrated`` for the rig's baseline).

Both are resumable: a frame whose outputs already exist and load with the right shape is skipped, and
every file is written to a temporary name and renamed, so a killed run leaves no partial file.

The work is :mod:`l2cocc_ros.core.data.prepare`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from l2cocc_ros.core.data.prepare import preprocess_kitti360_labels, preprocess_labels, preprocess_stereo
from l2cocc_ros import exit_codes

__all__ = ["main"]


def _backend_from_args(args: argparse.Namespace):
    from l2cocc_ros.core.stereo import get_stereo_backend

    kw = {}
    if args.backend == "sgbm":
        kw = dict(num_disparities=args.num_disparities, block_size=args.block_size, mode=args.mode,
                  downscale=args.downscale)
    elif args.backend.startswith("msnet"):
        # an explicit --focal-baseline is the product to use, so the backend must not put 0.54 m in its place
        baseline = "calibrated" if args.focal_baseline is not None else args.baseline
        kw = dict(weights=args.weights, baseline=baseline)
    return get_stereo_backend(args.backend, **kw).to(args.device)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="l2cocc preprocess", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    lab = sub.add_parser("labels", help="1:1 and 1:2 training labels", formatter_class=fmt)
    ste = sub.add_parser("stereo", help="stereo depth maps", formatter_class=fmt)
    for p in (lab, ste):
        p.add_argument("-d", "--dataset", type=Path, help="dataset root (holding sequences/ or data_2d_raw/)")
        p.add_argument("-o", "--out", type=Path, required=True, help="output root")
        p.add_argument("-s", "--sequences", nargs="+", default=None, help="sequences (default: all with voxels)")
        p.add_argument("--kitti360", action="store_true", help="SSCBench-KITTI-360 layout")
        p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    lab.add_argument("--from-labels", type=Path, default=None,
                     help="KITTI-360: SSCBench labels folder (<seq>/<id>_1_1.npy)")
    from l2cocc_ros.core.stereo import available_stereo_backends

    ste.add_argument("--backend", default="sgbm", choices=available_stereo_backends(), help="stereo backend")
    ste.add_argument("--all-frames", action="store_true", help="every image, not only the frames with voxels")
    ste.add_argument("--focal-baseline", type=float, default=None,
                     help="override f*b [px*m] (default: from P2/P3 of the calibration)")
    ste.add_argument("--num-disparities", type=int, default=128, help="SGBM disparity range [px]")
    ste.add_argument("--block-size", type=int, default=5, help="SGBM block size")
    ste.add_argument("--mode", default="sgbm_3way", choices=("sgbm", "sgbm_3way", "hh", "hh4"), help="SGBM mode")
    ste.add_argument("--downscale", type=int, default=1, help="SGBM image downscale factor")
    ste.add_argument("--weights", default=None,
                     help="msnet3d/msnet2d weights (MSNet3D_SF_DS_KITTI2015.ckpt from the VoxFormer or CGFormer "
                          "repository, preprocess/mobilestereonet/)")
    ste.add_argument("--baseline", default="nominal", choices=("nominal", "calibrated"),
                     help="msnet: depth = 0.54 m * fx / disp as VoxFormer made the released models' maps (nominal), "
                          "or the calibration's baseline")
    ste.add_argument("--device", default="cpu", help="torch device of the stereo backend (cpu, cuda, cuda:N)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    progress = not args.no_progress
    try:
        if args.what == "labels" and args.kitti360:
            if args.from_labels is None:
                parser.error("--kitti360 labels need --from-labels (SSCBench's labels folder)")
            summary = preprocess_kitti360_labels(args.from_labels, args.out, args.sequences,
                                                 overwrite=args.overwrite, progress=progress)
        elif args.what == "labels":
            if args.dataset is None:
                parser.error("--dataset is required")
            summary = preprocess_labels(args.dataset, args.out, args.sequences, overwrite=args.overwrite,
                                        progress=progress)
        else:
            if args.dataset is None:
                parser.error("--dataset is required")
            summary = preprocess_stereo(args.dataset, args.out, args.sequences, backend=_backend_from_args(args),
                                        kitti360_layout=args.kitti360, all_frames=args.all_frames,
                                        focal_baseline=args.focal_baseline,
                                        overwrite=args.overwrite, progress=progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"l2cocc preprocess: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    print(f"{args.what}: wrote {len(summary.written)} frame(s), skipped {len(summary.skipped)} already complete, "
          f"under {args.out}")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
