"""Running a training: the Lightning Trainer of a run (DDP on several processes) and ``fit``.

One process per device (Lightning launches them, or ``torchrun --nproc_per_node N`` does and Lightning
picks the environment up). Several processes use the DDP strategy; on GPUs with ``sync_batchnorm=True``,
as the original (4 GPUs x batch 1, all BatchNorms synchronised). torch's SyncBatchNorm runs on GPUs only,
so DDP on CPUs (gloo backend) keeps one BatchNorm per process (each normalises its own batch of 1) and
says so in a warning. After a DDP fit, :func:`fit` checks that every process ends with the same weights.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
import torch
import torch.distributed
from torch.utils.data import Dataset

from ..config import ExperimentConfig
from .callbacks import checkpoint_callbacks
from .data import L2COccDataModule
from .system import L2COccSystem

__all__ = ["build_trainer", "check_replicas_agree", "fit", "last_checkpoint", "uses_gpu"]

logger = logging.getLogger(__name__)


def last_checkpoint(out_dir: Union[str, Path]) -> Optional[Path]:
    """``out_dir/checkpoints/last.ckpt`` if it exists, else None."""
    path = Path(out_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def uses_gpu(accelerator: str) -> bool:
    """Whether ``accelerator`` ("cpu", "gpu", "cuda" or "auto") runs on CUDA GPUs ("auto": if CUDA is available).

    Raises:
        ValueError: another accelerator name.
    """
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator == "cpu":
        return False
    if accelerator == "auto":
        return torch.cuda.is_available()
    raise ValueError(f"accelerator must be 'cpu', 'gpu', 'cuda' or 'auto'; got {accelerator!r}")


def build_trainer(out_dir: Union[str, Path], *, max_steps: int, devices: Union[int, str] = 1,
                  accelerator: str = "auto", num_nodes: int = 1, val_every: int = 500, ckpt_every: int = 100,
                  log_every: int = 10, progress_bar: bool = True) -> L.Trainer:
    """A Trainer with the run's checkpoints, TensorBoard logs (``out_dir/tb``) and a progress bar.

    Args:
        out_dir: run directory.
        max_steps: optimiser steps to train for (the schedule length).
        devices: devices per node (int) or "auto".
        accelerator: "cpu", "gpu", "cuda" or "auto". With several processes: SyncBatchNorm on GPUs, one
            BatchNorm per process on CPUs (logged as a warning).
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
    sync_batchnorm = distributed and uses_gpu(accelerator)
    if distributed and not sync_batchnorm:
        logger.warning("DDP on CPU (gloo): BatchNorm layers are NOT synchronised across processes (torch's "
                       "SyncBatchNorm needs GPUs); each process normalises its own batch of 1")
    callbacks = checkpoint_callbacks(out_dir, ckpt_every)
    if progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    return L.Trainer(
        default_root_dir=str(out_dir), max_steps=max_steps, max_epochs=-1, devices=devices,
        accelerator=accelerator, num_nodes=num_nodes, strategy=strategy, sync_batchnorm=sync_batchnorm,
        precision="32-true", callbacks=callbacks, check_val_every_n_epoch=None,
        val_check_interval=min(val_every, max_steps), log_every_n_steps=log_every,
        logger=TensorBoardLogger(str(out_dir), name="tb", version=""), enable_progress_bar=progress_bar,
        num_sanity_val_steps=0, deterministic=False)


def fit(cfg: ExperimentConfig, train_set: Dataset, val_set: Optional[Dataset], out_dir: Union[str, Path], *,
        max_steps: Optional[int] = None, devices: Union[int, str] = 1, accelerator: str = "auto",
        num_nodes: int = 1, resume: bool = False, teacher_ckpt: Optional[str] = None,
        init_ckpt: Optional[str] = None, val_every: int = 500,
        ckpt_every: int = 100, num_workers: int = 0, progress_bar: bool = True,
        seed: Optional[int] = None) -> Tuple[L.Trainer, L2COccSystem]:
    """Train one variant; resumable.

    Args:
        cfg: experiment config (model, losses, schedule).
        train_set, val_set: map-style datasets (see ``training.data``).
        out_dir: run directory (``checkpoints/``, ``tb/``, ``best.pt``, ``last.pt``).
        max_steps: steps to train (default ``cfg.train.steps``); also the OneCycle length.
        devices, accelerator, num_nodes: where to run (DDP when more than one process, see
            :func:`build_trainer`).
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (loaded with ``weights_only=True``).
        teacher_ckpt: -D: the trained -L checkpoint of the frozen teacher.
        init_ckpt: initial weights (fresh optimiser and schedule; see ``L2COccSystem``); not with ``resume``.
        val_every, ckpt_every: validation / ``last.ckpt`` period in steps.
        num_workers: data-loader workers.
        progress_bar: show tqdm progress.
        seed: global seed (default ``cfg.train.seed``).

    Returns:
        (trainer, system) after training; a DDP process group is destroyed before returning.

    Raises:
        FileNotFoundError: ``resume`` without a ``last.ckpt`` in ``out_dir``.
        ValueError: both ``resume`` and ``init_ckpt``.
        RuntimeError: after a DDP fit, the processes hold different weights.
    """
    steps = int(max_steps if max_steps is not None else cfg.train.steps)
    L.seed_everything(cfg.train.seed if seed is None else seed, workers=True, verbose=False)
    out_dir = Path(out_dir)
    ckpt_path = None
    if resume and init_ckpt is not None:
        raise ValueError("--resume continues a run with its own weights; --init-from starts a new one: give one")
    if resume:
        ckpt_path = last_checkpoint(out_dir)
        if ckpt_path is None:
            raise FileNotFoundError(f"--resume: no checkpoint {out_dir / 'checkpoints' / 'last.ckpt'}")
        logger.info("resuming from %s", ckpt_path)
    system = L2COccSystem(cfg, teacher_ckpt=teacher_ckpt, init_ckpt=init_ckpt)
    # again after building: a -D model (student + teacher) draws more random numbers than a -C one; with the
    # same seed both runs then see the same data order and augmentation (only the distillation differs)
    L.seed_everything(cfg.train.seed if seed is None else seed, workers=True, verbose=False)
    data = L2COccDataModule(train_set, val_set, num_workers=num_workers, pin_memory=uses_gpu(accelerator))
    trainer = build_trainer(out_dir, max_steps=steps, devices=devices, accelerator=accelerator,
                            num_nodes=num_nodes, val_every=val_every, ckpt_every=ckpt_every,
                            progress_bar=progress_bar)
    trainer.fit(system, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    if trainer.world_size > 1 and trainer.state.finished:
        check_replicas_agree(trainer, system)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # gloo's threads abort the interpreter at exit ("terminate called without an active exception") when
        # the process group is still alive; every rank tears it down here, after the last collective
        torch.distributed.destroy_process_group()
    return trainer, system


def check_replicas_agree(trainer: L.Trainer, module: torch.nn.Module) -> None:
    """Check that every DDP process holds the same parameters (collective: all processes must call it).

    Compares a float64 sum per parameter tensor across processes. DDP averages the gradients, so the
    parameters stay bit-identical; BatchNorm running statistics are buffers and are not compared (without
    SyncBatchNorm they follow each process's own batches; DDP broadcasts rank 0's at each training forward).

    Raises:
        RuntimeError: the processes disagree (names the first parameter that differs).
    """
    names, params = zip(*module.named_parameters())
    fingerprint = torch.stack([p.detach().double().sum() for p in params]).to(trainer.strategy.root_device)
    gathered = [torch.empty_like(fingerprint) for _ in range(trainer.world_size)]
    torch.distributed.all_gather(gathered, fingerprint)
    gathered = torch.stack(gathered).cpu()   # (world_size, n_params)
    differs = (gathered != gathered[0]).any(dim=0).nonzero().flatten()
    if differs.numel():
        raise RuntimeError(f"DDP processes ended with different weights: {differs.numel()} of {len(names)} "
                           f"parameter tensors differ, first {names[int(differs[0])]!r}")
    if trainer.is_global_zero:
        logger.info("DDP: the weights of all %d processes agree (%d parameter tensors)", trainer.world_size,
                    len(names))
