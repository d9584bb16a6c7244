"""`fastinat report`: one self-contained HTML page for runs and sweeps.

    fastinat report runs/latest                                  # one run
    fastinat report runs/a runs/b --out compare.html             # runs side by side
    fastinat report runs/sweeps/scratch-20261128-120000          # a sweep (mixing is fine)
    fastinat report runs/                                        # every run and sweep in runs/
    path, problems = html_report(["runs/a"], out="report.html")   # fastinat.html_report

The page opens offline: plotly.js, the style sheet, the figures' data and every picture are
inside the file. Sections: problems (runs without metrics, failed trials), the runs'
summary, findings (`findings.py`: computed from validation metrics only), learning curves,
per sweep its leaderboard, parallel coordinates, parameter importance and metric per
value, and the best run (by valid accuracy) in depth: per-class table, confusion matrix,
prediction grid, top losses, Grad-CAM on one TEST image per class, first-layer filters.
The file is written atomically: an error or Ctrl-C never leaves half a page.
"""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write
from . import sections
from .inputs import load
from .page import Page


def html_report(paths: list[str | Path], **options) -> tuple[Path, list[str]]:
    """Write the report of `paths` (run and sweep folders, and folders that hold them) to a file.

    `options`: `fastinat.config.ReportOptions` fields (out, explain).

    Returns:
        (the file written, one line per problem found: runs without metrics, failed trials).
    Raises:
        UsageError: a path that is missing or neither a run nor a sweep folder.
        WriteError: `out` cannot be written.
    """
    from ..config import ReportOptions
    from ..options import resolve

    opts = resolve(ReportOptions, overrides=options)
    runs, sweeps = load(paths)
    problems = [f"{r.path}: {r.problem}" for r in runs if r.problem]
    problems += [p for s in sweeps for p in s.problems]
    names = [r.label for r in runs] + [f"sweep {s.label}" for s in sweeps]
    page = Page("fastinat report: " + (", ".join(names) if len(names) <= 3 else f"{len(names)} runs and sweeps"))
    sections.problems_section(page, problems)
    sections.summary_section(page, runs, sweeps)
    sections.findings_section(page, runs, sweeps)
    sections.curves_section(page, runs)
    for s in sweeps:
        sections.sweep_section(page, s)
    sections.best_section(page, sections.best_run(runs, sweeps), explain=opts.explain)
    text = page.html([str(p) for p in paths])
    out = Path(opts.out)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out, problems
