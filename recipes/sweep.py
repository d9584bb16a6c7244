"""`fastinat sweep`: hyperparameter sweeps, offline with Optuna or on W&B."""

from __future__ import annotations

from pathlib import Path

import typer

from ._util import call


def sweep(
    config: str = typer.Argument(None, help="Sweep YAML (W&B's format), or a built-in one: scratch, "
                                 "finetune (recipes/sweeps/)."),
    backend: str = typer.Option(None, "--backend", help="local (Optuna, offline) or wandb (W&B sweeps, "
                                "online). \\[default: wandb with W&B credentials, else local]"),
    count: int = typer.Option(None, "--count", help="Total finished trials wanted (a resumed sweep "
                              "counts the ones it has). \\[default: the grid's size, or 10]"),
    data: Path = typer.Option(None, "--data", help="Dataset for every trial. \\[default: the config's, "
                              "else data/inaturalist_12K]"),
    epochs: int = typer.Option(None, "--epochs", help="Epochs of every trial (overrides the config)."),
    size: int = typer.Option(None, "--size", help="Image size of every trial (overrides the config)."),
    out: Path = typer.Option(None, "--out", help="Parent folder of sweep folders. \\[default: runs/sweeps]"),
    name: str = typer.Option(None, "--name", help="Sweep folder name. \\[default: <config>-<timestamp>]"),
    storage: str = typer.Option(None, "--storage", help="local: an Optuna storage URL shared by several "
                                "processes or machines (e.g. postgresql://...). \\[default: SWEEP/study.db]"),
    resume: Path = typer.Option(None, "--resume", help="Continue a sweep folder (--count 0: only print "
                                "and rewrite its results)."),
    join: str = typer.Option(None, "--join", help="Join a W&B sweep by id (entity/project/id) as one more agent."),
    seed: int = typer.Option(0, "--seed", help="Seed of the local sampler."),
    project: str = typer.Option("fastinat", "--project", help="W&B project (wandb backend)."),
    entity: str = typer.Option(None, "--entity", help="W&B entity (wandb backend)."),
) -> None:
    """Run a hyperparameter sweep of fastinat scratch or finetune.

    Every trial is a normal run folder in SWEEP/runs/; a trial that fails is recorded with its
    error and the sweep goes on. At the end (and on --resume DIR --count 0) a leaderboard is
    printed and SWEEP/leaderboard.csv, param_summary.csv, params.png are written."""
    from fastinat.sweeps import sweep as run_sweep

    call(run_sweep, config, backend=backend, count=count, data=str(data) if data else None,
         epochs=epochs, size=size, out=out, name=name, storage=storage, resume=resume, join=join,
         seed=seed, project=project, entity=entity)
