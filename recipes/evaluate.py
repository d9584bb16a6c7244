"""`fastinat evaluate` and `fastinat predict`: a trained run on a split, or on any images."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ._util import call, console, fail


def evaluate(
    run: Path = typer.Argument(..., help="A run folder (runs/<name>)."),
    data: Path = typer.Option(None, "--data", help="Dataset folder. \\[default: the one the run "
                              "was trained on, from RUN/config.json]"),
    split: str = typer.Option("test", "--split", help="test (val/, the held-out TEST set) or valid "
                              "(the run's validation split of train/)."),
    bs: int = typer.Option(64, "--bs", min=1, help="Images per forward pass."),
) -> None:
    """Evaluate a run's best weights and write its report.

    Loss, accuracy, macro and weighted precision/recall/F1 and a per-class table
    (scikit-learn), into RUN/report/ (RUN/report-valid/ for --split valid): per_class.csv,
    metrics.json, confusion_matrix.png, curves.png, predictions_grid.png, top_losses.png."""
    from fastinat.report import evaluate as run_evaluate

    call(run_evaluate, run, data=data, split=split, bs=bs, console=console)


def predict(
    run: Path = typer.Argument(..., help="A run folder (runs/<name>)."),
    images: list[Path] = typer.Argument(..., help="Image files and folders (searched recursively)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Most likely classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line: path, label, "
                                 "prob, topk ([label, prob] pairs), or path and error."),
    bs: int = typer.Option(64, "--bs", min=1, help="Images per forward pass."),
) -> None:
    """Predict the class of images with a run's best model.

    The preprocessing is the run's evaluation transform (centre square, resize, normalise).
    A missing or unreadable file gets its own line with the error and the others are still
    predicted; the exit code is then 1."""
    from rich.markup import escape
    from rich.table import Table

    from fastinat.inference import predict as run_predict

    records = call(run_predict, run, images, top_k=top_k, bs=bs, progress=not as_json)
    if not records:
        fail("No image files found in " + ", ".join(map(str, images)) + ".", 2)
    if as_json:
        for r in records:
            typer.echo(json.dumps(r))
    else:
        table = Table(show_edge=False)
        for col in ("path", "label", "prob", f"top {top_k}"):
            table.add_column(col, justify="right" if col == "prob" else "left",
                             overflow="fold" if col == "path" else "ellipsis")
        for r in records:
            if "error" in r:
                table.add_row(escape(r["path"]), f"[red]error: {escape(r['error'])}[/]", "", "")
            else:
                top = ", ".join(f"{label} {p:.3f}" for label, p in r["topk"])
                table.add_row(escape(r["path"]), escape(r["label"]), f"{r['prob']:.3f}", escape(top))
        console.print(table)
    if any("error" in r for r in records):
        raise typer.Exit(1)
