"""Training data-loader throughput (images/second) on synthetic iNat-shaped JPEGs.

Rows (all with the same worker processes, batch size and image size; ratio = row / baseline):

* `loader_baseline`: torchvision `ImageFolder(train/)` + RandomResizedCrop, RandomHorizontalFlip,
  ToTensor in a plain `torch.utils.data.DataLoader(shuffle=True)`;
* `loader`: `fastinat.inat_dataloaders(..., augment=True)`, its `dls.train` (goal >= 1.5x);
* `loader_presize`: the same with `presize=True`; the presize cache is built when the
  DataLoaders are made, before the timer starts (goal >= 3x);
* `fastai_default`: fastai's usual recipe, `DataBlock(ImageBlock, CategoryBlock)` with
  `item_tfms=Resize(size)` and `batch_tfms=aug_transforms()` on the CPU (informational).

Each row times one full pass (new iterator, worker start-up included, to the last batch) after
a short warm-up pass of a few batches. With `--repeat N` the rows take turns for N rounds and
each keeps its fastest pass (load from other programs on the machine only ever slows a pass).
The log also gives each row's CPU time per image (main process + workers), which that load
hardly changes; when the loader keeps every core busy, img/s = cores / CPU time per image.

fastinat's and fastai's train loaders hold 80% of train/ (the rest is their validation split)
and drop the last partial batch, while the baseline reads all of train/: the rows compare
images per second, never epoch times. Every fastai loader is kept on the CPU (`device="cpu"`),
like the baseline, so only data loading is measured. A row whose loader raises is reported as
an error (the other rows still run).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from rich.markup import escape

from . import error_text, failed, register, row
from .synthetic import synthetic_dataset, warm_page_cache

UNIT = "img/s"


def time_pass(loader, size: int, bs: int, warmup: int) -> tuple[int, float, float, float]:
    """(images, seconds, seconds to the first batch, CPU seconds) of one pass, after a warm-up.

    The warm-up pass stops after `warmup` batches; its first batch must hold `bs` images of
    shape (3, size, size). The timed pass starts a new iterator, so it includes starting the
    worker processes, as every epoch does. CPU seconds are this process's plus its finished
    children's (the workers, joined at the end of the pass): unlike seconds, they barely
    change when other programs load the machine.
    """
    expected = (bs, 3, size, size)
    for i, (xb, _) in enumerate(loader):
        if i == 0 and tuple(xb.shape) != expected:
            raise AssertionError(f"batch shape {tuple(xb.shape)}, expected {expected}")
        if i + 1 >= warmup:
            break
    images, first = 0, 0.0
    cpu0 = os.times()
    start = time.perf_counter()
    for xb, _ in loader:
        if not images:
            first = time.perf_counter() - start
        images += len(xb)
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    if images == 0:
        raise AssertionError("the loader produced no batch")
    cpu = sum(b - a for a, b in zip(cpu0[:4], cpu1[:4], strict=True))
    return images, seconds, first, cpu


def baseline_loader(root: Path, size: int, bs: int, workers: int):
    import torch
    from torchvision import datasets, transforms

    tfm = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root / "train"), transform=tfm)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers)


def fastinat_loader(root: Path, size: int, bs: int, workers: int, presize: bool = False):
    import fastinat

    dls = fastinat.inat_dataloaders(root, size=size, bs=bs, num_workers=workers, augment=True,
                                    progress=False, valid_pct=0.2, presize=presize, device="cpu")
    return dls.train


def fastai_default_loader(root: Path, size: int, bs: int, workers: int):
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        RandomSplitter,
        Resize,
        aug_transforms,
        get_image_files,
        parent_label,
    )

    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=RandomSplitter(0.2, seed=42), get_y=parent_label,
                      item_tfms=Resize(size), batch_tfms=aug_transforms())
    return block.dataloaders(root / "train", bs=bs, num_workers=workers, device="cpu").train


@register("loader", goals={"loader_baseline": None, "loader": 1.5, "loader_presize": 3.0,
                           "fastai_default": None})
def bench_loader(opts) -> dict:
    """Train data-loader images/second: torchvision baseline, fastinat, presize, fastai default."""
    log = opts.log
    root = synthetic_dataset(opts.images, seed=opts.seed, log=log)
    warm_page_cache(root)
    makers = {
        "loader_baseline": lambda: baseline_loader(root, opts.size, opts.bs, opts.workers),
        "loader": lambda: fastinat_loader(root, opts.size, opts.bs, opts.workers),
        "loader_presize": lambda: fastinat_loader(root, opts.size, opts.bs, opts.workers, True),
        "fastai_default": lambda: fastai_default_loader(root, opts.size, opts.bs, opts.workers),
    }
    loaders, setups, errors = {}, {}, {}
    for name, make in makers.items():
        try:
            start = time.perf_counter()
            loaders[name] = make()
            setups[name] = time.perf_counter() - start
        except Exception as e:  # a broken loader fails its row, not the whole run
            fail(name, e, errors, log)
    # Round-robin passes, so a change in the machine's load touches every row alike.
    runs: dict[str, list] = {name: [] for name in loaders}
    for _ in range(opts.repeat):
        for name in [n for n in loaders if n not in errors]:
            try:
                runs[name].append(time_pass(loaders[name], opts.size, opts.bs, opts.warmup))
            except Exception as e:
                fail(name, e, errors, log)
    loaders.clear()
    speeds = {}
    for name, got in runs.items():
        if name in errors:
            continue
        speeds[name] = max(images / seconds for images, seconds, _, _ in got)
        passes = ", ".join(f"{images / seconds:.0f}" for images, seconds, _, _ in got)
        cpu = min(cpu / images for images, _, _, cpu in got) * 1000
        log(f"  {name}: {got[0][0]} images/pass; {UNIT} per pass {passes}; CPU {cpu:.2f} ms/image "
            f"(first batch after {min(r[2] for r in got):.2f} s; setup {setups[name]:.1f} s)")
    base = speeds.get("loader_baseline", math.nan)
    return {name: row(speeds[name], UNIT, base) if name in speeds
            else failed(UNIT, base, errors[name]) for name in makers}


def fail(name: str, exc: Exception, errors: dict, log) -> None:
    """Record a row's error and log the end of its traceback (a worker's, for loader errors)."""
    errors[name] = error_text(exc)
    tail = "\n".join(str(exc).strip().splitlines()[-6:])
    log(f"  [bold red]{name} FAILED[/]: {escape(tail)}")
