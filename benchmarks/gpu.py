"""Throughput on a GPU machine: does the data pipeline keep the GPU busy?

    bash benchmarks/gpu.sh                      # on the GPU machine, from the repository root
    .venv/bin/python -m benchmarks.gpu --images 4000 --workers 16 --size 224 --bs 128

Prints img/s (and writes benchmarks/gpu_results.json) for:

* `loader`: fastinat's augmented training loader alone (decode + augment in `--workers`
  processes, batches moved to the GPU and normalised there): the most the GPU can be fed;
* `scratch_train`: `fastinat scratch`'s Learner (default CNN), mixed precision, channels_last;
* `resnet50_train`: `fastinat finetune --arch resnet50 --freeze none --no-pretrained`'s
  Learner, mixed precision.

Goal: the loader at >= 2,000 img/s on a 16-core machine for 224 px training, and each
training row close to the loader's rate means the GPU is the limit, not the data. Each row
times `--batches` training batches after `--warmup` batches. Runs on a CPU too (`--device cpu`,
tiny counts with `--quick`), which is how the test suite checks that the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _loader_rate(dl, batches: int, warmup: int) -> float:
    it = iter(dl)
    for _ in range(warmup):
        next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        xb, _ = next(it)
        n += len(xb)
    if xb.is_cuda:
        import torch

        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def _train_rate(learn, batches: int, warmup: int) -> float:
    import torch
    from fastai.callback.core import Callback, CancelFitException, CancelValidException

    class Clock(Callback):
        order = 99

        def before_fit(self):
            self.n, self.start = 0, None

        def after_batch(self):
            if not self.training:
                return
            if self.iter + 1 == warmup:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.start = time.perf_counter()
            elif self.iter + 1 > warmup:
                self.n += len(self.learn.yb[0])
            if self.iter + 1 >= warmup + batches:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.seconds = time.perf_counter() - self.start
                raise CancelFitException

        def before_validate(self):
            raise CancelValidException

    clock = Clock()
    learn.fit_one_cycle(1, 1e-3, cbs=[clock])
    return clock.n / clock.seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny counts: only checks that it runs")
    p.add_argument("--out", type=Path, default=HERE / "gpu_results.json")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.images, opts.size, opts.bs, opts.batches, opts.warmup, opts.workers = 96, 32, 8, 2, 1, 1
    os.environ.setdefault("FASTINAT_CACHE", str(HERE / ".cache" / "fastinat"))
    import torch

    from fastinat import inat_dataloaders
    from fastinat.learner import finetune_learner, scratch_learner
    from fastinat.perf import tune_process
    from fastinat.train import configure_learner

    from .synthetic import synthetic_dataset

    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    root = synthetic_dataset(opts.images, log=print)
    tune_process()
    dls = inat_dataloaders(root, size=opts.size, bs=opts.bs, workers=opts.workers, device=device,
                           progress=False)
    need = opts.batches + opts.warmup
    if len(dls.train) < need:
        raise SystemExit(f"--images {opts.images} gives {len(dls.train)} batches; need {need}")
    results = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
               "cores": os.cpu_count(), "workers": opts.workers, "size": opts.size, "bs": opts.bs}
    results["loader"] = _loader_rate(dls.train, opts.batches, opts.warmup)
    print(f"loader          {results['loader']:9.1f} img/s", flush=True)
    for name, make in (("scratch_train", lambda: scratch_learner(dls)),
                       ("resnet50_train", lambda: finetune_learner(dls, "resnet50", pretrained=False,
                                                                   freeze="none"))):
        learn = make()
        configure_learner(learn, "auto")
        results[name] = _train_rate(learn, opts.batches, opts.warmup)
        print(f"{name:15} {results[name]:9.1f} img/s", flush=True)
    opts.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {opts.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
