"""`fastinat reproduce` (`make reproduce`): run the presets and write the accuracy table.

    fastinat reproduce --data data/inaturalist_12K       # every preset, on a GPU
    fastinat reproduce --quick                           # the same pipeline on the demo digits

Each preset (`recipes/presets/`) trains through the one training path (`fastinat.train`)
into `runs/reproduce/<preset>-<timestamp>/`, exactly as `fastinat <command> --config
<preset>` would. Then `results/accuracy.md` (a Markdown table) and `results/accuracy.json`
(the same rows) get one row per preset: architecture, input size, epochs, valid accuracy,
TEST accuracy, TEST accuracy with test-time augmentation, the weights kept (raw or their
moving average), device, minutes, seed and library versions. A preset that fails gets a
row saying why, and the others still run.

`quick` runs the same presets with small settings (32-64 px, 1-3 epochs, random weights:
nothing is downloaded) on a small copy of the data (`QUICK_IMAGES` per class of the demo
digits, or of --data), so the whole pipeline is exercised on a CPU in minutes; its table says
so, and its numbers are not nature_12K accuracy.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from rich.console import Console

from .config import ReproduceOptions
from .errors import FastinatError, UsageError
from .io import atomic_write, write_json
from .options import load_yaml, resolve
from .paths import DEFAULT_DATA, DEFAULT_DEMO
from .presets import find_config, preset_command

#: --quick's image size per command: a backbone takes 32 px (ConvNeXt downsamples 32x); a
#: progressive Part A schedule, scaled down to end at 64 px, still starts above its 32 px minimum.
QUICK_SIZE = {"scratch": 64, "finetune": 32}


def quick_overrides(preset: str) -> dict:
    """The small settings `--quick` puts over a preset: small images, 1 epoch per phase, no download."""
    saved = load_yaml(find_config(preset))
    command = saved["command"]
    size = QUICK_SIZE[command]
    overrides: dict = {"size": size, "epochs": 1, "bs": 32, "wandb": False}
    if saved.get("progressive"):  # the same schedule, scaled to end at `size`
        sizes = [int(s) for s in saved["progressive"]]
        overrides["progressive"] = [max(8, round(s * size / sizes[-1])) for s in sizes]
        overrides["epochs"] = len(sizes)
    if command == "finetune":
        overrides.update(pretrained=False, freeze_epochs=1)
    return overrides


def _train(preset: str, data: str, runs: str, overrides: dict, console: Console) -> Path:
    from .train import train_finetune, train_scratch

    run = {"scratch": train_scratch, "finetune": train_finetune}[preset_command(preset)]
    name = f"{preset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return run(config_file=find_config(preset), data=data, out=runs, name=name, console=console,
               **overrides)


def _row(preset: str, run_dir: Path, minutes: float) -> dict:
    from .html_report.inputs import load_run

    run = load_run(run_dir)
    cfg, metrics = run.config, run.metrics
    arch = cfg.get("arch") or "cnn " + "-".join(map(str, run.card["model"]["filters"]))
    return {
        "preset": preset, "command": run.command, "arch": arch, "size": cfg["size"],
        "epochs": metrics["epochs_trained"], "valid_accuracy": metrics["valid_accuracy"],
        "test_accuracy": metrics["test_accuracy"], "test_accuracy_tta": metrics.get("test_accuracy_tta"),
        "weights": metrics.get("weights", "raw"), "device": run.meta["device"],
        "precision": run.meta["precision"], "minutes": round(minutes, 1), "seed": cfg["seed"],
        "versions": run.meta["versions"], "run": str(run_dir), "error": None,
    }


#: --quick trains on this many images per class of train/ and tests on this many of val/.
QUICK_IMAGES = {"train": 20, "val": 5}


def _data(opts: ReproduceOptions, console: Console) -> str:
    """The dataset: --data, else nature_12K; with --quick a small copy (`quick_copy`)."""
    if not opts.quick:
        data = Path(opts.data) if opts.data is not None else DEFAULT_DATA
        if opts.data is None and not data.is_dir():
            raise UsageError(f"No nature_12K in {DEFAULT_DATA}: get it with `fastinat data download`, "
                             "or pass --data (make reproduce DATA=...), or try --quick.")
        return str(data)
    source = opts.data
    if source is None:
        from .data.demo import write_demo

        source, _, written = write_demo(DEFAULT_DEMO)
        if written:
            console.print(f"Wrote the demo digits to {source}.", highlight=False)
    return str(quick_copy(Path(source), Path(opts.runs) / "quick-data"))


def quick_copy(source: Path, dest: Path) -> Path:
    """`QUICK_IMAGES` per class of `source`'s train/ and val/ (the first, by path), copied to
    `dest` (remade each time; `source` is only read)."""
    from .data.demo import copy_subset

    if not (source / "train").is_dir() or not (source / "val").is_dir():
        raise UsageError(f"{source} holds no train/ and val/ class folders.")
    return copy_subset(source, dest, lambda split, images: images[:QUICK_IMAGES[split]])


def reproduce(console: Console | None = None, **options) -> tuple[Path, list[dict]]:
    """Run the presets (options: `ReproduceOptions` fields) and write OUT/accuracy.md and
    OUT/accuracy.json; returns (accuracy.md, rows). A preset that fails is a row with its
    `error`; Ctrl-C stops everything (the finished rows are written first)."""
    opts = resolve(ReproduceOptions, overrides=options)
    console = console or Console(soft_wrap=True)
    data, rows = _data(opts, console), []
    source = opts.data or (str(DEFAULT_DEMO) if opts.quick else data)
    out = Path(opts.out)
    try:
        for preset in opts.presets:
            console.rule(f"[bold]{preset}[/]" + (" (quick)" if opts.quick else ""))
            start = time.perf_counter()
            try:
                run_dir = _train(preset, data, opts.runs, quick_overrides(preset) if opts.quick else {},
                                 console)
            except FastinatError as e:
                if e.exit_code == 130:
                    raise
                console.print(f"[red]{preset} failed:[/] {e}", highlight=False)
                rows.append({"preset": preset, "error": str(e)})
                continue
            rows.append(_row(preset, run_dir, (time.perf_counter() - start) / 60))
    finally:
        if rows:
            write_results(out, rows, data=source, quick=opts.quick)
    return out / "accuracy.md", rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def write_results(out: Path, rows: list[dict], *, data: str, quick: bool) -> None:
    """OUT/accuracy.md (the table) and OUT/accuracy.json (its rows), written atomically."""
    when = datetime.now().isoformat(timespec="seconds")
    write_json(out / "accuracy.json", {"created": when, "data": data, "quick": quick, "rows": rows})
    lines = [f"# fastinat accuracy table ({when})", "",
             f"Data: `{data}`. TEST is val/, never used for training or model selection; valid is "
             "the seeded stratified split of train/."]
    if quick:
        lines += ["", "**Quick run** (`--quick`): the presets with small settings (32-64 px, 1-3 epochs, "
                  f"random weights, the first {QUICK_IMAGES['train']} train/ and {QUICK_IMAGES['val']} val/ "
                  "images of each class). It checks the pipeline; these are not nature_12K accuracies."]
    lines += ["", "| preset | architecture | size | epochs | valid acc | TEST acc | TEST acc (TTA) | "
              "weights | device | minutes | seed |", "|" + "---|" * 11]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['preset']} | failed: {r['error']} |" + " |" * 9)
            continue
        lines.append(f"| {r['preset']} | {r['arch']} | {r['size']} | {r['epochs']} | "
                     f"{_pct(r['valid_accuracy'])} | {_pct(r['test_accuracy'])} | "
                     f"{_pct(r['test_accuracy_tta'])} | {r['weights']} | {r['device']}, {r['precision']} | "
                     f"{r['minutes']} | {r['seed']} |")
    versions = next((r["versions"] for r in rows if not r.get("error")), {})
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    lines += ["", "Runs: " + ", ".join(f"`{r['run']}`" for r in rows if r.get("run")) + "."]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "accuracy.md", lambda tmp: Path(tmp).write_text(text))
