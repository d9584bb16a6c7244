"""`CSVHistory`: `history.csv`, one row per finished epoch, rewritten atomically each epoch."""

from __future__ import annotations

import csv
from pathlib import Path

from fastai.callback.core import Callback

from ..io import write_csv
from .record import skipped


def read_history(path: str | Path) -> list[dict]:
    """The rows of a history.csv as dicts of floats (epoch as int)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: int(v) if k in ("epoch", "size") else float(v) for k, v in row.items()} for row in rows]


class CSVHistory(Callback):
    order = 60

    def __init__(self, path: str | Path, rows: list[dict] | None = None):
        self.path, self.rows = Path(path), list(rows or [])

    def after_epoch(self) -> None:
        if skipped(self.learn) or not self.learn.epoch_record:
            return
        self.rows.append(dict(self.learn.epoch_record))
        write_csv(self.path, self.rows, columns=list(self.rows[-1]), parents=False)
