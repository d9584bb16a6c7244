"""`fastinat sweep`: hyperparameter sweeps, offline with Optuna or on W&B."""

from __future__ import annotations

import sys
from contextlib import contextmanager

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
    printed and SWEEP/leaderboard.csv, param_summary.csv, params.png are written. A --storage
    password is never written: other processes get it from PGPASSWORD, ~/.pgpass, or
    FASTINAT_STORAGE (the whole URL, also used when --storage is not given)."""
    from fastinat.sweeps import sweep as run_sweep

    with _argv_without_passwords():
        call(run_sweep, config, **options)


@contextmanager
def _argv_without_passwords():
    """sys.argv with each URL's password left out while the sweep runs: W&B records the command
    line of every run (wandb-metadata.json, and its server)."""
    from fastinat.sweeps.storage import safe_url

    given = sys.argv
    sys.argv = [_without_password(arg, safe_url) for arg in given]
    try:
        yield
    finally:
        sys.argv = given


def _without_password(arg: str, safe_url) -> str:
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    return f"{flag}{eq}{safe_url(value)}" if "://" in value else arg
