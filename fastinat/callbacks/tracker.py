"""Best weights by valid accuracy (`BestModel`) and early stopping (`EarlyStop`).

Both watch `learn.epoch_record[monitor]` (higher is better) and keep a small state dict so
a resumed run carries on with the same best value and patience count. Without a validation
set (every class too small for the split, or --valid-pct 0) the monitor is NaN: the latest
epoch's weights are kept and nothing stops early.
"""

from __future__ import annotations

import math
from pathlib import Path

from fastai.callback.core import Callback, CancelFitException

from ..io import load_weights, save_weights, write_json
from .record import skipped


class BestModel(Callback):
    """Save `model.safetensors` whenever `monitor` improves; load the best back after fitting."""

    order = 61

    def __init__(self, weights: str | Path, card: str | Path, card_data: dict,
                 monitor: str = "valid_accuracy", module=None):
        self.weights, self.card, self.card_data = Path(weights), Path(card), dict(card_data)
        self.monitor, self.best, self.best_epoch = monitor, -math.inf, 0
        self.module = module  # what to save, when not learn.model (a head trained on cached features)

    @property
    def saved(self):
        return self.module if self.module is not None else self.model

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state(self, state: dict) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])

    def after_epoch(self) -> None:
        rec = self.learn.epoch_record
        if skipped(self.learn) or not rec:
            return
        value = rec.get(self.monitor, math.nan)
        unmeasured = math.isnan(value) and self.best == -math.inf  # no validation set: keep the latest
        if value > self.best or unmeasured:  # NaN never counts as better than a number
            self.best_epoch = rec["epoch"]
            self.best = self.best if unmeasured else float(value)
            save_weights(self.saved, self.weights, parents=False)
            shown = None if unmeasured else self.best
            write_json(self.card, {**self.card_data, "best": {self.monitor: shown,
                                                              "epoch": self.best_epoch}},
                       parents=False)

    def after_fit(self) -> None:
        if self.weights.exists():
            load_weights(self.saved, self.weights)


class EarlyStop(Callback):
    """Stop when `monitor` has not improved for `patience` epochs (0 or None: never).

    The decision is taken after an epoch and acted on before the next one, so the resume
    checkpoint written in between already knows it.
    """

    order = 62

    def __init__(self, patience: int | None, monitor: str = "valid_accuracy"):
        self.patience, self.monitor = patience, monitor
        self.best, self.wait, self.stopped_epoch = -math.inf, 0, None

    def state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state(self, state: dict) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.stopped_epoch = state.get("stopped_epoch")

    def before_epoch(self) -> None:
        if self.stopped_epoch is not None and not skipped(self.learn):
            raise CancelFitException()

    def after_epoch(self) -> None:
        rec = self.learn.epoch_record
        if not self.patience or skipped(self.learn) or not rec:
            return
        value = rec.get(self.monitor, math.nan)
        if math.isnan(value):  # no validation set: nothing to stop on
            return
        if value > self.best:
            self.best, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = rec["epoch"]
