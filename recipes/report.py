"""`fastinat report`: one offline HTML page for runs and sweeps."""

from __future__ import annotations

from pathlib import Path

import typer

from fastinat.config import ReportOptions

from ._options import with_options
from ._util import call, console, err_console


@with_options(ReportOptions)
def report(
    paths: list[Path] = typer.Argument(..., help="Run folders, sweep folders, and folders that hold them "
                                       "(runs/: every run and sweep inside, at any depth)."),
    **options,
) -> None:
    """Write one self-contained HTML page about runs and sweeps.

    `fastinat report runs/` compares every run and sweep in the folder (as `tensorboard
    --logdir` takes a folder of runs); runs and sweeps may also be named one by one.

    The runs' summary, findings computed from the validation metrics, learning curves; for a
    sweep its leaderboard, parallel coordinates, parameter importance and metric per value;
    the best run in depth (per-class table, confusion matrix, predictions, top losses,
    Grad-CAM, filters). Every script and picture is inside the file: it opens offline."""
    from rich.markup import escape

    from fastinat.html_report import html_report

    out, problems = call(html_report, paths, **options)
    for line in problems:
        err_console.print(f"[yellow]note:[/] {escape(line)}", highlight=False)
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", highlight=False)
