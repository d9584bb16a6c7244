"""Rich progress bars on stderr that stay quiet in logs (no bar spam when not a terminal)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

err_console = Console(stderr=True)


@contextmanager
def progress_task(description: str, total: int | None, enabled: bool = True, *,
                  completed: int = 0, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; show a transient bar when enabled and stderr is a terminal.

    `unit="bytes"` shows sizes, speed and time left (downloads); `completed` starts the bar
    part-way (a resumed download).
    """
    if not enabled or total == 0 or not err_console.is_terminal:
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counts = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
    with Progress(TextColumn("{task.description}"), BarColumn(), *counts, TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=total, completed=completed)
        yield lambda n=1: bar.advance(task, n)
