"""Where the training loaders of `benchmarks.bench_loader` spend their time, per image.

    .venv/bin/python -m benchmarks.profile_loader                 # same data as the benchmark
    .venv/bin/python -m benchmarks.profile_loader --images 2000 --sample 300

1. Stage costs: every step of the torchvision baseline and of fastinat's training pipeline
   (`open_rgb`, `InatAugment`, the collate and batch transforms), timed one after the other
   in this process (torch on 1 thread, like a loader worker) over `--sample` of the synthetic
   images, best of 3. `InatAugment` is also timed with rotation / lighting turned off or
   always on, which isolates what each costs.
2. How often JPEG draft decoding actually shrinks the image for `--size`.
3. CPU time per image inside the real loaders (main process vs worker processes, from
   `os.times()` and psutil) over one pass each: with every core busy, images/second = cores / CPU per image,
   so this is the number to bring down.

Uses the benchmark's synthetic dataset and caches (benchmarks/.cache/), made if missing.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def best_ms(fn, items, reps: int = 3) -> float:
    """Best-of-`reps` milliseconds per item of `fn` over `items` (same random seed each time)."""
    best = float("inf")
    for r in range(reps):
        random.seed(r)
        start = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, (time.perf_counter() - start) / len(items) * 1000)
    return best


def stage_costs(root: Path, size: int, bs: int, sample: int) -> list[tuple[str, float, str]]:
    import cv2
    import numpy as np
    import torch
    from fastai.vision.all import PILImage
    from PIL import Image
    from torchvision import transforms

    import fastinat
    from fastinat.data.augment import InatAugment, _lighting
    from fastinat.data.images import open_rgb

    files = sorted((root / "train").rglob("*.jpg"))
    random.Random(1).shuffle(files)
    files = files[:sample]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in a loader worker
    rows: list[tuple[str, float, str]] = []

    def add(label, ms, note=""):
        rows.append((label, ms, note))

    # torchvision baseline
    full = [Image.open(f).convert("RGB") for f in files]
    add("baseline: Image.open(f).convert('RGB')",
        best_ms(lambda f: Image.open(f).convert("RGB"), files), "full-size decode")
    rrc = transforms.RandomResizedCrop(size)
    add("baseline: RandomResizedCrop", best_ms(rrc, full))
    crops = [rrc(im) for im in full]
    add("baseline: RandomHorizontalFlip", best_ms(transforms.RandomHorizontalFlip(), crops))
    add("baseline: ToTensor (float32)", best_ms(transforms.ToTensor(), crops))
    # fastinat
    add("fastinat: open_rgb(f, min_side=size)",
        best_ms(lambda f: open_rgb(f, min_side=size), files), "draft decode")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dls = fastinat.inat_dataloaders(root, size=size, bs=bs, workers=0, progress=False,
                                        presize=True, device="cpu")
    copies = [Path(dls.inat.redirect[str(f)]) for f in files]
    for f in copies:
        f.read_bytes()
    add("fastinat: open_rgb(presized copy, min_side=size)",
        best_ms(lambda f: open_rgb(f, min_side=size), copies), "presize=True")
    decoded = [PILImage(open_rgb(f, min_side=size)) for f in files]

    errors: Counter = Counter()

    def aug_ms(**kw):
        aug = InatAugment(size, **kw)

        def call(im):
            try:
                aug(im, split_idx=0)
            except ValueError as e:  # counted and reported, so one bad draw does not stop us
                errors[str(e)] += 1

        return best_ms(call, decoded)

    total = aug_ms()
    plain = aug_ms(max_rotate=0.0, max_lighting=0.0)
    rotate = aug_ms(p_rotate=1.0, max_lighting=0.0)
    light = aug_ms(max_rotate=0.0, p_lighting=1.0)
    add("fastinat: InatAugment train, defaults", total, "p_rotate 0.75, p_lighting 0.75")
    add("  crop + resize + flip only", plain, "max_rotate=0, max_lighting=0")
    add("  + rotation, per rotated image", rotate - plain, "p_rotate=1 minus the line above")
    add("  + lighting, per lit image", light - plain, "p_lighting=1 minus crop/resize/flip")
    small = [np.asarray(im.resize((size, size))) for im in decoded]
    add("  _lighting alone", best_ms(lambda im: _lighting(im, 1.1, 0.9), small))
    if errors:
        add("  InatAugment train raised", float("nan"), "; ".join(
            f"{n}x {msg}" for msg, n in errors.items()) + f" (of {12 * len(decoded)} calls)")
    valid = InatAugment(size)
    add("fastinat: InatAugment valid (resize + centre crop)",
        best_ms(lambda im: valid(im, split_idx=1), decoded))
    dl = dls.train
    dl.before_iter()  # gives the item transforms the train split_idx, as iterating does
    add("fastinat: dl.do_item (open + augment -> uint8 tensor)",
        best_ms(dl.do_item, range(min(sample, len(dl.dataset)))), "presize copies, through fastai")
    items = [dl.do_item(i) for i in range(bs)]
    add("fastinat: dl.create_batch, per image", best_ms(lambda _: dl.create_batch(items), [0]) / bs,
        "collate in the worker")
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv2_threads)
    x = dl.create_batch(items)[0]
    for f in dl.after_batch.fs:
        x_in = x
        add(f"fastinat: after_batch {type(f).__name__}, per image",
            best_ms(lambda _, f=f, x_in=x_in: f(x_in), [0], reps=5) / bs,
            f"main process, {threads} torch threads")
        x = f(x_in)
    return rows


def draft_scales(root: Path, size: int) -> Counter:
    from PIL import Image

    scales: Counter = Counter()
    for f in (root / "train").rglob("*.jpg"):
        with Image.open(f) as im:
            w = im.size[0]
            im.draft(None, (size, size))
            scales[round(w / im.size[0])] += 1
    return scales


def loader_cpu(root: Path, size: int, bs: int, workers: int) -> list[tuple[str, ...]]:
    from . import error_text
    from .bench_loader import baseline_loader, cpu_seconds, fastai_default_loader, fastinat_loader

    makers = {
        "loader_baseline": lambda: baseline_loader(root, size, bs, workers),
        "loader": lambda: fastinat_loader(root, size, bs, workers),
        "loader_presize": lambda: fastinat_loader(root, size, bs, workers, True),
        "fastai_default": lambda: fastai_default_loader(root, size, bs, workers),
    }
    out = []
    for name, make in makers.items():
        try:
            dl = make()
            for i, _ in enumerate(dl):  # warm-up
                if i:
                    break
            t0, c0, start, n = os.times(), cpu_seconds(), time.perf_counter(), 0
            for xb, _ in dl:
                n += len(xb)
            wall = time.perf_counter() - start
            t1, c1 = os.times(), cpu_seconds()  # workers: live (psutil) or joined (children_*)
        except Exception as e:
            out.append((name, "-", "-", "-", "-", "-", error_text(e)))
            continue
        main = (t1.user - t0.user + t1.system - t0.system) / n * 1000
        kids = (sum(c1.values()) - sum(c0.values())) / n * 1000 - main
        out.append((name, f"{n / wall:.0f}", f"{main:.2f}", f"{kids:.2f}", f"{main + kids:.2f}",
                    f"{(main + kids) * n / 1000 / wall:.2f}", ""))
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ["FASTINAT_CACHE"] = str(HERE / ".cache" / "fastinat")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from rich.console import Console
    from rich.table import Table

    from .synthetic import synthetic_dataset, warm_page_cache

    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_loader",
                                description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000,
                   help="synthetic train/ images (default 2000)")
    p.add_argument("--sample", type=int, default=300, help="images timed per stage (default 300)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    opts = p.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True)
    root = synthetic_dataset(opts.images, seed=opts.seed, log=err.print)
    warm_page_cache(root)

    table = Table(title=f"Stage costs, 1 process (size {opts.size}, {opts.sample} images)",
                  title_justify="left")
    table.add_column("stage")
    table.add_column("ms/image", justify="right")
    table.add_column("note")
    for label, ms, note in stage_costs(root, opts.size, opts.bs, opts.sample):
        table.add_row(label, "-" if ms != ms else f"{ms:.2f}", note)
    console.print(table)

    scales = draft_scales(root, opts.size)
    total = sum(scales.values())
    shares = ", ".join(f"1/{s}: {n / total:.0%}" for s, n in sorted(scales.items()))
    console.print(f"JPEG draft scale for min_side={opts.size} over {total} train images: {shares} "
                  "(1/1 = full-size decode)")

    table = Table(title=f"CPU per image in the loaders ({opts.workers} workers, bs {opts.bs}, "
                        f"{os.cpu_count()} cores)", title_justify="left")
    for col in ("loader", "img/s", "main ms", "workers ms", "total ms", "cores busy", "error"):
        table.add_column(col, justify="left" if col in ("loader", "error") else "right")
    for r in loader_cpu(root, opts.size, opts.bs, opts.workers):
        table.add_row(*r)
    console.print(table)


if __name__ == "__main__":
    main()
