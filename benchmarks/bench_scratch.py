"""Part A training speed (images/second): fastinat's scratch path against a plain PyTorch loop.

Rows (same synthetic JPEGs, worker processes, batch size and image size; ratio = row / baseline):

* `scratch_epoch_baseline`: `build_cnn(10)` in plain NCHW fp32, `torch.optim.Adam(lr=1e-3)`,
  cross-entropy, a torchvision `ImageFolder(train/)` with RandomResizedCrop, RandomHorizontalFlip,
  ToTensor and Normalize (fastinat's dataset statistics) in a `DataLoader(shuffle=True)`;
* `scratch_epoch`: what `fastinat scratch` runs per epoch, set up as `fastinat.train.train`
  does: `fastinat.perf.tune_malloc()` first, then `inat_dataloaders(augment=True)`,
  `scratch_learner(dls)` (the default CNN), fastai's ProgressCallback removed, a silent logger,
  fastai's `ChannelsLast` callback, `fit_one_cycle(1, 1e-3)` (goal >= 1.3x);
* `scratch_peak_rss`: the peak resident memory (MiB, lower is better) of the `scratch_epoch`
  process against the baseline's (informational; malloc tuning trades memory for speed);
* `scratch_step_channels_last`: only forward + backward + Adam step of the same CNN on a random
  in-memory batch, channels_last (value) against NCHW (baseline), both with glibc's default
  malloc settings: the memory format's share, without data loading (informational);
* `malloc_tuning`: the same channels_last step with `tune_malloc()` (value) against without
  (baseline; the very process that gives `scratch_step_channels_last` its value), so the two
  step ratios multiply to the model step's whole speed-up over NCHW (informational).

Every measurement runs in its own fresh Python process (`benchmarks._worker.isolated`: a new
interpreter, nothing forked from this one): `tune_malloc()` is process-global (and inherited by
forked loader workers), so a row that calls it must not share a process with one that doesn't.
Only `scratch_epoch` and the tuned step call it, because `fastinat scratch` does; the baseline
is a plain PyTorch script, which doesn't (its processes, and the untuned steps', also get
FASTINAT_NO_MALLOC_TUNING=1). An untimed process made first reads fastinat's dataset
statistics (the baseline normalises with them), classes and parameter count.

An epoch here is cut to `--scratch-batches` training batches (default 4): the CNN does only
~15-50 img/s on a 2-core CPU at 224 px, so a whole epoch would take minutes. Each epoch row's
process builds its trainer, runs one untimed warm-up pass of one batch (oneDNN kernel set-up,
first allocations, optimizer state), then times one new epoch (new loader iterator, worker
start-up included) from the start of the training phase to the end of the last optimizer step;
validation is skipped (fastinat's pass is stopped with `CancelFitException` after the last
batch). Starting the process and importing torch/fastai (~3-8 s) is never timed. With
`--repeat N` the two epoch rows take turns for N rounds, a new process per pass, and each keeps
its fastest pass. The model-step processes (NCHW, channels_last, channels_last + tuning) take
turns for `STEP_ROUNDS` rounds (at most `--repeat`), each timing `STEPS` steps after a warm-up
step and keeping the fastest. The log gives each row's CPU time per image (the process + its
finished loader workers), the system-time share, torch's thread count and the peak RSS.

Why the tuning: glibc hands every big freed block (activations, > its mmap threshold of at
most 32 MiB) back to the kernel, so each step page-faults it in again; on a 2-core CPU nearly
half of a step's CPU time is then system time. `tune_malloc()` keeps that memory in the
process (peak RSS grows by GBs). Measured here: a forked child (a loader worker, forked at the
start of every epoch) shares that retained heap copy-on-write, so the first steps after each
fork page-fault again, this time copying; the short timed epoch of `scratch_epoch` pays that
in full, while the model-step rows (no fork) don't.
"""

from __future__ import annotations

import gc
import math
import os
import time
from functools import partial
from pathlib import Path

from rich.markup import escape

from . import failed, register, row
from ._worker import UNTUNED_ENV, isolated
from .synthetic import synthetic_dataset, warm_page_cache

UNIT = "img/s"
#: Timed training batches per pass when `opts` has no `scratch_batches`.
BATCHES = 4
#: Untimed warm-up batches (one pass) before the timed passes of each row.
WARMUP = 1
#: Timed random-batch steps per model-step process (after one warm-up step).
STEPS = 2
#: Most rounds of the three model-step processes (fewer when --repeat is smaller).
STEP_ROUNDS = 1


def _cpu_seconds(t0, t1) -> tuple[float, float]:
    """(user + system, system) seconds of this process and its finished children between two
    os.times()."""
    d = [b - a for a, b in zip(t0[:4], t1[:4], strict=True)]
    return sum(d), d[1] + d[3]


def _check_batch(xb, bs: int, size: int, who: str) -> None:
    expected = (bs, 3, size, size)
    if tuple(xb.shape) != expected:
        raise AssertionError(f"{who}: batch shape {tuple(xb.shape)}, expected {expected}")


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# -- fastinat: the Learner that `fastinat scratch` trains ------------------------------------


def fastinat_learner(root: Path, size: int, bs: int, workers: int, tune_malloc: bool = True):
    """The Learner of `fastinat scratch`, set up as `fastinat.train.train` does: first
    `fastinat.perf.tune_malloc()` (unless `tune_malloc=False`), then the loaders, the default CNN
    and `fastinat.train.configure_learner` (ChannelsLast, no fastprogress, memory trimming before
    each worker fork). Returns (learner, whether the malloc tuning applied)."""
    import torch

    import fastinat
    from fastinat.learner import scratch_learner
    from fastinat.train import configure_learner

    tuned = fastinat.tune_process() if tune_malloc else False
    dls = fastinat.inat_dataloaders(root, size=size, bs=bs, workers=workers, augment=True,
                                    progress=False, device="cpu")
    torch.manual_seed(0)
    learn = scratch_learner(dls)
    configure_learner(learn)  # exactly what fastinat.train.train does to its Learner
    return learn, tuned


def _stop_after_cb():
    """A fastai callback class: times the training phase and ends the fit after N batches."""
    from fastai.callback.core import Callback, CancelFitException

    class StopAfter(Callback):
        order = 99  # after Recorder, ParamScheduler, ...

        def __init__(self, batches: int, size: int, bs: int):
            self.batches, self.size, self.bs = batches, size, bs
            self.seconds = math.nan
            self.done = self.images = 0

        def before_train(self):
            self.done = self.images = 0
            self.start = time.perf_counter()

        def before_batch(self):
            if self.training and self.done == 0:
                _check_batch(self.xb[0], self.bs, self.size, "fastinat")

        def after_batch(self):
            if not self.training:
                return
            self.done += 1
            self.images += len(self.yb[0])
            if self.done >= self.batches:
                self.seconds = time.perf_counter() - self.start
                raise CancelFitException()

    return StopAfter


def fastinat_pass(learn, batches: int, size: int, bs: int) -> tuple[int, float, tuple]:
    """(images, seconds, (CPU, system CPU) seconds) of the first `batches` training batches of one epoch."""
    stop = _stop_after_cb()(batches, size, bs)
    cpu0 = os.times()
    learn.fit_one_cycle(1, 1e-3, cbs=[stop])
    gc.collect()  # the epoch's loader iterator (and its workers) must be gone
    cpu1 = os.times()
    if stop.done < batches:
        raise AssertionError(f"fastinat: the epoch ended after {stop.done} of {batches} batches; "
                             "use more --images")
    return stop.images, stop.seconds, _cpu_seconds(cpu0, cpu1)


# -- the baseline: a plain PyTorch loop ------------------------------------------------------


def baseline_loader(root: Path, size: int, bs: int, workers: int, mean, std):
    import torch
    from torchvision import datasets, transforms

    tfm = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor(), transforms.Normalize(mean, std)])
    ds = datasets.ImageFolder(str(root / "train"), transform=tfm)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers)


class PlainLoop:
    """The baseline trainer: NCHW fp32 `build_cnn`, Adam, cross-entropy."""

    def __init__(self, loader, n_classes: int):
        import torch

        from fastinat.models.cnn import build_cnn

        torch.manual_seed(0)
        self.loader = loader
        self.model = build_cnn(n_classes)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss = torch.nn.CrossEntropyLoss()

    def run(self, batches: int, size: int, bs: int) -> tuple[int, float, tuple]:
        """(images, seconds, (CPU, system CPU) seconds) of the first `batches` batches of one epoch."""
        model, opt = self.model, self.opt
        model.train()
        images = done = 0
        cpu0 = os.times()
        start = time.perf_counter()
        it = iter(self.loader)
        for xb, yb in it:
            if done == 0:
                _check_batch(xb, bs, size, "baseline")
            loss = self.loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            images += len(xb)
            done += 1
            if done >= batches:
                break
        seconds = time.perf_counter() - start
        del it  # shuts the workers down, so their CPU time is counted
        gc.collect()
        cpu1 = os.times()
        if done < batches:
            raise AssertionError(f"baseline: the epoch ended after {done} of {batches} batches; "
                                 "use more --images")
        return images, seconds, _cpu_seconds(cpu0, cpu1)


# -- the model alone: channels_last against NCHW, malloc tuning on and off ------------------


def step_pass(fmt: str, tune: bool, n_classes: int, size: int, bs: int, steps: int) -> dict:
    """Worker side: forward + backward + Adam step of `build_cnn(n_classes)` on one random
    in-memory batch, in memory format `fmt` ("nchw" or "channels_last"), after one warm-up
    step; with `tune`, `fastinat.perf.tune_malloc()` runs first. Returns the best step's
    seconds, CPU and system CPU seconds per step over the timed steps, and so on."""
    import resource

    import torch

    from fastinat.models.cnn import build_cnn
    from fastinat.perf import tune_malloc

    tuned = tune_malloc() if tune else False
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(bs, 3, size, size, generator=gen)
    y = torch.randint(0, n_classes, (bs,), generator=gen)
    torch.manual_seed(0)
    model = build_cnn(n_classes)
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    elif fmt != "nchw":
        raise ValueError(f"unknown memory format {fmt!r}")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    best = math.inf
    for i in range(steps + 1):  # step 0 is the warm-up
        if i == 1:
            cpu0 = os.times()
        start = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            best = min(best, time.perf_counter() - start)
    cpu, system = _cpu_seconds(cpu0, os.times())
    return {"seconds": best, "cpu": cpu / steps, "system": system / steps, "tuned": tuned,
            "threads": torch.get_num_threads(),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# -- the worker side of the epoch rows --------------------------------------------------------


def scratch_info(root: str, size: int, bs: int, workers: int) -> dict:
    """Worker side, untimed: fastinat's dataset statistics (the baseline normalises with them),
    classes and train batches, made before the measured processes (it also fills the caches)."""
    learn, _ = fastinat_learner(Path(root), size, bs, workers, tune_malloc=False)
    mean, std = learn.dls.inat.stats
    return {"mean": list(mean), "std": list(std), "n_classes": len(learn.dls.vocab),
            "train_batches": len(learn.dls.train), "params": n_parameters(learn.model)}


def epoch_pass(name: str, root: str, size: int, bs: int, workers: int, batches: int,
               warmup: int, mean: list, std: list, n_classes: int) -> dict:
    """Worker side: one row's set-up, a `warmup`-batch untimed pass, then one timed pass of
    `batches` training batches. `scratch_epoch` calls `fastinat.perf.tune_malloc()` first, as
    `fastinat.train.train` does; `scratch_epoch_baseline` (a plain PyTorch script) does not."""
    import resource

    import torch

    tuned = False
    if name == "scratch_epoch":
        import fastai.vision.all  # noqa: F401  (libraries are imported before the clock starts)

        start = time.perf_counter()
        learn, tuned = fastinat_learner(Path(root), size, bs, workers, tune_malloc=True)
        if len(learn.dls.train) < max(batches, warmup):
            raise AssertionError(f"fastinat's train loader has {len(learn.dls.train)} batches, "
                                 f"fewer than --scratch-batches {batches}; use more --images")
        run, model = partial(fastinat_pass, learn, size=size, bs=bs), learn.model
    elif name == "scratch_epoch_baseline":
        import torchvision  # noqa: F401

        import fastinat.models.cnn  # noqa: F401

        start = time.perf_counter()
        plain = PlainLoop(baseline_loader(Path(root), size, bs, workers, mean, std), n_classes)
        run, model = partial(plain.run, size=size, bs=bs), plain.model
    else:
        raise ValueError(f"unknown row {name!r}")
    setup = time.perf_counter() - start
    run(warmup)
    images, seconds, (cpu, system) = run(batches)
    return {"images": images, "seconds": seconds, "cpu": cpu, "system": system, "setup": setup,
            "tuned": tuned, "params": n_parameters(model), "threads": torch.get_num_threads(),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# -- the benchmark (parent side) --------------------------------------------------------------

#: The epoch rows, in the order they take turns; True: the row calls tune_malloc().
EPOCH_ROWS = {"scratch_epoch_baseline": False, "scratch_epoch": True}
#: The model-step processes: name -> (memory format, tune_malloc()).
STEP_RUNS = {"nchw": ("nchw", False), "channels_last": ("channels_last", False),
             "channels_last+malloc": ("channels_last", True)}


def _run(target: str, kwargs: dict, tune: bool) -> dict:
    return isolated(f"{__name__}:{target}", kwargs, env=None if tune else UNTUNED_ENV)


def _log_fail(log, name: str, got: dict) -> None:
    log(f"  [bold red]{name} FAILED[/]: {escape(got.get('detail') or got['error'])}")


@register("scratch", goals={"scratch_epoch_baseline": None, "scratch_epoch": 1.3,
                            "scratch_peak_rss": None, "scratch_step_channels_last": None,
                            "malloc_tuning": None})
def bench_scratch(opts) -> dict:
    """Part A training img/s (N batches of one epoch): fastinat scratch vs a plain PyTorch loop."""
    log = opts.log
    size, bs, workers = opts.size, opts.bs, opts.workers
    batches = max(1, int(getattr(opts, "scratch_batches", BATCHES)))
    root = synthetic_dataset(opts.images, seed=opts.seed, log=log)
    warm_page_cache(root)
    common = {"root": str(root), "size": size, "bs": bs, "workers": workers}

    info = _run("scratch_info", common, tune=False)
    if "error" in info:
        _log_fail(log, "scratch (set-up)", info)
        raise RuntimeError(info["error"])
    if info["train_batches"] < max(batches, WARMUP):
        raise AssertionError(f"fastinat's train loader has {info['train_batches']} batches, "
                             f"fewer than --scratch-batches {batches}; use more --images")
    n_classes = info["n_classes"]
    log(f"  CNN {info['params']:,} parameters; {batches} timed batches of {bs} x 3 x {size} x "
        f"{size} per pass after a {WARMUP}-batch warm-up pass, each pass in a new process")

    kwargs = {**common, "batches": batches, "warmup": WARMUP, "mean": info["mean"],
              "std": info["std"], "n_classes": n_classes}
    runs: dict[str, list] = {name: [] for name in EPOCH_ROWS}
    errors: dict[str, str] = {}
    for _ in range(opts.repeat):  # round-robin, so a change in load touches both rows alike
        for name, tune in EPOCH_ROWS.items():
            if name in errors:
                continue
            got = _run("epoch_pass", {"name": name, **kwargs}, tune)
            if "error" in got:
                errors[name] = got["error"]
                _log_fail(log, name, got)
            elif got["params"] != info["params"]:
                errors[name] = (f"AssertionError: different models: {got['params']:,} "
                                f"parameters, fastinat's CNN {info['params']:,}")
                log(f"  [bold red]{name} FAILED[/]: {errors[name]}")
            else:
                runs[name].append(got)
    speeds, cpus = {}, {}
    for name, got in runs.items():
        if name in errors or not got:
            continue
        speeds[name] = max(r["images"] / r["seconds"] for r in got)
        each = ", ".join(f"{r['images'] / r['seconds']:.1f}" for r in got)
        best = min(got, key=lambda r: r["cpu"] / r["images"])
        cpus[name] = best["cpu"] / best["images"] * 1000
        log(f"  {name}: {best['images']} images/pass; {UNIT} per pass {each}; CPU "
            f"{cpus[name]:.0f} ms/image ({best['system'] / best['cpu']:.0%} of it system time); "
            f"{_malloc(got)}; {best['threads']} torch threads; peak RSS "
            f"{max(r['rss_mib'] for r in got):,.0f} MiB; {_process_text(got)}")
        _warn_untuned(log, name, EPOCH_ROWS[name], got)
    if len(cpus) == 2:
        log(f"  CPU time per image, baseline / fastinat: "
            f"{cpus['scratch_epoch_baseline'] / cpus['scratch_epoch']:.2f}x (load from other "
            "programs hardly changes it; with every core busy, img/s = cores / CPU per image)")
    base = speeds.get("scratch_epoch_baseline", math.nan)
    rows = {name: row(speeds[name], UNIT, base) if name in speeds
            else failed(UNIT, base, errors.get(name, "no pass finished")) for name in EPOCH_ROWS}
    # peak memory of the same epoch processes (lower is better; informational): fastinat's
    # tune_malloc keeps freed memory for reuse, so its peak is the price of its speed
    rss = {name: max(r["rss_mib"] for r in got) for name, got in runs.items() if got and name not in errors}
    if len(rss) == 2:
        rows["scratch_peak_rss"] = row(rss["scratch_epoch"], "MiB", rss["scratch_epoch_baseline"])
    else:
        rows["scratch_peak_rss"] = failed("MiB", math.nan, "an epoch row failed")
    rows.update(step_rows(opts, n_classes))
    return rows


def step_rows(opts, n_classes: int) -> dict:
    """`scratch_step_channels_last` and `malloc_tuning`: model steps only, each process alone."""
    log, size, bs = opts.log, opts.size, opts.bs
    rounds = max(1, min(opts.repeat, STEP_ROUNDS))
    kwargs = {"n_classes": n_classes, "size": size, "bs": bs, "steps": STEPS}
    got: dict[str, list] = {name: [] for name in STEP_RUNS}
    errors: dict[str, str] = {}
    for _ in range(rounds):  # the three processes take turns
        for name, (fmt, tune) in STEP_RUNS.items():
            if name in errors:
                continue
            r = _run("step_pass", {"fmt": fmt, "tune": tune, **kwargs}, tune)
            if "error" in r:
                errors[name] = r["error"]
                _log_fail(log, f"model step {name}", r)
            else:
                got[name].append(r)
    speed = {name: max(bs / r["seconds"] for r in rs) for name, rs in got.items()
             if rs and name not in errors}
    for name, rs in got.items():
        if name not in speed:
            continue
        best = min(rs, key=lambda r: r["cpu"])
        log(f"  model step {name}: {speed[name]:.1f} {UNIT} (best of {STEPS} steps x {len(rs)} "
            f"processes, each after a warm-up step); CPU {best['cpu'] / bs * 1000:.0f} ms/image "
            f"({best['system'] / best['cpu']:.0%} system); {_malloc(rs)}; peak RSS "
            f"{max(r['rss_mib'] for r in rs):,.0f} MiB; {_process_text(rs)}")
        _warn_untuned(log, name, STEP_RUNS[name][1], rs)

    def ratio_row(value: str, baseline: str) -> dict:
        base = speed.get(baseline, math.nan)
        if value in speed and baseline in speed:
            return row(speed[value], UNIT, base)
        return failed(UNIT, base, errors.get(value) or errors.get(baseline) or "no step finished")

    return {"scratch_step_channels_last": ratio_row("channels_last", "nchw"),
            "malloc_tuning": ratio_row("channels_last+malloc", "channels_last")}


def _malloc(runs: list) -> str:
    return "malloc tuned" if all(r["tuned"] for r in runs) else "malloc default"


def _warn_untuned(log, name: str, tune: bool, runs: list) -> None:
    if tune and not all(r["tuned"] for r in runs):
        log(f"  [yellow]Warning[/]: {name}: fastinat.perf.tune_malloc() did not apply (not "
            "Linux/glibc, or FASTINAT_NO_MALLOC_TUNING is set)")


def _process_text(runs: list) -> str:
    """Seconds per measurement process (its start-up and set-up are never timed)."""
    return f"{sum(r['process_s'] for r in runs) / len(runs):.0f} s per process"
