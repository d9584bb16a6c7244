"""`EpochRecord`: one dict per finished epoch, shared by every other fastinat callback.

    learn.epoch_record = {"epoch": 3, "train_loss": 0.41, "valid_loss": 0.38,
                          "valid_accuracy": 0.91, "valid_f1": 0.90, "lr": 1e-4, "time": 12.3}

`epoch` counts from 1. `train_loss` is the mean loss over the epoch's batches (not fastai's
smoothed loss, so a resumed run reports the same numbers). Epochs that a resumed run skips
(`learn.resume_epoch`) produce no record.
"""

from __future__ import annotations

import math
import time

from fastai.callback.core import Callback

#: fastai metric names -> history column names.
RENAMES = {"accuracy": "valid_accuracy", "f1_score": "valid_f1"}


def skipped(learn) -> bool:
    """True while a resumed run fast-forwards over epochs it already finished."""
    return learn.epoch < getattr(learn, "resume_epoch", 0)


class EpochRecord(Callback):
    order = 55  # after fastai's Recorder (50) has the epoch's valid loss and metrics

    def before_fit(self) -> None:
        self.learn.epoch_record = None

    def before_epoch(self) -> None:
        self._start, self._loss, self._n = time.perf_counter(), 0.0, 0

    def after_batch(self) -> None:
        if self.training and not skipped(self.learn):
            bs = len(self.learn.yb[0]) if self.learn.yb else 1
            self._loss += float(self.learn.loss.detach()) * bs
            self._n += bs

    def after_epoch(self) -> None:
        if skipped(self.learn):
            return
        rec = self.recorder
        values = dict(zip(rec.metric_names[1:], rec.log[1:], strict=False))
        from ..distributed import all_sum

        loss, n = all_sum(self._loss, self._n)  # over every rank of a distributed run
        record = {"epoch": self.epoch + 1, "train_loss": loss / n if n else math.nan}
        record["valid_loss"] = _num(values.get("valid_loss"))
        for name, value in values.items():
            if name not in ("train_loss", "valid_loss", "time"):
                record[RENAMES.get(name, name)] = _num(value)
        if getattr(self.learn, "train_size", None):  # progressive resizing: this epoch's size
            record["size"] = self.learn.train_size
        record["lr"] = float(self.opt.hypers[-1]["lr"])
        record["time"] = round(time.perf_counter() - self._start, 3)
        self.learn.epoch_record = record


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
