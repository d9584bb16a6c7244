"""Sweep results: the leaderboard (rich table + CSV) and the per-parameter summary (CSV + PNG)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..io import write_csv
from .config import SweepConfig

STATE_ORDER = {"complete": 0, "pruned": 1, "failed": 2, "running": 3}


@dataclass
class TrialRecord:
    number: int
    state: str  # complete | pruned | failed | running
    value: float | None
    params: dict = field(default_factory=dict)  # {option key as in the YAML: value}
    run: str | None = None
    error: str | None = None


def ranked(records: list[TrialRecord], goal: str) -> list[TrialRecord]:
    """Complete trials best first, then pruned (best first), then failed and running ones."""
    sign = -1 if goal == "maximize" else 1

    def key(r: TrialRecord):
        v = r.value if r.value is not None and not math.isnan(r.value) else math.inf * -sign
        return (STATE_ORDER.get(r.state, 9), sign * v if r.value is not None else math.inf, r.number)

    return sorted(records, key=key)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def print_leaderboard(records: list[TrialRecord], cfg: SweepConfig, console: Console | None = None,
                      title: str = "Sweep leaderboard") -> None:
    console = console or Console()
    keys = [p.key for p in cfg.searched]
    table = Table(title=title, title_justify="left")
    for col in ("#", "trial", "state", cfg.metric, *keys, "run / error"):
        table.add_column(col, justify="right" if col in ("#", "trial", cfg.metric) else "left",
                         overflow="fold", no_wrap=col != "run / error")
    for i, r in enumerate(ranked(records, cfg.goal), 1):
        colour = {"complete": "", "pruned": "yellow", "failed": "red"}.get(r.state, "dim")
        value = f"{r.value:.4f}" if r.value is not None and not math.isnan(r.value) else "-"
        where = escape(r.error or "") if r.state == "failed" else escape(Path(r.run).name if r.run else "")
        table.add_row(str(i), str(r.number), f"[{colour}]{r.state}[/]" if colour else r.state, value,
                      *(escape(_fmt(r.params.get(k, ""))) for k in keys), where)
    width = console.width
    console.width = max(width, 70 + 14 * len(keys))  # one line per trial, in logs too
    try:
        console.print(table, soft_wrap=False)
    finally:
        console.width = width
    done = [r for r in records if r.state == "complete"]
    if done:
        best = ranked(done, cfg.goal)[0]
        console.print(f"best: trial {best.number}, {cfg.metric} {best.value:.4f}, run {best.run}",
                      highlight=False)


def write_leaderboard(path: Path, records: list[TrialRecord], cfg: SweepConfig) -> None:
    keys = [p.key for p in cfg.searched]
    finished = [r for r in ranked(records, cfg.goal) if r.state != "running"]
    rows = [[i, r.number, r.state, r.value, *(_fmt(r.params.get(k, "")) for k in keys), r.run, r.error]
            for i, r in enumerate(finished, 1)]
    write_csv(path, rows, ["rank", "trial", "state", cfg.metric, *keys, "run", "error"])


def param_summary(records: list[TrialRecord], cfg: SweepConfig) -> list[dict]:
    """Per searched parameter and value: trials, mean and best metric over complete trials."""
    rows = []
    best = max if cfg.goal == "maximize" else min
    done = [r for r in records if r.state == "complete" and r.value is not None]
    for p in cfg.searched:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in done:
            if p.key in r.params:
                groups[_fmt(r.params[p.key])].append(r.value)
        order = [_fmt(v) for v in p.values] if p.values else sorted(groups, key=lambda s: float(s))
        for value in order:
            vals = groups.get(value, [])
            rows.append({"parameter": p.key, "value": value, "trials": len(vals),
                         "mean": sum(vals) / len(vals) if vals else None,
                         "best": best(vals) if vals else None})
    return rows


def write_summary(sweep_dir: Path, records: list[TrialRecord], cfg: SweepConfig,
                  importances: dict[str, float] | None) -> None:
    """param_summary.csv, param_importance.csv (Optuna's, when computable) and params.png."""
    rows = param_summary(records, cfg)
    write_csv(sweep_dir / "param_summary.csv", rows, ["parameter", "value", "trials", "mean", "best"])
    if importances:
        write_csv(sweep_dir / "param_importance.csv", sorted(importances.items(), key=lambda kv: -kv[1]),
                  ["parameter", "importance"])
    _plot(sweep_dir / "params.png", rows, cfg, importances)


def _plot(dest: Path, rows: list[dict], cfg: SweepConfig, importances: dict | None) -> None:
    from ..report import pyplot, save_figure

    plt = pyplot()
    params = [p.key for p in cfg.searched]
    panels = (["importance"] if importances else []) + params
    if not panels:
        return
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel == "importance":
            names = sorted(importances, key=importances.get)
            ax.barh(names, [importances[n] for n in names], color="tab:purple")
            ax.set(title="parameter importance (Optuna)", xlabel="share")
            continue
        mine = [r for r in rows if r["parameter"] == panel]
        labels = [r["value"] for r in mine]
        means = [r["mean"] if r["mean"] is not None else 0.0 for r in mine]
        bars = ax.bar(range(len(mine)), means, color="tab:blue")
        for bar, r in zip(bars, mine, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"n={r['trials']}",
                    ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels(labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0,
                           ha="right" if max(map(len, labels), default=0) > 6 else "center", fontsize=7)
        ax.set(title=panel, ylabel=f"mean {cfg.metric}")
        if cfg.metric != "valid_loss":
            ax.set_ylim(0, 1.05)
    fig.suptitle(f"{cfg.metric} per parameter value (complete trials)")
    fig.tight_layout()
    save_figure(fig, dest)
