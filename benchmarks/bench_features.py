"""Part B frozen-backbone training: a head epoch on cached features vs recomputing ResNet50.

Rows (images/second over one training epoch of the same synthetic JPEGs, batch size and size):

* `head_epoch_live`: `finetune_learner(dls, "resnet50", pretrained=False, freeze="head",
  train_bn=False)` trained for one epoch the ordinary way: every batch is decoded, resized and
  run through the frozen ResNet50 before the head's step (the baseline);
* `head_epoch_cached`: the same Learner turned into `cached_learner(learn)`: the backbone ran
  once (untimed; the cache is made in the same process before timing) and the epoch trains the
  head on the cached pooled features (goal >= 20x).

Both rows run in one fresh process (`benchmarks._worker.isolated`) on a small synthetic set
(`--feature-images`, default 160, so that ResNet50's pass over it takes seconds, not minutes,
on 2 cores); each times the training phase only (validation is cancelled) after a warm-up
epoch cut to one batch. The cached epoch is timed `CACHED_REPEATS` times and the fastest
counts; the live epoch once.
"""

from __future__ import annotations

import math

from . import failed, register, row
from ._worker import isolated
from .synthetic import synthetic_dataset, warm_page_cache

UNIT = "img/s"
CACHED_REPEATS = 5


def features_pass(root: str, size: int, bs: int, workers: int) -> dict:
    """Time one head epoch live and on cached features (runs in a worker process)."""
    import time

    from fastai.callback.core import Callback, CancelFitException, CancelValidException
    from fastai.callback.progress import ProgressCallback

    from fastinat import cached_learner, inat_dataloaders
    from fastinat.learner import finetune_learner

    class Clock(Callback):
        order = 99

        def __init__(self, batches: int | None = None):
            self.batches, self.seconds, self.images = batches, 0.0, 0

        def before_train(self):
            self.start = time.perf_counter()

        def after_batch(self):
            if self.training:
                self.images += len(self.learn.yb[0])
                if self.batches is not None and self.iter + 1 >= self.batches:
                    raise CancelFitException

        def after_train(self):
            self.seconds = time.perf_counter() - self.start

        def before_validate(self):
            raise CancelValidException

    def epoch(learn, batches=None) -> tuple[int, float]:
        clock = Clock(batches)
        learn.fit(1, 1e-3, cbs=[clock])
        return clock.images, clock.seconds or (time.perf_counter() - clock.start)

    dls = inat_dataloaders(root, size=size, bs=bs, workers=workers, augment=False, progress=False)
    learn = finetune_learner(dls, "resnet50", pretrained=False, freeze="head", train_bn=False)
    learn.remove_cb(ProgressCallback)
    epoch(learn, batches=1)  # warm-up
    live_images, live_s = epoch(learn)
    head = cached_learner(learn, progress=False)
    head.remove_cb(ProgressCallback)
    epoch(head, batches=1)
    cached = [epoch(head) for _ in range(CACHED_REPEATS)]
    cached_images, cached_s = min(cached, key=lambda r: r[1] / r[0])
    return {"live_images": live_images, "live_s": live_s, "cached_images": cached_images,
            "cached_s": cached_s, "train_images": len(dls.train_ds)}


@register("features", goals={"head_epoch_live": None, "head_epoch_cached": 20.0})
def bench_features(opts) -> dict:
    """Frozen-ResNet50 head epoch img/s: cached features vs recomputing the backbone."""
    n = int(getattr(opts, "feature_images", 160))
    root = synthetic_dataset(n, seed=opts.seed, log=opts.log)
    warm_page_cache(root)
    got = isolated(f"{__name__}:features_pass", {"root": str(root), "size": opts.size, "bs": opts.bs,
                                                  "workers": opts.workers})
    if "error" in got:
        opts.log(f"  features FAILED: {got.get('detail') or got['error']}")
        return {"head_epoch_live": failed(UNIT, math.nan, got["error"]),
                "head_epoch_cached": failed(UNIT, math.nan, got["error"])}
    live = got["live_images"] / got["live_s"]
    cached = got["cached_images"] / got["cached_s"]
    opts.log(f"  {got['train_images']} train images at {opts.size} px, bs {opts.bs}: live epoch "
             f"{got['live_s']:.1f} s ({live:.1f} {UNIT}), cached epoch {got['cached_s'] * 1000:.1f} ms "
             f"({cached:,.0f} {UNIT}, best of {CACHED_REPEATS})")
    return {"head_epoch_live": row(live, UNIT, live), "head_epoch_cached": row(cached, UNIT, live)}
