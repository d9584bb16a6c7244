"""Run the fastinat benchmarks, print one table and write benchmarks/results.json.

    .venv/bin/python -m benchmarks                      # every benchmark
    .venv/bin/python -m benchmarks loader               # only the ones named
    .venv/bin/python -m benchmarks loader --images 600 --workers 2 --bs 64 --size 224

Run from the repository root. Synthetic data and every fastinat cache (`FASTINAT_CACHE`: file
checks, dataset statistics, presized copies) go to benchmarks/.cache/ (gitignored), never to
your home folder; the synthetic images are made once per set of parameters and reused.
results.json holds {row: {value, unit, baseline, ratio}} for the rows of this run only.
Every timed pass runs in its own fresh Python process (`benchmarks._worker`), so process-global
settings such as fastinat's glibc malloc tuning never leak from one row into another; the
fastinat rows turn that tuning on, as `fastinat scratch` does, the baselines don't. Starting
those processes (importing torch/fastai, 3-8 s each) is not measured but is most of the wall
time: with the defaults the whole run takes about 5-6 minutes on 2 CPU cores (the first run
also spends ~45 s making the images).

`loader` rows: see `benchmarks/bench_loader.py`. Images/second over one pass of the train
loader, not epoch time, because fastinat/fastai train on 80% of train/ (the rest is their
validation split) while the torchvision baseline reads all of it.

`scratch` rows: see `benchmarks/bench_scratch.py`. Part A training images/second over the
first `--scratch-batches` batches of an epoch: fastinat's Learner against a plain PyTorch loop;
then the model step alone: channels_last against NCHW, and malloc tuning on against off.

`features` rows: see `benchmarks/bench_features.py`. A frozen-ResNet50 head epoch on cached
backbone features against the same epoch recomputing the backbone (`--feature-images`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from rich.markup import escape

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None, names: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("benchmarks", nargs="*", metavar="NAME",
                   help=f"benchmarks to run (default: all): {', '.join(names)}")
    p.add_argument("--images", type=int, default=2000,
                   help="synthetic train/ images (10 classes; default 2000)")
    p.add_argument("--workers", type=int, default=2, help="loader worker processes (default 2)")
    p.add_argument("--bs", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--size", type=int, default=224, help="image size (default 224)")
    p.add_argument("--warmup", type=int, default=2,
                   help="batches of the untimed warm-up pass (default 2, at least 1)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed passes per row; the fastest counts (default 3)")
    p.add_argument("--scratch-batches", type=int, default=4,
                   help="timed training batches per pass of the scratch benchmark (default 4)")
    p.add_argument("--feature-images", type=int, default=160,
                   help="synthetic train/ images of the features benchmark (default 160)")
    p.add_argument("--predict-images", type=int, default=500,
                   help="images of the predict benchmark (default 500)")
    p.add_argument("--quick", action="store_true",
                   help="tiny counts (64 images, 64 px, 1 pass), every row in this process, to check "
                        "that every row is produced; the numbers mean nothing")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    p.add_argument("--out", type=Path, default=HERE / "results.json", help="results file")
    opts = p.parse_args(argv)
    if opts.quick:
        from ._worker import IN_PROCESS

        os.environ[IN_PROCESS] = "1"  # one interpreter for every row (see benchmarks._worker)
        opts.images, opts.size, opts.bs, opts.warmup, opts.repeat = 96, 64, 16, 1, 1
        opts.scratch_batches, opts.feature_images, opts.predict_images, opts.workers = 1, 48, 24, 1
    unknown = [n for n in opts.benchmarks if n not in names]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if min(opts.workers + 1, opts.bs, opts.size, opts.warmup, opts.repeat) < 1:
        p.error("--bs, --size, --warmup and --repeat must be positive, --workers not negative")
    if opts.images * 0.8 < (opts.warmup + 1) * opts.bs:
        p.error(f"--images {opts.images} is too few: 80% of them must fill --warmup + 1 batches")
    return opts


def goal_text(r: dict, goal: float | None) -> str:
    if r.get("error"):
        return f"[bold red]ERROR[/] {escape(r['error'])}"
    if goal is None:
        return "[dim]info[/]"
    ok = r["ratio"] >= goal  # False for NaN
    return f"{'[green]' if ok else '[bold red]'}>= {goal:g}x {'ok' if ok else 'MISSED'}[/]"


def fmt(value: float, suffix: str) -> str:
    return "-" if math.isnan(value) else f"{value:,.{2 if suffix == 'x' else 1}f}{suffix}"


def to_json(rows: dict[str, dict]) -> str:
    """{name: {value, unit, baseline, ratio}} (+ error for a failed row); NaN becomes null."""
    out = {}
    for name, r in rows.items():
        out[name] = {k: None if isinstance(r[k], float) and math.isnan(r[k]) else r[k]
                     for k in ("value", "unit", "baseline", "ratio")}
        if r.get("error"):
            out[name]["error"] = r["error"]
    return json.dumps(out, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    # Before fastinat is used: keep its caches (checks, stats, presize) out of the home folder.
    os.environ["FASTINAT_CACHE"] = str(HERE / ".cache" / "fastinat")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecations in fastai
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from rich.console import Console
    from rich.table import Table

    from . import error_text, failed, load_all

    registry = load_all()
    opts = parse_args(argv, list(registry))
    err = Console(stderr=True, highlight=False)
    opts.log = lambda msg: err.print(msg, soft_wrap=True)
    chosen = opts.benchmarks or list(registry)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        opts.log(f"[yellow]Warning[/]: load average {load:.1f} before starting: other programs "
                 "may be using the CPU: the numbers may be low and noisy.")
    start = time.perf_counter()
    rows: dict[str, dict] = {}
    goals: dict[str, float | None] = {}
    for name in chosen:
        bench = registry[name]
        opts.log(f"[bold]{name}[/]: {bench.doc}")
        t0 = time.perf_counter()
        try:
            got = bench.fn(opts)
        except Exception as e:  # one broken benchmark must not hide the others' rows
            opts.log(f"  [bold red]{name} FAILED[/]: {escape(repr(e))}")
            got = {name: failed("", math.nan, error_text(e))}
        opts.log(f"  ({time.perf_counter() - t0:.0f} s)")
        rows.update(got)
        goals.update({r: bench.goals.get(r) for r in got})
    wall = time.perf_counter() - start

    table = Table(title=f"fastinat benchmarks: images={opts.images} workers={opts.workers} "
                        f"bs={opts.bs} size={opts.size}", title_justify="left")
    for col in ("benchmark", "value", "baseline", "ratio", "goal"):
        table.add_column(col, justify="left" if col in ("benchmark", "goal") else "right")
    for name, r in rows.items():
        unit = f" {r['unit']}"
        table.add_row(name, fmt(r["value"], unit), fmt(r["baseline"], unit), fmt(r["ratio"], "x"),
                      goal_text(r, goals.get(name)))
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(to_json(rows))
    err.print(f"Wrote {opts.out}; total wall time {wall:.0f} s.")
    if any(r.get("error") for r in rows.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
