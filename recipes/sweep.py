"""`fastinat sweep`: hyperparameter sweeps, offline with Optuna or on W&B."""

from __future__ import annotations

import typer

from fastinat.config import SweepOptions

from ._options import with_options
from ._util import call


@with_options(SweepOptions)
def sweep(
    config: str = typer.Argument(None, help="Sweep YAML (W&B's format), or a built-in one: scratch, "
                                 "finetune (recipes/sweeps/)."),
    **options,
) -> None:
    """Run a hyperparameter sweep of fastinat scratch or finetune.

    Every trial is a normal run folder in SWEEP/runs/; a trial that fails is recorded with its
    error and the sweep goes on. At the end (and on --resume DIR --count 0) a leaderboard is
    printed and SWEEP/leaderboard.csv, param_summary.csv, params.png are written."""
    from fastinat.sweeps import sweep as run_sweep

    call(run_sweep, config, **options)
