"""How much of a model's class prior comes from its CE class weights: a logit-adjustment sweep.

CE with class weights ``w`` pulls a model's probabilities towards ``p(c) * w_c``, so its argmax favours the
heavily weighted classes (with ENet's weights: every occupied class over "empty", i.e. over-predicted occupancy).
Subtracting ``tau * ln(w_c)`` from the logits undoes a fraction ``tau`` of that (logit adjustment, Menon et al.,
ICLR 2021). This script scores a checkpoint on a split for several ``tau``: if a ``tau`` between 0 and 1 beats
0, the weights are too strong, and ``loss.class_weight_exponent = 1 - tau`` is the training-time fix to try
(the shipped model keeps the plain argmax rule; nothing here changes it).

Example (the benchmark's training worlds, every 10th frame)::

    python -P scripts/class_prior_sweep.py l2cocc_ros/checkpoints/micro_l2cocc_c.pt runs/synth_bench \\
        --sequences 00 01 02 03 04 05 06 07 08 09 10 11 --stride 10
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def sweep(checkpoint: Path, benchmark: Path, sequences: Sequence[str], *, stride: int = 1,
          taus: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> Tuple[object, Dict[float, object]]:
    """(the checkpoint's experiment config, ``{tau: SSCMetrics}``) of the adjusted argmax on every ``stride``-th
    frame of ``sequences``."""
    import torch

    from l2cocc_ros.core.checkpoint import load_model
    from l2cocc_ros.core.classes import class_table
    from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset
    from l2cocc_ros.core.metrics import SSCMetrics
    from l2cocc_ros.core.training.data import collate_single

    model, exp = load_model(checkpoint)
    model = model.float().eval()
    table = class_table(exp.loss.dataset)
    log_w = torch.log(torch.from_numpy(exp.loss.ce_class_weights()))[:, None, None, None]
    dataset = SemanticKITTIDataset(benchmark / "data", list(sequences), modalities="camera",
                                   labels_root=benchmark / "labels", stereo_root=benchmark / "stereo",
                                   input_size=exp.model.image_size, lidar_depth=False)
    metrics = {float(tau): SSCMetrics(table.num_classes) for tau in taus}
    with torch.no_grad():
        for i in range(0, len(dataset), stride):
            batch = collate_single([dataset[i]])
            logits = model(batch["inputs"])["logits"][0]
            target = batch["target"][0].numpy()
            for tau, m in metrics.items():
                m.update((logits - tau * log_w).argmax(0).to(torch.uint8).numpy(), target)
    return exp, metrics


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="an l2cocc_ros checkpoint of a camera model")
    parser.add_argument("benchmark", type=Path, help="an l2cocc synth-benchmark folder (data/, labels/, stereo/)")
    parser.add_argument("--sequences", nargs="+", default=["20", "21", "22", "23"], help="sequences to score")
    parser.add_argument("--stride", type=int, default=1, help="every N-th frame")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    args = parser.parse_args(argv)
    exp, metrics = sweep(args.checkpoint, args.benchmark, args.sequences, stride=args.stride, taus=args.taus)
    n_frames = next(iter(metrics.values())).n_frames
    print(f"{args.checkpoint} ({exp.loss.class_weighting} weights ^ {exp.loss.class_weight_exponent}), "
          f"{n_frames} frames of {' '.join(args.sequences)}")
    print("| tau | IoU | precision | recall | mIoU |\n|---:|---:|---:|---:|---:|")
    for tau, m in metrics.items():
        s = m.compute()
        print(f"| {tau:g} | {100 * s['iou']:.1f} | {100 * s['precision']:.1f} | {100 * s['recall']:.1f} | "
              f"{100 * s['miou']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
