"""`RichProgress`: a live bar per epoch on a terminal, and one plain line per finished epoch.

It replaces fastai's fastprogress bars, whose carriage-return fragments fill CI logs.
"""

from __future__ import annotations

import math

from fastai.callback.core import Callback
from rich.console import Console

from .record import skipped


def format_record(rec: dict, n_epochs: int) -> str:
    parts = [f"epoch {rec['epoch']:>{len(str(n_epochs))}}/{n_epochs}"]
    for key, value in rec.items():
        if key in ("epoch", "time", "lr"):
            continue
        if isinstance(value, int):  # progressive resizing's size
            parts.append(f"{key} {value}")
        else:
            parts.append(f"{key} {value:.4f}" if not math.isnan(value) else f"{key} nan")
    parts.append(f"lr {rec['lr']:.2e}")
    parts.append(f"{rec['time']:.1f}s")
    return "  ".join(parts)


class RichProgress(Callback):
    order = 70

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.bar, self.task = None, None

    def before_fit(self) -> None:
        self.bar = None
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                                console=self.console, transient=True)
            self.bar.start()
        self.task = None

    def _start(self, what: str, n: int) -> None:
        if self.bar is None or skipped(self.learn):
            return
        if self.task is not None:
            self.bar.remove_task(self.task)
        desc = f"epoch {self.epoch + 1}/{self.n_epoch} {what}"
        self.task = self.bar.add_task(desc, total=n, loss="")

    def before_train(self) -> None:
        self._start("train", len(self.dl))

    def before_validate(self) -> None:
        self._start("valid", len(self.dl))

    def after_batch(self) -> None:
        if self.bar is not None and self.task is not None:
            loss = f"loss {float(self.learn.loss.detach()):.4f}" if self.training else ""
            self.bar.update(self.task, advance=1, loss=loss)

    def after_epoch(self) -> None:
        rec = self.learn.epoch_record
        if skipped(self.learn) or not rec:
            return
        self.console.print(format_record(rec, self.n_epoch), highlight=False)

    def after_fit(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
