"""Batches for training: the batch-size-1 collate and a Lightning data module over any map-style dataset.

A dataset sample (see ``core/data/semantic_kitti.py``) is a dict with

* ``inputs``: the model input dict of ``docs/interfaces.md`` **without** the leading batch dimension
  (``img`` (N, 3, H, W), ``rot`` (N, 3, 3), ..., ``bda`` (4, 4), ``stereo_depth`` (N, H, W),
  ``points`` (P, 4) for LiDAR variants);
* ``target`` (256, 256, 32) and ``target_1_2`` (128, 128, 16) integer labels (255 = ignore);
* optionally ``lidar_depth`` (N, H, W) sparse LiDAR depth for the depth loss, and ``meta``
  (sequence, frame id, ...: strings / numbers).

:func:`collate_single` turns a list of one such sample into the model's batch-1 layout: every tensor gets
a leading batch dimension except ``points``, which the model takes as (P, 4). Samples that already carry
the batch dimension (``img`` of 5 dims) are passed through unchanged. The original trains with batch 1
per GPU only (docs/model.md §12.1); DDP gives the global batch.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["UNBATCHED_KEYS", "collate_single", "batch_to_device", "L2COccDataModule"]

UNBATCHED_KEYS = frozenset({"points"})
"""Input keys the model takes without a batch dimension."""

_NDIM_UNBATCHED = {"img": 4, "rot": 3, "tran": 2, "intrin": 3, "post_rot": 3, "post_tran": 2, "bda": 2,
                   "stereo_depth": 3}


def _as_tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def _add_batch(key: str, value: Any) -> Any:
    value = _as_tensor(value)
    if not isinstance(value, torch.Tensor) or key in UNBATCHED_KEYS:
        return value
    expected = _NDIM_UNBATCHED.get(key)
    if expected is not None and value.dim() == expected + 1:
        return value  # already batched
    return value.unsqueeze(0)


def collate_single(samples: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """Collate a list holding exactly one sample into the model's batch-1 layout.

    Args:
        samples: ``[sample]`` as produced by the dataset.

    Returns:
        ``{'inputs': {...}, 'target': (1, X, Y, Z) long, 'target_1_2': (1, x, y, z) long,
        ['lidar_depth': (1, N, H, W)], ['meta': dict]}``.

    Raises:
        ValueError: more than one sample, or a sample without ``inputs`` / ``target``.
    """
    if len(samples) != 1:
        raise ValueError(f"L2COcc trains with batch size 1 per process; got a batch of {len(samples)}")
    sample = samples[0]
    for key in ("inputs", "target"):
        if key not in sample:
            raise ValueError(f"dataset sample has no {key!r} (keys: {sorted(sample)})")
    batch: Dict[str, Any] = {"inputs": {k: _add_batch(k, v) for k, v in sample["inputs"].items()}}
    for key in ("target", "target_1_2"):
        if sample.get(key) is not None:
            batch[key] = _add_batch(key, sample[key]).long()
    if sample.get("lidar_depth") is not None:
        depth = _as_tensor(sample["lidar_depth"])
        batch["lidar_depth"] = depth if depth.dim() == 4 else depth.unsqueeze(0)
    if "meta" in sample:
        batch["meta"] = dict(sample["meta"])
    return batch


def batch_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: batch_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to_device(v, device) for v in batch)
    return batch


class L2COccDataModule(L.LightningDataModule):
    """Train / validation loaders with batch size 1 (shuffled, drop_last, as the original).

    Under DDP each process sees its shard. Training: Lightning's ``DistributedSampler`` (shuffled; it pads
    the split so all processes run the same number of steps). Validation: an
    ``UnrepeatedDistributedSampler`` (frames ``rank, rank + world_size, ...``, no padding), so the
    confusion matrix summed over the processes counts every frame exactly once; Lightning leaves a
    loader whose sampler is a ``DistributedSampler`` as it is.

    Args:
        train_set: map-style dataset of training samples.
        val_set: map-style dataset of validation samples (None = no validation).
        num_workers: loader worker processes.
        pin_memory: pin host memory (for GPU training).
    """

    def __init__(self, train_set: Dataset, val_set: Optional[Dataset] = None, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        super().__init__()
        if len(train_set) == 0:
            raise ValueError("the training set is empty")
        self.train_set, self.val_set = train_set, val_set
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)

    def _loader(self, dataset: Dataset, shuffle: bool, sampler: Optional[Sampler] = None) -> DataLoader:
        return DataLoader(dataset, batch_size=1, shuffle=shuffle, sampler=sampler, drop_last=shuffle,
                          collate_fn=collate_single, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> Any:
        """The validation loader; under DDP this process's share of the frames, none repeated.

        Raises:
            ValueError: under DDP, fewer validation frames than processes (a process without a frame
                would leave the others waiting in the collective calls of validation).
        """
        if self.val_set is None or len(self.val_set) == 0:
            return []
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if world_size <= 1:
            return self._loader(self.val_set, shuffle=False)
        if len(self.val_set) < world_size:
            raise ValueError(f"the validation set has {len(self.val_set)} frames, fewer than the {world_size} "
                             "DDP processes; use more validation frames or fewer processes")
        sampler = UnrepeatedDistributedSampler(self.val_set, num_replicas=world_size,
                                               rank=self.trainer.global_rank, shuffle=False)
        return self._loader(self.val_set, shuffle=False, sampler=sampler)
