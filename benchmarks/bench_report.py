"""`fastinat report` on a 30-trial sweep: wall time and file size against the issue's budgets.

Rows (one fresh `fastinat report SWEEP --out X` process, timed from its start to its exit,
imports included, as a user waits for it; the fastest of `--repeat` runs):

* `report_sweep_seconds`: seconds (lower is better) against the budget, 30 s on a 2-core CPU
  (ratio: the share of the budget used; the log says whether it is met);
* `report_sweep_mb`: the HTML file's size in MB against the budget, 10 MB.

The sweep is built, not run: one small scratch CNN is trained for one epoch on the synthetic
photos at `--size` (so its TEST report holds real prediction-grid and top-loss pictures), then
copied as the trials: scratch.yaml's ten searched parameters drawn at random, a 10-epoch
history and valid/TEST metrics each, a leaderboard and Optuna-style importances. The report
includes Grad-CAM on one TEST image per class and the first-layer filters (its default).
`--quick`: 6 trials, the report made in the benchmark's own process.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import failed, register, row
from ._worker import isolated
from .synthetic import synthetic_dataset

TRIALS, QUICK_TRIALS = 30, 6
BUDGET_S, BUDGET_MB = 30.0, 10.0
FASTINAT = Path(sys.executable).with_name("fastinat")
SPACE = Path(__file__).resolve().parents[1] / "recipes" / "sweeps" / "scratch.yaml"


def _shown(v) -> str:
    """A value as the sweep's leaderboard.csv writes it."""
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _trial(run: Path, dest: Path, rng: random.Random, params: dict, epochs: int = 10) -> float:
    """Copy `run` as one trial with its own history and metrics; its valid accuracy."""
    from fastinat.io import read_json, write_csv, write_json

    shutil.copytree(run, dest)
    valid = min(0.95, 0.35 + 0.1 * bool(params.get("augment")) + rng.uniform(-0.08, 0.08))
    history = [{"epoch": e, "train_loss": 2.3 * math.exp(-e / 6) + rng.uniform(0, 0.05),
                "valid_loss": 2.3 * math.exp(-e / 8) + rng.uniform(0, 0.05),
                "valid_accuracy": valid * (1 - math.exp(-e / 3)), "valid_f1": valid * (1 - math.exp(-e / 3)) - 0.02,
                "lr": 1e-3, "time": 30.0} for e in range(1, epochs + 1)]
    write_csv(dest / "history.csv", history, list(history[0]))
    metrics = read_json(dest / "metrics.json")
    metrics.update(valid_accuracy=valid, valid_f1=valid - 0.02, test_accuracy=valid + rng.uniform(-0.03, 0.03),
                   epochs_trained=epochs, best_epoch=epochs)
    write_json(dest / "metrics.json", metrics)
    return valid


def make_sweep(root: str, data: str, size: int, trials: int) -> dict:
    """A sweep folder of `trials` complete trials, copies of one trained run (module docstring)."""
    import yaml

    from fastinat.io import write_csv, write_json
    from fastinat.train import train_scratch

    root = Path(root)
    run = train_scratch(data=data, size=size, filters=[8, 16, 32], dense_units=32, epochs=1, bs=32,
                        workers=0, wandb=False, out=str(root / "seed"), name="run")
    space = yaml.safe_load(SPACE.read_text())["parameters"]
    keys = [k for k, v in space.items() if "values" in v]
    sweep = root / "sweep"
    (sweep / "runs").mkdir(parents=True)
    shutil.copyfile(SPACE, sweep / "sweep.yaml")
    write_json(sweep / "sweep.json", {"command": "scratch", "backend": "local", "overrides": {}})
    rng, rows = random.Random(0), []
    for n in range(trials):
        params = {k: rng.choice(space[k]["values"]) for k in keys}
        dest = sweep / "runs" / f"trial-{n:03d}"
        rows.append([n, "complete", _trial(run, dest, rng, params), *(_shown(params[k]) for k in keys), str(dest), ""])
    rows.sort(key=lambda r: -r[2])
    write_csv(sweep / "leaderboard.csv", [[i + 1, *r] for i, r in enumerate(rows)],
              ["rank", "trial", "state", "valid_accuracy", *keys, "run", "error"])
    shares = sorted(((k, rng.random()) for k in keys), key=lambda kv: -kv[1])
    write_csv(sweep / "param_importance.csv", [(k, v / sum(s for _, s in shares)) for k, v in shares],
              ["parameter", "importance"])
    return {"sweep": str(sweep)}


def _report(sweep: str, out: Path, quick: bool) -> float:
    """Seconds of `fastinat report SWEEP` in a new process (--quick: in this one, whose imports
    are done: the numbers of a quick run mean nothing, and the test suite runs it)."""
    cmd = [str(FASTINAT)] if FASTINAT.exists() else [sys.executable, "-m", "fastinat"]
    start = time.perf_counter()
    if quick:
        from fastinat.html_report import html_report

        html_report([sweep], out=str(out))
    else:
        subprocess.run([*cmd, "report", sweep, "--out", str(out)], check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


@register("report", goals={"report_sweep_seconds": None, "report_sweep_mb": None})
def bench_report(opts) -> dict:
    """`fastinat report` on a 30-trial sweep: seconds and MB against the 30 s / 10 MB budgets."""
    quick = getattr(opts, "quick", False)
    trials = QUICK_TRIALS if quick else TRIALS
    data = synthetic_dataset(min(opts.images, 200), seed=opts.seed, log=opts.log)
    with tempfile.TemporaryDirectory(prefix="fastinat-bench-report-") as tmp:
        got = isolated(f"{__name__}:make_sweep", {"root": tmp, "data": str(data), "size": opts.size,
                                                  "trials": trials})
        if "error" in got:
            opts.log(f"  report FAILED: {got.get('detail') or got['error']}")
            return {"report_sweep_seconds": failed("s", BUDGET_S, got["error"]),
                    "report_sweep_mb": failed("MB", BUDGET_MB, got["error"])}
        out = Path(tmp) / "report.html"
        seconds = min(_report(got["sweep"], out, quick) for _ in range(max(1, opts.repeat)))
        mb = out.stat().st_size / 1e6
    verdict = "met" if seconds <= BUDGET_S and mb <= BUDGET_MB else "MISSED"
    opts.log(f"  {trials} trials at {opts.size} px: {seconds:.1f} s (budget {BUDGET_S:.0f} s), {mb:.1f} MB "
             f"(budget {BUDGET_MB:.0f} MB): {verdict}")
    return {"report_sweep_seconds": row(seconds, "s", BUDGET_S), "report_sweep_mb": row(mb, "MB", BUDGET_MB)}
