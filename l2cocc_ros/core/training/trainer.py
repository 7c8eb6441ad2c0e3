"""Running a training: the Lightning Trainer of a run (DDP + SyncBN on several devices) and ``fit``.

One process per device (Lightning launches them, or ``torchrun --nproc_per_node N`` does and Lightning
picks the environment up). Several devices use the DDP strategy with ``sync_batchnorm=True``, as the
original (4 GPUs x batch 1, all BatchNorms synchronised).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import Dataset

from ..config import ExperimentConfig
from .callbacks import checkpoint_callbacks
from .data import L2COccDataModule
from .system import L2COccSystem

__all__ = ["build_trainer", "fit", "last_checkpoint"]

logger = logging.getLogger(__name__)


def last_checkpoint(out_dir: Union[str, Path]) -> Optional[Path]:
    """``out_dir/checkpoints/last.ckpt`` if it exists, else None."""
    path = Path(out_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def build_trainer(out_dir: Union[str, Path], *, max_steps: int, devices: Union[int, str] = 1,
                  accelerator: str = "auto", num_nodes: int = 1, val_every: int = 500, ckpt_every: int = 100,
                  log_every: int = 10, progress_bar: bool = True) -> L.Trainer:
    """A Trainer with the run's checkpoints, TensorBoard logs (``out_dir/tb``) and a progress bar.

    Args:
        out_dir: run directory.
        max_steps: optimiser steps to train for (the schedule length).
        devices: devices per node (int) or "auto".
        accelerator: "cpu", "gpu" or "auto".
        num_nodes: number of nodes (DDP across nodes).
        val_every: validate every this many steps (and at the end).
        ckpt_every: write ``checkpoints/last.ckpt`` every this many steps.
        log_every: log scalars every this many steps.
        progress_bar: show a tqdm progress bar.
    """
    if max_steps <= 0:
        raise ValueError(f"max_steps must be > 0; got {max_steps}")
    if val_every <= 0:
        raise ValueError(f"val_every must be > 0; got {val_every}")
    n_dev = devices if isinstance(devices, int) else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    distributed = n_dev > 1 or num_nodes > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    strategy = "ddp" if distributed else "auto"
    callbacks = checkpoint_callbacks(out_dir, ckpt_every)
    if progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    return L.Trainer(
        default_root_dir=str(out_dir), max_steps=max_steps, max_epochs=-1, devices=devices,
        accelerator=accelerator, num_nodes=num_nodes, strategy=strategy, sync_batchnorm=distributed,
        precision="32-true", callbacks=callbacks, check_val_every_n_epoch=None,
        val_check_interval=min(val_every, max_steps), log_every_n_steps=log_every,
        logger=TensorBoardLogger(str(out_dir), name="tb", version=""), enable_progress_bar=progress_bar,
        num_sanity_val_steps=0, deterministic=False)


def fit(cfg: ExperimentConfig, train_set: Dataset, val_set: Optional[Dataset], out_dir: Union[str, Path], *,
        max_steps: Optional[int] = None, devices: Union[int, str] = 1, accelerator: str = "auto",
        num_nodes: int = 1, resume: bool = False, teacher_ckpt: Optional[str] = None, val_every: int = 500,
        ckpt_every: int = 100, num_workers: int = 0, progress_bar: bool = True,
        seed: Optional[int] = None) -> Tuple[L.Trainer, L2COccSystem]:
    """Train one variant; resumable.

    Args:
        cfg: experiment config (model, losses, schedule).
        train_set, val_set: map-style datasets (see ``training.data``).
        out_dir: run directory (``checkpoints/``, ``tb/``, ``best.pt``, ``last.pt``).
        max_steps: steps to train (default ``cfg.train.steps``); also the OneCycle length.
        devices, accelerator, num_nodes: where to run (DDP + SyncBN when more than one process).
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (loaded with ``weights_only=True``).
        teacher_ckpt: -D: the trained -L checkpoint of the frozen teacher.
        val_every, ckpt_every: validation / ``last.ckpt`` period in steps.
        num_workers: data-loader workers.
        progress_bar: show tqdm progress.
        seed: global seed (default ``cfg.train.seed``).

    Returns:
        (trainer, system) after training.

    Raises:
        FileNotFoundError: ``resume`` without a ``last.ckpt`` in ``out_dir``.
    """
    steps = int(max_steps if max_steps is not None else cfg.train.steps)
    L.seed_everything(cfg.train.seed if seed is None else seed, workers=True, verbose=False)
    out_dir = Path(out_dir)
    ckpt_path = None
    if resume:
        ckpt_path = last_checkpoint(out_dir)
        if ckpt_path is None:
            raise FileNotFoundError(f"--resume: no checkpoint {out_dir / 'checkpoints' / 'last.ckpt'}")
        logger.info("resuming from %s", ckpt_path)
    system = L2COccSystem(cfg, teacher_ckpt=teacher_ckpt)
    data = L2COccDataModule(train_set, val_set, num_workers=num_workers, pin_memory=accelerator != "cpu")
    trainer = build_trainer(out_dir, max_steps=steps, devices=devices, accelerator=accelerator,
                            num_nodes=num_nodes, val_every=val_every, ckpt_every=ckpt_every,
                            progress_bar=progress_bar)
    trainer.fit(system, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    return trainer, system
