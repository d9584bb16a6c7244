"""Inference throughput (images/second): `fastinat predict` against fastai's `learn.predict`.

Rows (the same `--predict-images` synthetic JPEGs, the same small Part A CNN at `--size`):

* `predict_one_by_one`: fastai's `learn.predict(path)` called once per image, how a notebook
  usually predicts a folder (baseline);
* `predict_batched`: `fastinat.predict(run, files, bs=--bs)`: the pickle-free model loaded
  from the run folder; on a CPU each thread decodes a few images and runs their forward pass
  on one torch thread (see `fastinat.inference.predict_batches`) (goal >= 5x);
* `predict_tta`: the same with `tta=True` (`--tta`: n = 6 views of every image averaged),
  timed in the same process right after `predict_batched`. Its baseline is the images/second
  the goal allows, `predict_batched` / (n + 0.2): a ratio >= 1 means TTA costs at most n + 0.2
  plain evaluation passes (the log prints the cost in passes).

Each pass runs in its own fresh process (the baseline without fastinat's malloc tuning, as a
plain script runs), after a warm-up of a few images; with `--repeat N` the two take turns N
times and each keeps its fastest pass, as the loader rows do; the log says whether the two agree on every
top-1 class (they must: same seeded weights, same evaluation transform). On 2 CPU cores the
ratio is bounded by decoding plus the forward pass; it grows with cores, which the threads
use and one-image-at-a-time calls cannot.
"""

from __future__ import annotations

import math

from . import failed, register, row
from ._worker import UNTUNED_ENV, isolated
from .synthetic import synthetic_dataset, warm_page_cache

UNIT = "img/s"


def _setup(root: str, size: int, bs: int, n: int):
    """The same untrained small CNN (seeded), its run folder, and the files, in any process."""
    import tempfile
    from pathlib import Path

    from fastai.callback.progress import ProgressCallback
    from fastai.torch_core import set_seed

    from fastinat import inat_dataloaders
    from fastinat.io import save_weights, write_json
    from fastinat.learner import scratch_learner

    set_seed(0)
    dls = inat_dataloaders(root, size=size, bs=bs, workers=0, augment=False, progress=False)
    learn = scratch_learner(dls, filters=[16, 32, 64], dense_units=32)
    learn.remove_cb(ProgressCallback)
    learn.model.eval()
    run = Path(tempfile.mkdtemp(prefix="fastinat-bench-run-"))
    save_weights(learn.model, run / "model.safetensors")
    write_json(run / "model.json", learn.card)
    files = (dls.inat.test_files + dls.inat.valid_files + dls.inat.train_files)[:n]
    return learn, run, files


def single_pass(root: str, size: int, bs: int, n: int) -> dict:
    """fastai's learn.predict, once per image (a plain script: no fastinat malloc tuning)."""
    import time

    learn, _, files = _setup(root, size, bs, n)
    for f in files[:3]:  # warm-up
        learn.predict(f)
    start = time.perf_counter()
    labels = [str(learn.predict(f)[0]) for f in files]
    return {"images": len(files), "seconds": time.perf_counter() - start, "labels": labels}


def batched_pass(root: str, size: int, bs: int, n: int) -> dict:
    """fastinat.predict over all the files, as `fastinat predict` runs it (its process tuned)."""
    import time

    from fastinat import predict, tune_process

    tune_process()  # what the command does for the process it owns (fastinat.perf)

    _, run, files = _setup(root, size, bs, n)
    predict(run, files[:8], bs=bs)  # warm-up
    start = time.perf_counter()
    records = predict(run, files, bs=bs)
    seconds = time.perf_counter() - start
    predict(run, files[:8], bs=bs, tta=True)  # warm-up
    start = time.perf_counter()
    tta = predict(run, files, bs=bs, tta=True)
    return {"images": len(files), "seconds": seconds, "labels": [r.get("label") for r in records],
            "tta_seconds": time.perf_counter() - start, "views": tta[0].get("tta_views", math.nan)}


@register("predict", goals={"predict_one_by_one": None, "predict_batched": 5.0, "predict_tta": 1.0})
def bench_predict(opts) -> dict:
    """Batched `fastinat predict` img/s vs fastai's `learn.predict` one image at a time."""
    n = int(getattr(opts, "predict_images", 500))
    root = synthetic_dataset(opts.images, seed=opts.seed, log=opts.log)
    warm_page_cache(root)
    kwargs = {"root": str(root), "size": opts.size, "bs": opts.bs, "n": n}
    singles, batches = [], []
    for _ in range(opts.repeat):  # rounds take turns; each row keeps its fastest pass
        singles.append(isolated(f"{__name__}:single_pass", kwargs, env=UNTUNED_ENV))
        batches.append(isolated(f"{__name__}:batched_pass", kwargs))
        for got in (singles[-1], batches[-1]):
            if "error" in got:
                opts.log(f"  predict FAILED: {got.get('detail') or got['error']}")
                return {name: failed(UNIT, math.nan, got["error"])
                        for name in ("predict_one_by_one", "predict_batched", "predict_tta")}
    single = min(singles, key=lambda r: r["seconds"])
    batched = min(batches, key=lambda r: r["seconds"])
    opts.log("  img/s per pass: learn.predict " + ", ".join(f"{r['images'] / r['seconds']:.0f}" for r in singles)
             + "; fastinat.predict " + ", ".join(f"{r['images'] / r['seconds']:.0f}" for r in batches))
    agree = sum(a == b for a, b in zip(single["labels"], batched["labels"], strict=True))
    one, many = single["images"] / single["seconds"], batched["images"] / batched["seconds"]
    opts.log(f"  {single['images']} images at {opts.size} px: learn.predict one by one {single['seconds']:.1f} s, "
             f"fastinat.predict (bs {opts.bs}) {batched['seconds']:.1f} s; same top-1 class on "
             f"{agree}/{single['images']}")
    tta = min(batches, key=lambda r: r["tta_seconds"])
    views, cost = tta["views"], tta["tta_seconds"] / batched["seconds"]
    opts.log(f"  --tta ({views} views): {tta['tta_seconds']:.1f} s = {cost:.2f} plain passes "
             f"(goal <= {views + 0.2:g})")
    return {"predict_one_by_one": row(one, UNIT, one), "predict_batched": row(many, UNIT, one),
            "predict_tta": row(tta["images"] / tta["tta_seconds"], UNIT, many / (views + 0.2))}
