"""Gradual unfreezing (`--freeze gradual`) as one fit, like fastai's `fine_tune` in two cycles.

    fit_gradual(learn, freeze_epochs=1, epochs=5, lr=1e-3)

Epochs 1..F (head only): a one-cycle schedule with `slice(lr)` (lr for the head, lr/10 for
the backbone's batch-norm layers), pct_start 0.99, as `fine_tune` does. Then `GradualUnfreeze`
unfreezes everything and epochs F+1..F+E run a second one-cycle with discriminative rates
`slice(lr/100, lr)` (pct_start 0.3, div 5, as `fine_tune`). Both cycles live in one
`learn.fit`, so the epoch numbers, the history, the best-model tracking and `--resume` work
exactly as for a single cycle.
"""

from __future__ import annotations

import numpy as np
from fastai.callback.core import Callback
from fastai.callback.schedule import ParamScheduler, combine_scheds, combined_cos
from fastai.torch_core import even_mults

from .record import skipped


class GradualUnfreeze(Callback):
    """Unfreeze the whole model before epoch `freeze_epochs` (0-based), once."""

    order = -5  # before the schedule sets this epoch's learning rates

    def __init__(self, freeze_epochs: int, announce=None):
        self.freeze_epochs, self.announce = freeze_epochs, announce

    def before_epoch(self) -> None:
        if self.epoch < self.freeze_epochs or all(p.requires_grad for p in self.model.parameters()):
            return
        if skipped(self.learn):  # resuming past the switch: unfreeze, keep the restored state
            self.opt.freeze_to(0)
            return
        self.learn.unfreeze()  # fastai clears the optimizer state here, as a new cycle would
        if self.announce is not None:
            self.announce(self.learn)


def gradual_schedule(n_groups: int, freeze_epochs: int, epochs: int, lr: float,
                     moms=(0.95, 0.85, 0.95)) -> dict:
    """ParamScheduler schedules for the two cycles over freeze_epochs + epochs epochs."""
    head_only = np.array([lr / 10] * (n_groups - 1) + [lr])  # fastai's slice(lr)
    discriminative = np.array(even_mults(lr / 100, lr, n_groups)) if n_groups > 1 else np.array([lr])
    total = freeze_epochs + epochs
    phases = [freeze_epochs / total, epochs / total]
    return {
        "lr": combine_scheds(phases, [combined_cos(0.99, head_only / 25, head_only, head_only / 1e5),
                                      combined_cos(0.3, discriminative / 5, discriminative,
                                                   discriminative / 1e5)]),
        "mom": combine_scheds(phases, [combined_cos(0.99, *moms), combined_cos(0.3, *moms)]),
    }


def fit_gradual(learn, freeze_epochs: int, epochs: int, lr: float, cbs=(), start_epoch: int = 0,
                announce=None) -> None:
    """Head-only one-cycle for `freeze_epochs`, then everything with slice(lr/100, lr) for `epochs`."""
    if learn.opt is None:
        learn.create_opt()
    scheds = gradual_schedule(len(learn.opt.param_lists), freeze_epochs, epochs, lr, learn.moms)
    learn.fit(freeze_epochs + epochs, cbs=[ParamScheduler(scheds), GradualUnfreeze(freeze_epochs, announce),
                                           *cbs], start_epoch=start_epoch)
