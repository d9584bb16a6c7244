"""`ProgressiveResize` (`--progressive 128,192,224`): the training image size grows over one run.

The epochs are cut into equal shares, one per size (`TrainConfig.train_size`); before each
epoch the training loader's crops are set to that epoch's size. Validation, the best-weights
choice and the final evaluation stay at the last size (the run's `--size`). It is one
`fit`: one learning-rate schedule, one history (with a `size` column), and a resumed run
sets the size from the epoch number, as an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Callable

from fastai.callback.core import Callback


class ProgressiveResize(Callback):
    """Before each epoch, set the training crops to `size_of(epoch)` (0-based epoch)."""

    order = -10  # before the loaders start the epoch's workers

    def __init__(self, size_of: Callable[[int], int], augment):
        self.size_of, self.augment = size_of, augment  # the loaders' InatAugment
        self.size = None

    def before_epoch(self) -> None:
        self.size = self.size_of(self.epoch)
        self.augment.train_size = self.learn.train_size = self.size  # EpochRecord: history's size

    def after_fit(self) -> None:
        self.augment.train_size = self.learn.train_size = None


def plan(size_of: Callable[[int], int], epochs: int) -> str:
    """'epochs 1-3 at 128 px, 4-6 at 192 px, 7-10 at 224 px'."""
    parts, start = [], 0
    for e in range(1, epochs + 1):
        if e == epochs or size_of(e) != size_of(start):
            span = f"{start + 1}-{e}" if e > start + 1 else f"{e}"
            parts.append(f"{span} at {size_of(start)} px")
            start = e
    return "epochs " + ", ".join(parts)
