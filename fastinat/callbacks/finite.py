"""`FiniteLoss`: stop a run whose training loss stops being a number.

A learning rate far too high (or a broken input) makes the weights overflow; from then on
every loss is `nan` or `inf` and the epochs that follow train nothing. After each epoch
this callback looks at the epoch's mean training loss and its validation loss
(`EpochRecord`, the same numbers on every rank of a distributed run) and, when one is not
finite (an empty validation set has no loss to check), stops the fit before the
history, the best weights and the resume checkpoint take that epoch in: the run folder keeps
the epochs before it. `fastinat.train` then ends the run with `failure_message` as its
one-line error (exit 1).
"""

from __future__ import annotations

import math

from fastai.callback.core import Callback, CancelFitException

from .record import skipped


class FiniteLoss(Callback):
    order = 56  # after EpochRecord (55), before the history (60), trackers and checkpoint

    def __init__(self):
        self.failed: tuple[dict, str] | None = None  # (the epoch's record, the loss that failed)

    def after_epoch(self) -> None:
        rec = self.learn.epoch_record
        if skipped(self.learn) or not rec:
            return
        watched = ["train_loss"] + (["valid_loss"] if _has_valid(self.dls) else [])
        bad = next((k for k in watched if not math.isfinite(rec.get(k, math.nan))), None)
        if bad is not None:
            self.failed, self.learn.epoch_record = (rec, bad), None
            raise CancelFitException()


def _has_valid(dls) -> bool:
    try:
        return len(dls.valid_ds) > 0
    except (AttributeError, TypeError, IndexError):
        return False


def failure_message(failed: tuple[dict, str], lr: float, run_dir) -> str:
    """The one line that ends a run stopped by `FiniteLoss`."""
    rec, key = failed
    epoch, what = rec["epoch"], "training" if key == "train_loss" else "validation"
    kept = ("no epoch finished" if epoch == 1 else
            f"{run_dir} keeps epoch{'s 1-' if epoch > 2 else ' '}{epoch - 1}")
    return (f"The {what} loss of epoch {epoch} is {rec[key]}, not a finite number, so the run stopped: "
            f"the learning rate ({lr:.3g}) is probably too high; start a new run with a lower --lr, or "
            f"--lr auto to let lr_find choose one ({kept}).")
