"""Training callbacks: Lightning checkpoints for resuming, and exports in our own checkpoint format.

* ``checkpoints/best-*.ckpt``: the Lightning checkpoint with the best ``val/mIoU``;
* ``checkpoints/last.ckpt``: written every ``ckpt_every`` steps (mid-epoch too) and at the end, for
  ``--resume``; everything in it is tensors / containers / primitives, so it loads with
  ``weights_only=True``;
* ``best.pt`` / ``last.pt``: the model weights with config and metrics in the format of
  ``core.checkpoint`` (what ``l2cocc eval``, the engine and the node load).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Union

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

__all__ = ["ExportCheckpoints", "checkpoint_callbacks"]

logger = logging.getLogger(__name__)


def _metrics(trainer: "L.Trainer") -> Dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


class ExportCheckpoints(Callback):
    """Writes ``best.pt`` whenever ``val/mIoU`` improves and ``last.pt`` at the end of training.

    Args:
        out_dir: run directory.
        monitor: metric to maximise.
    """

    def __init__(self, out_dir: Union[str, Path], monitor: str = "val/mIoU") -> None:
        self.out_dir = Path(out_dir)
        self.monitor = monitor
        self.best = float("-inf")

    def _export(self, trainer: "L.Trainer", pl_module: "L.LightningModule", name: str) -> None:
        extra = {"global_step": int(trainer.global_step), "epoch": int(trainer.current_epoch),
                 "metrics": _metrics(trainer)}
        pl_module.export(self.out_dir / name, extra=extra)

    def on_validation_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            self._export(trainer, pl_module, "best.pt")
            logger.info("new best %s = %.4f at step %d -> %s", self.monitor, self.best, trainer.global_step,
                        self.out_dir / "best.pt")

    def on_train_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        # the final state also as last.ckpt (the periodic one may be a few steps older); every rank calls
        # save_checkpoint, rank 0 writes
        trainer.save_checkpoint(self.out_dir / "checkpoints" / "last.ckpt", weights_only=False)
        if trainer.is_global_zero:
            self._export(trainer, pl_module, "last.pt")

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.best = float(state_dict.get("best", float("-inf")))


def checkpoint_callbacks(out_dir: Union[str, Path], ckpt_every: int) -> List[Callback]:
    """The checkpoint callbacks of a run (best on ``val/mIoU``, periodic ``last.ckpt``, exports).

    Args:
        out_dir: run directory; Lightning checkpoints go to ``out_dir/checkpoints``.
        ckpt_every: save ``last.ckpt`` every this many optimiser steps.
    """
    if ckpt_every <= 0:
        raise ValueError(f"ckpt_every must be > 0; got {ckpt_every}")
    ckpt_dir = Path(out_dir) / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step}-miou{val/mIoU:.4f}",
                           auto_insert_metric_name=False, monitor="val/mIoU", mode="max", save_top_k=1,
                           save_last=False)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="periodic", every_n_train_steps=ckpt_every,
                           save_top_k=0, save_last=True, save_on_train_epoch_end=True,
                           enable_version_counter=False)  # overwrite last.ckpt, never last-v1.ckpt
    return [best, last, ExportCheckpoints(out_dir)]
