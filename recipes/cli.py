"""The `fastinat` app: one Typer app, one sub-command module per task."""

from __future__ import annotations

import typer

from fastinat import __version__

from . import data, evaluate, explain, export, finetune, report, reproduce, scratch, sweep
from ._util import Group, TunedCommand, one_line_warnings, unwrap

app = typer.Typer(
    name="fastinat",
    cls=Group,
    help="Train image classifiers on iNaturalist 12K (nature_12K) with fastai and timm.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for panel, command in (("Train", scratch.scratch), ("Train", finetune.finetune), ("Train", sweep.sweep),
                       ("Train", reproduce.reproduce),
                       ("Evaluate", evaluate.evaluate), ("Evaluate", evaluate.predict),
                       ("Evaluate", export.export), ("Evaluate", explain.explain), ("Evaluate", report.report)):
    app.command(cls=TunedCommand, rich_help_panel=panel, help=unwrap(command.__doc__))(command)
app.add_typer(data.app, name="data", rich_help_panel="Data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fastinat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train image classifiers on iNaturalist 12K (nature_12K) with fastai and timm."""
    one_line_warnings()  # every command: a warning is one line, never Python's source line


def main() -> None:
    """Console-script entry point (also `python -m fastinat` and `torchrun -m fastinat`).

    The process is the command's: one that trains or evaluates tunes it once before it runs
    (`TunedCommand`: `fastinat.perf.tune_process`), the library functions it calls leave those
    settings alone. Whatever the command did, no loader worker pool outlives it
    (`fastinat.data.workers.close_all_workers`, only if a loader was ever made)."""
    import sys

    try:
        app(prog_name="fastinat")
    finally:
        workers = sys.modules.get("fastinat.data.workers")
        if workers is not None:
            workers.close_all_workers()
