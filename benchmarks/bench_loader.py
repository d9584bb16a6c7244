"""Training data-loader throughput (images/second) on synthetic iNat-shaped JPEGs.

Rows (all with the same worker processes, batch size and image size; ratio = row / baseline):

* `loader_baseline`: torchvision `ImageFolder(train/)` + RandomResizedCrop, RandomHorizontalFlip,
  ToTensor in a plain `torch.utils.data.DataLoader(shuffle=True)`;
* `loader`: `fastinat.inat_dataloaders(..., augment=True)`, its `dls.train` (goal >= 1.5x);
* `loader_presize`: the same with `presize=True`; the presize cache is built when the
  DataLoaders are made, before the timer starts (goal >= 3x);
* `loader_strong`: `loader` with `augment_policy="strong"` (RandAugment-style ops + random
  erasing); its baseline is the `loader` row of the same run, so its ratio is strong /
  standard images per second (informational);
* `fastai_default`: fastai's usual recipe, `DataBlock(ImageBlock, CategoryBlock)` with
  `item_tfms=Resize(size)` and `batch_tfms=aug_transforms()` on the CPU (informational).

Every timed pass runs in its own fresh Python process (`benchmarks._worker.isolated`: a new
interpreter, nothing forked from this one), so nothing process-global that one row sets (glibc
malloc settings, torch threads, cached memory) reaches another. The fastinat rows (`loader`,
`loader_presize`) call `fastinat.perf.tune_malloc()` before they build their loader, as
`fastinat.train.train` does, because that is how `fastinat scratch` loads its data (the loader
workers, forked later, inherit the setting). `loader_baseline` and `fastai_default` are what a
plain user script runs, so they never call it (their processes also get
FASTINAT_NO_MALLOC_TUNING=1, so no fastinat code could turn it on there).

Each process builds its loader, runs a short warm-up pass of `--warmup` batches, then times one
full pass (new iterator, worker start-up included, to the last batch); starting the process
and importing torch/fastai (~3-8 s) is never timed. With `--repeat N` the rows take turns for N
rounds, a new process per pass, and each row keeps its fastest pass (load from other programs
on the machine only ever slows a pass). The log also gives each row's CPU time per image (the
process + its loader workers), which that load hardly changes; when the loader keeps every
core busy, img/s = cores / CPU time per image.

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

from . import failed, register, row
from ._worker import UNTUNED_ENV, isolated
from .synthetic import synthetic_dataset, warm_page_cache

UNIT = "img/s"


def time_pass(loader, size: int, bs: int, warmup: int) -> tuple[int, float, float, float]:
    """(images, seconds, seconds to the first batch, CPU seconds) of one pass, after a warm-up.

    The warm-up pass stops after `warmup` batches; its first batch must hold `bs` images of
    shape (3, size, size). The timed pass starts a new iterator, so it includes starting the
    worker processes, as every epoch does. CPU seconds are this process's plus its
    workers' (see `cpu_seconds`): unlike seconds, they barely change when other programs
    load the machine.
    """
    expected = (bs, 3, size, size)
    for i, (xb, _) in enumerate(loader):
        if i == 0 and tuple(xb.shape) != expected:
            raise AssertionError(f"batch shape {tuple(xb.shape)}, expected {expected}")
        if i + 1 >= warmup:
            break
    images, first = 0, 0.0
    cpu0 = cpu_seconds()
    start = time.perf_counter()
    for xb, _ in loader:
        if not images:
            first = time.perf_counter() - start
        images += len(xb)
    seconds = time.perf_counter() - start
    cpu1 = cpu_seconds()
    if images == 0:
        raise AssertionError("the loader produced no batch")
    cpu = sum(cpu1.values()) - sum(cpu0.values())  # a worker that ended moved into cpu1['self']
    return images, seconds, first, cpu


def cpu_seconds() -> dict:
    """CPU seconds so far of this process, its finished children and each live descendant.

    Live descendants are counted through psutil: fastinat's loader workers outlive a pass
    (they persist across epochs), so `os.times()`'s finished-children total misses them.
    """
    import psutil

    t = os.times()
    out = {"self": t[0] + t[1] + t[2] + t[3]}
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
            out[child.pid] = c.user + c.system
        except psutil.Error:  # exited meanwhile: os.times() counts it once it is joined
            pass
    return out


def baseline_loader(root: Path, size: int, bs: int, workers: int):
    import torch
    from torchvision import datasets, transforms

    tfm = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root / "train"), transform=tfm)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers)


def fastinat_loader(root: Path, size: int, bs: int, workers: int, presize: bool = False,
                    tune_malloc: bool = False, return_tuned: bool = False, policy: str = "standard"):
    """fastinat's train loader; with `tune_malloc`, `fastinat.perf.tune_malloc()` runs first, as
    in `fastinat.train.train` (with `return_tuned`: (loader, whether the tuning applied))."""
    import fastinat

    tuned = fastinat.tune_process() if tune_malloc else False
    dls = fastinat.inat_dataloaders(root, size=size, bs=bs, workers=workers, augment=True,
                                    augment_policy=policy, progress=False, valid_pct=0.2,
                                    presize=presize, device="cpu")
    return (dls.train, tuned) if return_tuned else dls.train


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


#: Rows and how each builds its loader: (maker, presize, calls fastinat.perf.tune_malloc(),
#: augmentation policy).
ROWS = {
    "loader_baseline": ("baseline", False, False, None),
    "loader": ("fastinat", False, True, "standard"),
    "loader_presize": ("fastinat", True, True, "standard"),
    "loader_strong": ("fastinat", False, True, "strong"),
    "fastai_default": ("fastai", False, False, None),
}
#: Rows measured against another row of the same run instead of `loader_baseline`.
AGAINST = {"loader_strong": "loader"}


def loader_pass(name: str, root: str, size: int, bs: int, workers: int, warmup: int) -> dict:
    """Worker side (a fresh process, see `benchmarks._worker`): one timed pass of row `name`.

    The fastinat rows call `fastinat.perf.tune_malloc()` before they build their loader, as
    `fastinat.train.train` does (the loader workers, forked later, inherit it); the others
    never do. Returns images, seconds, first (s to the first batch), cpu (s, this process and
    its joined workers), setup (s to build the loader) and whether malloc tuning applied.
    """
    maker, presize, tune, policy = ROWS[name]
    if maker == "baseline":
        import torchvision  # noqa: F401  (libraries are imported before the clock starts)
    else:
        import fastai.vision.all  # noqa: F401
    tuned = False
    start = time.perf_counter()
    if maker == "baseline":
        loader = baseline_loader(Path(root), size, bs, workers)
    elif maker == "fastinat":
        loader, tuned = fastinat_loader(Path(root), size, bs, workers, presize,
                                        tune_malloc=tune, return_tuned=True, policy=policy)
    else:
        loader = fastai_default_loader(Path(root), size, bs, workers)
    setup = time.perf_counter() - start
    images, seconds, first, cpu = time_pass(loader, size, bs, warmup)
    return {"images": images, "seconds": seconds, "first": first, "cpu": cpu, "setup": setup,
            "tuned": tuned}


@register("loader", goals={"loader_baseline": None, "loader": 1.5, "loader_presize": 3.0,
                           "loader_strong": None, "fastai_default": None})
def bench_loader(opts) -> dict:
    """Train data-loader images/second: torchvision, fastinat (standard, presize, strong), fastai."""
    log = opts.log
    root = synthetic_dataset(opts.images, seed=opts.seed, log=log)
    warm_page_cache(root)
    args = {"root": str(root), "size": opts.size, "bs": opts.bs, "workers": opts.workers,
            "warmup": opts.warmup}
    # Round-robin passes, so a change in the machine's load touches every row alike; each
    # pass is a new process (nothing one row sets in its process reaches another row).
    runs: dict[str, list] = {name: [] for name in ROWS}
    errors: dict[str, str] = {}
    for _ in range(opts.repeat):
        for name in [n for n in ROWS if n not in errors]:
            got = isolated(f"{__name__}:loader_pass", {"name": name, **args},
                           env=None if ROWS[name][2] else UNTUNED_ENV)
            if "error" in got:
                fail(name, got, errors, log)
            else:
                runs[name].append(got)
    speeds = {}
    for name, got in runs.items():
        if name in errors:
            continue
        speeds[name] = max(r["images"] / r["seconds"] for r in got)
        passes = ", ".join(f"{r['images'] / r['seconds']:.0f}" for r in got)
        cpu = min(r["cpu"] / r["images"] for r in got) * 1000
        setup = max(r["setup"] for r in got)
        process = sum(r["process_s"] for r in got) / len(got)
        malloc = "malloc tuned" if all(r["tuned"] for r in got) else "malloc default"
        log(f"  {name}: {got[0]['images']} images/pass; {UNIT} per pass {passes}; CPU {cpu:.2f} "
            f"ms/image; first batch after {min(r['first'] for r in got):.2f} s; {malloc} "
            f"(loader setup up to {setup:.1f} s; {process:.0f} s per process)")
        if ROWS[name][2] and not all(r["tuned"] for r in got):
            log(f"  [yellow]Warning[/]: {name}: fastinat.perf.tune_malloc() did not apply "
                "(not Linux/glibc, or FASTINAT_NO_MALLOC_TUNING is set)")
    if "loader_strong" in speeds and "loader" in speeds:
        log(f"  strong / standard augmentation: {speeds['loader_strong']:.0f} / {speeds['loader']:.0f} "
            f"{UNIT} = {speeds['loader_strong'] / speeds['loader']:.2f}x")
    bases = {name: speeds.get(AGAINST.get(name, "loader_baseline"), math.nan) for name in ROWS}
    return {name: row(speeds[name], UNIT, bases[name]) if name in speeds
            else failed(UNIT, bases[name], errors[name]) for name in ROWS}


def fail(name: str, got: dict, errors: dict, log) -> None:
    """Record a row's error and log the end of its traceback (a worker's, for loader errors)."""
    errors[name] = got["error"]
    log(f"  [bold red]{name} FAILED[/]: {escape(got.get('detail') or got['error'])}")
