"""The accuracy recipes on a data-poor CPU proxy, and what EMA and MixUp/CutMix cost per epoch.

A proxy, not nature_12K accuracy: the demo digits with `PROXY_SHARE` (10%) of each class of
train/ kept (about 144 images, 80% of them trained on), TEST = the digits' whole val/ (359
images); a small Part A CNN (16, 32, 64 filters, 32 px) trained for `PROXY_EPOCHS` epochs
without augmentation (as the demo: a flipped digit changes meaning), one seed per run,
`SEEDS` seeds. Each recipe alone, and all of them together, against plain
training with the same seeds, split and epochs (drop-path has no place in this CNN: it is
timm's). On digits a mirrored image is another digit, which the flip of TTA and of the
strong policy cannot know: the proxy is data-poor, not nature-like.

Rows `proxy_<recipe>`: the mean TEST accuracy (%) over the seeds against plain training's
(ratio = recipe / plain; informational: a proxy this small is noisy, and the log prints the
whole table with mean +- spread, spread = half the range over the seeds). `proxy_tta` compares
a plain run's TEST accuracy with test-time augmentation to the same run's without.

Rows `cost_ema`, `cost_mixcut`: epochs per minute with `--ema 0.999` or `--mixup 0.2 --cutmix
1` against plain training's (ratio = plain epoch seconds / recipe epoch seconds; goal >= 0.91:
at most 10% slower), the default Part A CNN at `--size` / 4 px (56) on the full digits, the fastest of `--repeat` epochs after the first (worker start-up)
of a 3-epoch run, runs taking turns.

The proxy runs share one fresh process (`benchmarks._worker.isolated`), the cost runs another.
`--quick`: one seed, one epoch, one recipe; the cost runs on the proxy at 32 px.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from . import failed, register, row
from ._worker import HERE, isolated

PROXY_SHARE, PROXY_EPOCHS, SEEDS = 0.1, 20, (0, 1, 2)
PROXY = {"size": 32, "filters": [16, 32, 64], "dense_units": 64, "bs": 16, "lr": 3e-3, "workers": 0,
         "augment": False}  # as the demo trains: a flipped or heavily cropped digit changes meaning
#: recipe name -> the options it adds to plain training
RECIPES = {
    "label_smoothing": {"label_smoothing": 0.1},
    "mixup": {"mixup": 0.2},
    "cutmix": {"cutmix": 1.0},
    "ema": {"ema": 0.99},
    "progressive": {"progressive": [16, 24, 32]},
    "strong_augment": {"augment": True, "augment_policy": "strong"},
}
ALL = "all"


def _digits(share: float) -> tuple[Path, Path]:
    """(the demo digits, a copy with `share` of each class of train/ and all of val/)."""
    from fastinat.data.demo import copy_subset, write_demo

    cache = HERE / ".cache"
    full, _, _ = write_demo(cache / "digits")
    proxy = cache / f"digits-{int(share * 100)}pct"
    if not proxy.exists():
        copy_subset(full, proxy, lambda split, images: images if split == "val"
                    else images[:max(2, round(share * len(images)))])
    return full, proxy


def _train(data: Path, out: Path, name: str, **options) -> dict:
    from rich.console import Console

    from fastinat.callbacks.history import read_history
    from fastinat.io import read_json
    from fastinat.train import train_scratch

    run = train_scratch(data=str(data), out=str(out), name=name, wandb=False,
                        console=Console(quiet=True), **options)
    metrics = read_json(run / "metrics.json")
    metrics["epoch_seconds"] = [r["time"] for r in read_history(run / "history.csv")]
    shutil.rmtree(run)
    return metrics


def proxy_runs(recipes: list[str], seeds: list[int], epochs: int, share: float) -> dict:
    """{recipe: [TEST accuracy per seed]} (plus "plain" and "tta")."""
    _, data = _digits(share)
    out = HERE / ".cache" / "recipe-runs"
    shutil.rmtree(out, ignore_errors=True)
    acc: dict[str, list[float]] = {}
    for seed in seeds:
        base = {**PROXY, "epochs": epochs, "seed": seed}
        for recipe in ["plain", *recipes]:
            extra = {"tta": True} if recipe == "plain" else \
                {k: v for r in RECIPES for k, v in RECIPES[r].items()} if recipe == ALL else RECIPES[recipe]
            # (all: every recipe at once, strong augmentation included)
            m = _train(data, out, f"{recipe}-{seed}", **{**base, **extra})
            acc.setdefault(recipe, []).append(100 * m["test_accuracy"])
            if recipe == "plain" and m.get("test_accuracy_tta") is not None:
                acc.setdefault("tta", []).append(100 * m["test_accuracy_tta"])
    return {"accuracy": acc}


def cost_runs(repeat: int, size: int, quick: bool = False) -> dict:
    """{"plain"|"ema"|"mixcut": fastest epoch seconds after the first}, runs taking turns."""
    full, proxy = _digits(PROXY_SHARE)
    out = HERE / ".cache" / "recipe-runs"
    kinds = {"plain": {}, "ema": {"ema": 0.999}, "mixcut": {"mixup": 0.2, "cutmix": 1.0}}
    best: dict[str, float] = {}
    for r in range(repeat):
        for kind, extra in kinds.items():
            m = _train(proxy if quick else full, out, f"cost-{kind}-{r}", size=size,
                       epochs=2 if quick else 3, workers=0 if quick else 2, **extra)
            best[kind] = min([best.get(kind, float("inf")), *m["epoch_seconds"][1:]])
    return best


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / 2 if len(values) > 1 else 0.0


@register("recipes", goals={"cost_ema": 0.91, "cost_mixcut": 0.91})
def recipes(opts) -> dict:
    """Accuracy recipes on a 10%-of-train digits proxy (3 seeds), and the epoch cost of EMA and MixUp/CutMix."""
    quick = opts.images < 200  # --quick
    names = ["mixup"] if quick else [*RECIPES, ALL]
    got = isolated("benchmarks.bench_recipes:proxy_runs",
                   {"recipes": names, "seeds": list(SEEDS[:1] if quick else SEEDS),
                    "epochs": 1 if quick else PROXY_EPOCHS, "share": PROXY_SHARE}, timeout=3600)
    rows = {}
    if "error" in got:
        rows["proxy_plain"] = failed("%", float("nan"), got["error"])
    else:
        acc = got["accuracy"]
        plain = statistics.mean(acc["plain"])
        opts.log("  proxy TEST accuracy (%), mean +- spread over seeds "
                 f"{', '.join(map(str, SEEDS[:len(acc['plain'])]))}:")
        for name, values in acc.items():
            mean = statistics.mean(values)
            opts.log(f"    {name:<16} {mean:6.2f} +- {_spread(values):5.2f}   "
                     f"({mean - plain:+.2f} vs plain)   runs: {', '.join(f'{v:.1f}' for v in values)}")
            if name != "plain":
                rows[f"proxy_{name}"] = row(mean, "%", plain)
    cost = isolated("benchmarks.bench_recipes:cost_runs",
                    {"repeat": 1 if quick else opts.repeat, "size": 32 if quick else opts.size // 4,
                     "quick": quick}, timeout=3600)
    for kind in ("ema", "mixcut"):
        if "error" in cost:
            rows[f"cost_{kind}"] = failed("s/epoch", float("nan"), cost["error"])
        else:  # epochs per minute, so that the ratio (higher is better) is plain s / recipe s
            rows[f"cost_{kind}"] = row(60 / cost[kind], "epochs/min", 60 / cost["plain"])
            opts.log(f"  epoch seconds: plain {cost['plain']:.2f}, {kind} {cost[kind]:.2f}")
    return rows
