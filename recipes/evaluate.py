"""`fastinat evaluate` and `fastinat predict`: a trained run on a split, or on any images."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fastinat.config import EvaluateOptions, PredictOptions
from fastinat.errors import UsageError

from ._options import RUN, with_options
from ._util import call, console, fail


@with_options(EvaluateOptions)
def evaluate(run: Path = RUN, **options) -> None:
    """Evaluate a run's best weights and write its report.

    Loss, accuracy, macro and weighted precision/recall/F1 and a per-class table
    (scikit-learn), into RUN/report/ (RUN/report-valid/ for --split valid): per_class.csv,
    metrics.json, confusion_matrix.png, curves.png, predictions_grid.png, top_losses.png.
    --tta adds the accuracy, loss and macro F1 with test-time augmentation as separate
    numbers (test_accuracy_tta ... in metrics.json)."""
    from fastinat.report import evaluate as run_evaluate

    call(run_evaluate, run, console=console, **options)


@with_options(PredictOptions)
def predict(
    run: Path = RUN,
    images: list[Path] = typer.Argument(..., help="Image files and folders (searched recursively)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line: path, label, "
                                 "prob, topk ([label, prob] pairs), or path and error."),
    **options,
) -> None:
    """Predict the class of images with a run's best model.

    The preprocessing is the run's evaluation transform (centre square, resize, normalise);
    with --tta the probabilities shown are the mean over its test-time augmentation views.
    A missing or unreadable file gets its own line with the error and the others are still
    predicted; the exit code is then 1."""
    from rich.markup import escape
    from rich.table import Table

    from fastinat.inference import predict as run_predict

    records = call(run_predict, run, images, progress=not as_json, **options)
    if not records:
        fail(UsageError("No image files found in " + ", ".join(map(str, images)) + "."))
    if as_json:
        for r in records:
            typer.echo(json.dumps(r))
    else:
        from fastinat.run_folder import resolve_latest

        if resolve_latest(run) != run:  # say which run `latest` is (the newest: maybe not the one meant)
            console.print(f"{run} is {resolve_latest(run)}", highlight=False)
        table = Table(show_edge=False)
        k = options.get("top_k", PredictOptions().top_k)
        for col in ("path", "label", "prob", f"top {k}"):
            table.add_column(col, justify="right" if col == "prob" else "left",
                             overflow="fold" if col == "path" else "ellipsis")
        for r in records:
            if "error" in r:
                table.add_row(escape(r["path"]), f"[red]error: {escape(r['error'])}[/]", "", "")
            else:
                top = ", ".join(f"{label} {p:.3f}" for label, p in r["topk"])
                table.add_row(escape(r["path"]), escape(r["label"]), f"{r['prob']:.3f}", escape(top))
        console.print(table)
        views = next((r["tta_views"] for r in records if "tta_views" in r), None)
        if views:
            console.print(f"probabilities: the mean over {views} test-time augmentation views (--tta)",
                          highlight=False)
    if any("error" in r for r in records):
        raise typer.Exit(1)

