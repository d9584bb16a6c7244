"""The evaluation report of a run: numbers (scikit-learn) and pictures (matplotlib).

    fastinat evaluate runs/<run>                 # TEST set (val/), into runs/<run>/report/
    fastinat evaluate runs/<run> --split valid   # the run's validation split, into report-valid/
    fastinat evaluate runs/<run> --tta           # + test_accuracy_tta etc. (6 views averaged)

`evaluate(run)` predicts the split with `fastinat.load_model(run)` and the run's evaluation
transform, then `write_report` writes:

    per_class.csv         class, precision, recall, f1, support
    metrics.json          loss, accuracy, macro and weighted precision/recall/F1, per class
                          (with --tta also <split>_accuracy_tta, _loss_tta, _f1_tta, tta_views)
    confusion_matrix.png  counts and row-normalised (rows: true class)
    curves.png            train/valid loss and valid accuracy per epoch (history.csv)
    predictions_grid.png  three images per class: true, predicted, confidence; mistakes in red
    top_losses.png        the images the model got most confidently wrong

Training ends by writing the same report for the TEST set from its own predictions (and,
with --tta, the TTA numbers of the valid and TEST sets: `tta_evaluate`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .errors import FastinatError, UsageError
from .io import atomic_folder, atomic_write, write_csv, write_json
from .run_folder import HISTORY, SPLIT, resolve_latest, run_data

REPORT_FILES = ("per_class.csv", "metrics.json", "confusion_matrix.png", "curves.png",
                "predictions_grid.png", "top_losses.png")


# -- numbers ----------------------------------------------------------------------------------

def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict:
    """Loss, accuracy, macro/weighted P/R/F1, per-class P/R/F1/support and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    probs, targets = probs.float(), targets.long()
    y_true, y_pred = targets.numpy(), probs.argmax(1).numpy()
    labels = list(range(len(classes)))
    picked = probs[torch.arange(len(targets)), targets].clamp_min(1e-12)
    out = {"n": int(len(targets)), "loss": float(-picked.log().mean()) if len(targets) else math.nan,
           "accuracy": float((y_true == y_pred).mean()) if len(targets) else math.nan}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg,
                                                     zero_division=0)
        out.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = [{"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                         "support": int(s[i])} for i, c in enumerate(classes)]
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def print_report(metrics: dict, title: str, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=title, title_justify="left")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for r in metrics["per_class"]:
        table.add_row(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                      str(r["support"]))
    table.add_section()
    for avg in ("macro", "weighted"):
        table.add_row(f"{avg} avg", f"{metrics[f'{avg}_precision']:.3f}", f"{metrics[f'{avg}_recall']:.3f}",
                      f"{metrics[f'{avg}_f1']:.3f}", str(metrics["n"]))
    console.print(table)
    console.print(f"accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
                  f"({metrics['n']} images)", highlight=False)


# -- pictures ---------------------------------------------------------------------------------

def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, dest: Path) -> None:
    """Write `fig` as a PNG atomically and close it."""
    plt = pyplot()
    try:
        atomic_write(dest, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_confusion(cm: list[list[int]], classes: list[str], dest: Path) -> None:
    plt = pyplot()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    side = max(5.0, 0.55 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    for ax, data, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
        ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() or 1)
        ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
        ax.set_xticklabels(classes, rotation=45, ha="right")
        ax.set_yticklabels(classes)
        hi = (data.max() or 1) / 2
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if data[i, j] > hi else "black")
    save_figure(fig, dest)


def plot_curves(history: list[dict], dest: Path) -> None:
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    a.plot(epochs, [r["valid_loss"] for r in history], "o-", label="valid loss")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    a.legend()
    b.plot(epochs, [r.get("valid_accuracy", math.nan) for r in history], "o-", color="tab:green")
    b.set(xlabel="epoch", ylabel="accuracy", title="valid accuracy", ylim=(0, 1))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    save_figure(fig, dest)


def _tile(ax, img, title: str, wrong: bool) -> None:
    ax.imshow(img, interpolation="nearest" if img.size[0] < 96 else "antialiased")
    ax.set_title(title, fontsize=8, color="red" if wrong else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    if wrong:
        for spine in ax.spines.values():
            spine.set(color="red", linewidth=3)


def plot_grid(files, probs: torch.Tensor, targets: torch.Tensor, classes: list[str], image,
              dest: Path, per_class: int = 3) -> None:
    """One row per class: its first `per_class` images, true / predicted label and confidence."""
    plt = pyplot()
    n = len(classes)
    fig, axes = plt.subplots(n, per_class, figsize=(2.3 * per_class, 2.4 * n), squeeze=False)
    conf, pred = probs.max(1)
    for c in range(n):
        idx = (targets == c).nonzero().flatten().tolist()[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            if j >= len(idx):
                ax.axis("off")
                continue
            i = idx[j]
            wrong = int(pred[i]) != c
            _tile(ax, image(files[i]), f"true: {classes[c]}\npred: {classes[int(pred[i])]} "
                  f"({float(conf[i]):.2f}){'  WRONG' if wrong else ''}", wrong)
    fig.suptitle("predictions (mistakes in red)", y=1.0)
    fig.tight_layout()
    save_figure(fig, dest)


def plot_top_losses(files, probs: torch.Tensor, targets: torch.Tensor, classes: list[str], image,
                    dest: Path, k: int = 12) -> None:
    plt = pyplot()
    losses = -probs[torch.arange(len(targets)), targets].clamp_min(1e-12).log()
    order = losses.argsort(descending=True)[:k].tolist()
    cols = 4
    rows = max(1, math.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order, strict=False):
        ax.axis("on")
        p = int(probs[i].argmax())
        _tile(ax, image(files[i]), f"true: {classes[int(targets[i])]}\npred: {classes[p]} "
              f"({float(probs[i, p]):.2f})  loss {float(losses[i]):.2f}", p != int(targets[i]))
    fig.suptitle("top losses", y=1.0)
    fig.tight_layout()
    save_figure(fig, dest)


def write_report(out: str | Path, probs: torch.Tensor, targets: torch.Tensor, files: list[Path],
                 classes: list[str], image, *, history: list[dict] | None = None,
                 extra: dict | None = None, parents: bool = True) -> dict:
    """Write the report files into `out` and return its metrics.

    `image(path)` gives the picture to draw for a file (the model's input view). The files are
    written into a temporary folder that replaces `out` once all are there: a full disk or
    Ctrl-C leaves the previous report (or none), never part of one. With `parents=False` the
    folder that holds `out` must exist.
    """
    metrics = classification_metrics(probs, targets, classes)
    metrics.update(extra or {})
    with atomic_folder(out, parents=parents) as tmp:
        write_csv(tmp / "per_class.csv", metrics["per_class"], ["class", "precision", "recall", "f1", "support"])
        write_json(tmp / "metrics.json", metrics)
        plot_confusion(metrics["confusion_matrix"], classes, tmp / "confusion_matrix.png")
        if history:
            plot_curves(history, tmp / "curves.png")
        if len(files):
            plot_grid(files, probs, targets, classes, image, tmp / "predictions_grid.png")
            plot_top_losses(files, probs, targets, classes, image, tmp / "top_losses.png")
    return metrics


# -- test-time augmentation --------------------------------------------------------------------

def tta_numbers(views: torch.Tensor, targets: torch.Tensor, classes: list[str], split: str) -> dict:
    """`{split}_accuracy_tta`, `_loss_tta`, `_f1_tta` (macro) and `tta_views` from per-view
    probabilities (images, views, classes): the mean over the views is the TTA prediction."""
    m = classification_metrics(views.float().mean(1), targets, classes)
    return {f"{split}_accuracy_tta": m["accuracy"], f"{split}_loss_tta": m["loss"],
            f"{split}_f1_tta": m["macro_f1"], "tta_views": int(views.shape[1])}


def tta_evaluate(model, root: Path, files: list[Path], split: str, bs: int, progress: bool = True) -> dict:
    """`tta_numbers` of a `load_model` model on files of the dataset `root` (label: the class
    folder, `class_of`)."""
    from .data.check import class_of
    from .inference import predict_batches

    classes = model.fastinat_card["classes"]
    index = {c: i for i, c in enumerate(classes)}
    views = torch.stack([p for _, p, _ in predict_batches(model, files, bs, progress, tta=True)])
    return tta_numbers(views, torch.tensor([index[class_of(f, root)] for f in files]), classes, split)


def print_tta(metrics: dict, split: str, console: Console | None = None) -> None:
    """The TTA line under a report: accuracy, loss and macro F1 of the averaged views."""
    if f"{split}_accuracy_tta" in metrics:
        (console or Console()).print(
            f"with TTA ({metrics['tta_views']} views): accuracy {metrics[f'{split}_accuracy_tta']:.4f}  "
            f"loss {metrics[f'{split}_loss_tta']:.4f}  macro F1 {metrics[f'{split}_f1_tta']:.4f}", highlight=False)


# -- evaluate a run folder ------------------------------------------------------------------------

def split_files(run: Path, card: dict, data: str | Path | None, split: str) -> tuple[Path, list[Path], dict]:
    """(dataset root, files of `split`, {left-out file: reason}) for a run: TEST = val/, valid =
    the run's saved split."""
    from .data.loaders import usable_files
    from .data.split import load_split

    if data is None:
        data = run_data(run)
        if data is None:
            raise UsageError(f"{run} does not say which dataset it used; pass --data.")
    classes, usable, skipped = usable_files(data, progress=False)
    if classes != card["classes"]:
        missing = sorted(set(card["classes"]) - set(classes))
        extra = sorted(set(classes) - set(card["classes"]))
        what = "; ".join(x for x in (f"the model's {', '.join(missing)} not in the data" if missing else "",
                                     f"the data's {', '.join(extra)} unknown to the model" if extra else "")
                         if x) or "the same names in another order"
        raise UsageError(f"The classes of {data} differ from the model's: {what}.")
    root = Path(data)
    if split == "test":
        return root, [f for c in classes for f in usable["val"][c]], skipped
    if not (run / SPLIT).is_file():
        raise FastinatError(f"{run} has no {SPLIT}, so its validation split is unknown.")
    _, valid = load_split(run / SPLIT, root, usable["train"])
    return root, valid, skipped


def evaluate(run: str | Path, *, console: Console | None = None, progress: bool = True, **options) -> dict:
    """Evaluate a run's best model on the TEST set (or `split="valid"`) and write its report.

    `options`: `fastinat.config.EvaluateOptions` fields (data, split, bs, tta). Writes RUN/report/
    (TEST) or RUN/report-valid/, prints the per-class table, returns the metrics. With
    `tta=True` the metrics also have `{split}_accuracy_tta`, `{split}_loss_tta`,
    `{split}_f1_tta` and `tta_views` (`tta_numbers`); the report itself stays that of the plain
    evaluation view, which is the first TTA view (one pass makes both).
    """
    from .callbacks.history import read_history
    from .config import EvaluateOptions
    from .data.check import class_of
    from .data.loaders import SKIPPED_LIST, print_notices, skipped_line, write_skipped
    from .inference import EvalTransform, load_model, predict_batches
    from .options import resolve

    opts = resolve(EvaluateOptions, overrides=options)
    data, split, bs = opts.data, opts.split, opts.bs
    run = resolve_latest(run)  # runs/latest: the run it points to, by name
    model = load_model(run)
    card = model.fastinat_card
    root, files, skipped = split_files(run, card, data, split)
    if not files:
        raise FastinatError(f"{root}: the {split} split has no readable image.")
    index = {c: i for i, c in enumerate(card["classes"])}
    probs = torch.stack([p for _, p, _ in predict_batches(model, files, bs, progress, tta=opts.tta)])
    targets = torch.tensor([index[class_of(f, root)] for f in files])
    extra = {"split": split, "data": str(root.resolve()), "run": str(run)}
    if opts.tta:  # (images, views, classes); view 0 is the plain evaluation view
        extra.update(tta_numbers(probs, targets, card["classes"], split))
        probs = probs[:, 0]
    out = run / ("report" if split == "test" else "report-valid")
    transform = EvalTransform(card)
    metrics = write_report(out, probs, targets, files, card["classes"], transform.image,
                           history=read_history(run / HISTORY), extra=extra,
                           parents=False)  # a run folder that vanished meanwhile is not made again
    print_report(metrics, f"{run} - {'TEST (val/)' if split == 'test' else 'valid'}", console)
    listing = write_skipped(skipped, out / SKIPPED_LIST)
    print_notices([line for line in (skipped_line(skipped, root, listing),) if line], console)
    print_tta(metrics, split, console)
    (console or Console()).print(f"report: {out}", highlight=False)
    return metrics
