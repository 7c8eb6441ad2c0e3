"""``l2cocc eval``: score scene-completion predictions on a split, as the official semantic-kitti-api does.

Two modes:

* ``l2cocc eval --dataset ROOT --predictions PRED --sequences 08 [--json]`` scores
  ``PRED/sequences/<seq>/predictions/<id>.label`` (uint16 raw SemanticKITTI ids) against
  ``ROOT/sequences/<seq>/voxels/<id>.label`` + ``.invalid`` for every GT ``.label`` file, exactly as
  ``evaluate_completion.py``: raw ids through the learning map (raw ids mapped to 0, except 0, become 255),
  GT 255 and invalid voxels ignored, one confusion matrix over the whole split.
* ``l2cocc eval --checkpoint CKPT [--config PRESET|YAML] --dataset ROOT [--write-predictions OUT]`` runs a
  model over the split first (our checkpoints carry their config; released ``.ckpt`` files need
  ``--config``), then scores it the same way and optionally writes the predictions in the official layout.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from l2cocc_ros.core.classes import ClassTable, class_table, semantic_kitti
from l2cocc_ros.core.data.predictions import (gt_frames, load_ground_truth, prediction_path, read_prediction,
                                              write_prediction)
from l2cocc_ros.core.metrics import SSCMetrics
from l2cocc_ros import exit_codes

__all__ = ["score_predictions", "evaluate_model", "results_dict", "main"]

def score_predictions(dataset: Path, predictions: Path, sequences: Sequence[str], *, table: Optional[ClassTable] = None,
                      progress: bool = True) -> SSCMetrics:
    """Score official-layout prediction files against the dataset's voxel GT.

    Raises:
        FileNotFoundError: missing GT folders or prediction files (every missing file named).
        ValueError: corrupt files or labels outside the map.
    """
    table = table or semantic_kitti()
    frames = gt_frames(dataset, sequences)
    if not frames:
        raise FileNotFoundError(f"no ground-truth .label files in sequences {list(sequences)} of {dataset}")
    missing = [prediction_path(Path(predictions), s, int(f)) for s, f in frames]
    missing = [p for p in missing if not p.is_file()]
    if missing:
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        listed = "\n  ".join(map(str, missing[:20])) + more
        raise FileNotFoundError(f"{len(missing)} prediction file(s) missing:\n  {listed}")
    metrics = SSCMetrics(table.num_classes)
    for seq, fid in tqdm(frames, desc="eval", unit="frame", disable=not progress, dynamic_ncols=True):
        target = load_ground_truth(dataset, seq, fid, table)
        pred = read_prediction(prediction_path(Path(predictions), seq, int(fid)), table)
        keep = target != 255
        bad = keep & (pred == 255)
        if bad.any():
            raise ValueError(f"{prediction_path(Path(predictions), seq, int(fid))}: predicts raw ids that the learning "
                             f"map ignores ({int(bad.sum())} voxels)")
        metrics.update(pred, target)
    return metrics


def evaluate_model(model, dataset, *, device: str = "cpu", write_to: Optional[Path] = None,
                   table: Optional[ClassTable] = None, limit: Optional[int] = None, num_workers: int = 0,
                   progress: bool = True) -> SSCMetrics:
    """Run a model over a dataset (batch 1), accumulate the metrics and optionally write predictions.

    Args:
        model: a built L2COcc model (any variant; -D runs its student only, in eval mode).
        dataset: a dataset of ``core/data`` (samples with ``inputs``, ``target``, ``meta``).
        device: torch device.
        write_to: root for official-layout prediction files.
        table: class table (default: the dataset's).
        limit: evaluate only the first ``limit`` frames.
        num_workers: data loader workers.
        progress: show a progress bar.
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    from l2cocc_ros.core.training.data import batch_to_device, collate_single

    table = table or getattr(dataset, "table", None) or semantic_kitti()
    if limit is not None:
        dataset = Subset(dataset, range(min(int(limit), len(dataset))))
    loader = DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate_single, num_workers=num_workers)
    metrics = SSCMetrics(table.num_classes)
    model = model.to(device).eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc="inference", unit="frame", disable=not progress, dynamic_ncols=True):
            out = model(batch_to_device(batch["inputs"], torch.device(device)))
            pred = out["logits"].argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
            meta = batch.get("meta", {})
            if meta.get("has_target", True):
                metrics.update(pred, batch["target"][0].numpy())
            if write_to is not None:
                write_prediction(write_to, meta["sequence"], meta["frame_id"], pred, table)
    return metrics


def results_dict(metrics: SSCMetrics, names: Sequence[str]) -> Dict[str, object]:
    """JSON-ready scores: completion iou / precision / recall, miou, per-class IoU by name, counts."""
    s = metrics.compute()
    return {
        "iou": float(s["iou"]), "precision": float(s["precision"]), "recall": float(s["recall"]),
        "miou": float(s["miou"]),
        "iou_per_class": {names[c]: float(s["iou_per_class"][c]) for c in range(1, metrics.num_classes)},
        "n_frames": int(metrics.n_frames), "n_voxels": int(s["n_voxels"]),
    }


def _build_dataset(args: argparse.Namespace, cfg):
    from l2cocc_ros.core.data.kitti360 import KITTI360Dataset
    from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset
    from l2cocc_ros.core.stereo import get_stereo_backend

    variant = cfg.model.variant
    modalities = "lidar" if variant == "l" else "camera"
    backend = None
    if modalities == "camera" and args.stereo_root is None:
        backend = get_stereo_backend(args.stereo_backend)
    kw = dict(modalities=modalities, labels_root=args.labels_root, stereo_root=args.stereo_root,
              stereo_backend=backend, input_size=cfg.model.image_size, lidar_depth=False,
              require_labels=not args.no_labels)
    if cfg.model.dataset == "kitti360":
        return KITTI360Dataset(args.dataset, args.sequences, **kw)
    return SemanticKITTIDataset(args.dataset, args.sequences, **kw)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="l2cocc eval", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-d", "--dataset", type=Path, required=True, help="dataset root")
    parser.add_argument("-p", "--predictions", type=Path, default=None, help="root of official-layout predictions")
    parser.add_argument("-s", "--sequences", nargs="+", default=["08"], help="sequences of the split")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = parser.add_argument_group("model mode")
    g.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to run over the split")
    g.add_argument("--config", default=None, help="preset name or YAML (required for released .ckpt files)")
    g.add_argument("--labels-root", type=Path, default=None, help="preprocessed labels (default: voxels/ GT)")
    g.add_argument("--stereo-root", type=Path, default=None, help="precomputed stereo depth (default: compute)")
    g.add_argument("--stereo-backend", default="sgbm", help="backend for on-the-fly stereo depth")
    g.add_argument("--write-predictions", type=Path, default=None, help="write official-layout predictions here")
    g.add_argument("--device", default="cpu", help="torch device")
    g.add_argument("--limit", type=int, default=None, help="only the first N frames")
    g.add_argument("--no-labels", action="store_true", help="split without GT (only write predictions)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (args.predictions is None) == (args.checkpoint is None):
        parser.error("give exactly one of --predictions and --checkpoint")
    progress = not args.no_progress
    try:
        if args.predictions is not None:
            table = semantic_kitti()
            metrics = score_predictions(args.dataset, args.predictions, args.sequences, table=table,
                                        progress=progress)
        else:
            from l2cocc_ros.core.checkpoint import load_model

            model, cfg = load_model(args.checkpoint, args.config)
            table = class_table(cfg.model.dataset)
            dataset = _build_dataset(args, cfg)
            metrics = evaluate_model(model, dataset, device=args.device, write_to=args.write_predictions,
                                     table=table, limit=args.limit, progress=progress)
    except FileNotFoundError as exc:  # ground truth or predictions missing: listed before scoring
        print(f"l2cocc eval: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except ValueError as exc:
        print(f"l2cocc eval: error: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    if args.json:
        print(json.dumps(results_dict(metrics, table.names), indent=2))
    else:
        print(metrics.table(list(table.names)))
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
