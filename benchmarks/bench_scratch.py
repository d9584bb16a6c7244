"""Part A training speed (images/second): fastinat's scratch path against a plain PyTorch loop.

Rows (same synthetic JPEGs, worker processes, batch size and image size; ratio = row / baseline):

* `scratch_epoch_baseline`: `build_cnn(10)` in plain NCHW fp32, `torch.optim.Adam(lr=1e-3)`,
  cross-entropy, a torchvision `ImageFolder(train/)` with RandomResizedCrop, RandomHorizontalFlip,
  ToTensor and Normalize (fastinat's dataset statistics) in a `DataLoader(shuffle=True)`;
* `scratch_epoch`: what `fastinat scratch` runs per epoch: `inat_dataloaders(augment=True)`,
  `scratch_learner(dls)` (the default CNN), fastai's ProgressCallback removed, a silent logger,
  fastai's `ChannelsLast` callback (added by `fastinat.train.train`), `fit_one_cycle(1, 1e-3)`
  (goal >= 1.3x);
* `scratch_step_channels_last`: only forward + backward + Adam step of the same CNN on a random
  in-memory batch, channels_last (value) against NCHW (baseline): the model's share of the
  difference, without data loading (informational).

An epoch here is cut to `--scratch-batches` training batches (default 4): the CNN does only
~10 img/s on a 2-core CPU at 224 px, so a whole epoch would take minutes. Each pass is a new
epoch (new loader iterator, worker start-up included) timed from the start of the training
phase to the end of the last optimizer step; validation is skipped (fastinat's pass is stopped
with `CancelFitException` after the last batch). One untimed warm-up pass of one batch per
row comes first (oneDNN kernel set-up, first allocations, optimizer state). With `--repeat N`
the two epoch rows take turns for N rounds and each keeps its fastest pass. The log gives each
row's CPU time per image (this process + its finished loader workers) and torch's thread count.

On a 2-core CPU nearly half of that CPU time is system time: glibc hands every big activation
buffer (> 32 MiB) back to the kernel when it is freed, so each step page-faults it in again.
"""

from __future__ import annotations

import gc
import math
import os
import time
from functools import partial
from pathlib import Path

from . import error_text, failed, register, row
from .synthetic import synthetic_dataset, warm_page_cache

UNIT = "img/s"
#: Timed training batches per pass when `opts` has no `scratch_batches`.
BATCHES = 4
#: Untimed warm-up batches (one pass) before the timed passes of each row.
WARMUP = 1
#: Random-batch steps per memory format for `scratch_step_channels_last` (after one warm-up).
STEPS = 2


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


def fastinat_learner(root: Path, size: int, bs: int, workers: int):
    import torch
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.progress import ProgressCallback

    import fastinat
    from fastinat.learner import scratch_learner

    dls = fastinat.inat_dataloaders(root, size=size, bs=bs, num_workers=workers, augment=True,
                                    progress=False, device="cpu")
    torch.manual_seed(0)
    learn = scratch_learner(dls)
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *a, **k: None
    learn.add_cb(ChannelsLast())  # what fastinat.train.train adds (on the CPU too)
    return learn


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


# -- the model alone: channels_last against NCHW ---------------------------------------------


def step_speeds(n_classes: int, size: int, bs: int, steps: int) -> dict[str, float]:
    """img/s of forward + backward + Adam step on one random batch, per memory format (best)."""
    import torch

    from fastinat.models.cnn import build_cnn

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(bs, 3, size, size, generator=gen)
    y = torch.randint(0, n_classes, (bs,), generator=gen)
    setups = {}
    for fmt in ("nchw", "channels_last"):
        torch.manual_seed(0)
        model = build_cnn(n_classes)
        if fmt == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        setups[fmt] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
    loss_fn = torch.nn.CrossEntropyLoss()
    best = {fmt: math.inf for fmt in setups}
    for i in range(steps + 1):  # step 0 is the warm-up; the formats take turns
        for fmt, (model, opt) in setups.items():
            start = time.perf_counter()
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                best[fmt] = min(best[fmt], time.perf_counter() - start)
    return {fmt: bs / seconds for fmt, seconds in best.items()}


# -- the benchmark ---------------------------------------------------------------------------


@register("scratch", goals={"scratch_epoch_baseline": None, "scratch_epoch": 1.3,
                            "scratch_step_channels_last": None})
def bench_scratch(opts) -> dict:
    """Part A training img/s (N batches of one epoch): fastinat scratch vs a plain PyTorch loop."""
    import torch

    log = opts.log
    size, bs, workers = opts.size, opts.bs, opts.workers
    batches = max(1, int(getattr(opts, "scratch_batches", BATCHES)))
    root = synthetic_dataset(opts.images, seed=opts.seed, log=log)
    warm_page_cache(root)
    threads = torch.get_num_threads()

    start = time.perf_counter()
    learn = fastinat_learner(root, size, bs, workers)
    setup = time.perf_counter() - start
    if len(learn.dls.train) < max(batches, WARMUP):
        raise AssertionError(f"fastinat's train loader has {len(learn.dls.train)} batches, fewer "
                             f"than --scratch-batches {batches}; use more --images")
    mean, std = learn.dls.inat.stats
    n_classes = len(learn.dls.vocab)
    plain = PlainLoop(baseline_loader(root, size, bs, workers, mean, std), n_classes)
    params = n_parameters(learn.model), n_parameters(plain.model)
    if params[0] != params[1]:
        raise AssertionError(f"different models: fastinat {params[0]:,} parameters, baseline "
                             f"{params[1]:,}")
    log(f"  CNN {params[0]:,} parameters; torch threads {threads}; {batches} timed batches of "
        f"{bs} x 3 x {size} x {size} per pass after a {WARMUP}-batch warm-up pass; fastinat "
        f"setup {setup:.1f} s")

    passes = {
        "scratch_epoch_baseline": partial(plain.run, size=size, bs=bs),
        "scratch_epoch": partial(fastinat_pass, learn, size=size, bs=bs),
    }
    runs: dict[str, list] = {name: [] for name in passes}
    errors: dict[str, str] = {}
    for name, run in passes.items():
        try:
            run(WARMUP)
        except Exception as e:  # a broken path fails its row, not the whole run
            errors[name] = error_text(e)
            log(f"  [bold red]{name} FAILED[/]: {errors[name]}")
    for _ in range(opts.repeat):  # round-robin, so a change in load touches both rows alike
        for name, run in passes.items():
            if name in errors:
                continue
            try:
                runs[name].append(run(batches))
            except Exception as e:
                errors[name] = error_text(e)
                log(f"  [bold red]{name} FAILED[/]: {errors[name]}")
    speeds, cpus = {}, {}
    for name, got in runs.items():
        if name in errors or not got:
            continue
        speeds[name] = max(images / seconds for images, seconds, _ in got)
        each = ", ".join(f"{images / seconds:.1f}" for images, seconds, _ in got)
        images, _, (cpu, system) = min(got, key=lambda r: r[2][0] / r[0])
        cpus[name] = cpu / images * 1000
        log(f"  {name}: {images} images/pass; {UNIT} per pass {each}; CPU {cpus[name]:.0f} "
            f"ms/image ({system / cpu:.0%} of it system time; {threads} torch threads)")
    if len(cpus) == 2:
        log(f"  CPU time per image, baseline / fastinat: "
            f"{cpus['scratch_epoch_baseline'] / cpus['scratch_epoch']:.2f}x (load from other "
            "programs hardly changes it; with every core busy, img/s = cores / CPU per image)")
    base = speeds.get("scratch_epoch_baseline", math.nan)
    rows = {name: row(speeds[name], UNIT, base) if name in speeds
            else failed(UNIT, base, errors.get(name, "no pass finished")) for name in passes}
    passes.clear()
    del learn, plain
    gc.collect()

    name = "scratch_step_channels_last"
    try:
        step = step_speeds(n_classes, size, bs, STEPS)
        log(f"  {name}: model step only, random batch of {bs}: NCHW {step['nchw']:.1f}, "
            f"channels_last {step['channels_last']:.1f} {UNIT} (best of {STEPS} after a warm-up)")
        rows[name] = row(step["channels_last"], UNIT, step["nchw"])
    except Exception as e:
        rows[name] = failed(UNIT, math.nan, error_text(e))
        log(f"  [bold red]{name} FAILED[/]: {rows[name]['error']}")
    return rows
