"""fastinat benchmarks: a small registry of benchmark functions, run by `python -m benchmarks`.

A benchmark is a function `fn(opts) -> {row name: row}` registered with `@register`; `opts` is
the parsed command line (see `benchmarks.__main__`). Every row is

    {"value": float, "unit": str, "baseline": float, "ratio": float}

where `ratio` = value / baseline (higher is better). A measurement that raised gives a row with
NaN value and ratio plus "error" (one line), and the run exits with status 1. `goals` maps a row
name to the smallest ratio that meets its goal (None: the row is informational). Modules named
`bench_*.py` in this folder are imported by `load_all()`, so a new benchmark is a new module.
A benchmark runs each timed pass in a fresh process with `benchmarks._worker.isolated()`.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

Row = dict  # {"value": float, "unit": str, "baseline": float, "ratio": float}


@dataclass
class Benchmark:
    name: str
    fn: Callable[..., dict[str, Row]]
    goals: dict[str, float | None] = field(default_factory=dict)
    doc: str = ""


BENCHMARKS: dict[str, Benchmark] = {}


def register(name: str, goals: dict[str, float | None] | None = None):
    """Decorator: add `fn(opts) -> rows` to the registry under `name`."""

    def deco(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        BENCHMARKS[name] = Benchmark(name, fn, dict(goals or {}), doc[0] if doc else "")
        return fn

    return deco


def row(value: float, unit: str, baseline: float) -> Row:
    """One result row; ratio = value / baseline (NaN when there is no baseline)."""
    value, baseline = float(value), float(baseline)
    ok = baseline > 0 and not math.isnan(baseline)
    return {"value": value, "unit": unit, "baseline": baseline,
            "ratio": value / baseline if ok else math.nan}


def failed(unit: str, baseline: float, error: str) -> Row:
    """The row of a measurement that raised: NaN value and ratio, and the error's last line."""
    return {"value": math.nan, "unit": unit, "baseline": float(baseline), "ratio": math.nan,
            "error": error}


def error_text(exc: BaseException) -> str:
    """One line for an exception (for a DataLoader worker's, the original error's last line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if ":" in last and "Error" in last.split(":")[0]:
        return last
    return f"{type(exc).__name__}: {last}"


def load_all() -> dict[str, Benchmark]:
    """Import every `benchmarks/bench_*.py` module (they register themselves)."""
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("bench_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return BENCHMARKS
