"""The training and validation datasets of an experiment config (``l2cocc train``, ``l2cocc check-data``):
the paper's sequence splits, ``--config`` as a preset or YAML, and the dataset of the config's variant."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

__all__ = ["DEFAULT_TRAIN", "DEFAULT_VAL", "experiment_from_spec", "make_dataset"]

DEFAULT_TRAIN = {"semantic_kitti": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
                 "kitti360": ["2013_05_28_drive_0000_sync", "2013_05_28_drive_0002_sync",
                              "2013_05_28_drive_0003_sync", "2013_05_28_drive_0004_sync",
                              "2013_05_28_drive_0005_sync", "2013_05_28_drive_0007_sync",
                              "2013_05_28_drive_0010_sync"]}
DEFAULT_VAL = {"semantic_kitti": ["08"], "kitti360": ["2013_05_28_drive_0006_sync"]}


def make_dataset(cfg, root: str, sequences: List[str], *, labels: Optional[str], stereo: Optional[str],
                 stereo_backend: str, train: bool, color_jitter: bool = True):
    """The dataset of ``cfg.model.dataset`` with the inputs the variant needs.

    Args:
        cfg: ``ExperimentConfig``.
        root: dataset root.
        sequences: sequence names.
        labels: preprocessed labels root or None.
        stereo: stereo depth root or None (then ``stereo_backend`` computes it per frame).
        stereo_backend: backend name (``core.stereo.get_stereo_backend``).
        train: training split (colour jitter on when ``color_jitter``).
        color_jitter: apply the original's (0.4, 0.4, 0.4) jitter to training images.
    """
    from l2cocc_ros.core.data.semantic_kitti import SemanticKITTIDataset, modalities_for_variant
    from l2cocc_ros.core.stereo import get_stereo_backend

    modalities = modalities_for_variant(cfg.model.variant)
    needs_camera = modalities != "lidar"
    kwargs = dict(modalities=modalities, labels_root=labels, stereo_root=stereo,
                  stereo_backend=get_stereo_backend(stereo_backend) if needs_camera and stereo is None else None,
                  input_size=tuple(cfg.model.image_size),
                  color_jitter=(0.4, 0.4, 0.4) if (train and color_jitter and needs_camera) else None,
                  lidar_depth=needs_camera and cfg.loss.depth_weight > 0)
    if cfg.model.dataset == "kitti360":
        from l2cocc_ros.core.data.kitti360 import KITTI360Dataset
        return KITTI360Dataset(root, sequences, **kwargs)
    return SemanticKITTIDataset(root, sequences, **kwargs)


def experiment_from_spec(spec: str):
    """The experiment config of ``--config``: a preset name or a YAML file.

    Raises:
        ValueError: neither.
    """
    from l2cocc_ros.core.config import get_preset, load_config, preset_names
    if spec in preset_names():
        return get_preset(spec)
    if Path(spec).suffix in (".yaml", ".yml") or Path(spec).exists():
        return load_config(spec)
    raise ValueError(f"--config {spec!r} is neither a preset ({', '.join(preset_names())}) nor a YAML file")
