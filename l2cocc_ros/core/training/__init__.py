"""Training on Lightning: the L2COcc system (losses, optimiser, metrics), data module, callbacks, trainer.

Imports Lightning; nothing else in ``core`` depends on this package.
"""
from .callbacks import ExportCheckpoints, checkpoint_callbacks
from .data import L2COccDataModule, collate_single
from .system import L2COccSystem, build_optimizer
from .trainer import build_trainer, fit, last_checkpoint

__all__ = ["ExportCheckpoints", "L2COccDataModule", "L2COccSystem", "build_optimizer", "build_trainer",
           "checkpoint_callbacks", "collate_single", "fit", "last_checkpoint"]
