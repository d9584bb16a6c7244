"""InatDL: persistent loader workers, seeded batches, channels_last batches, normalisation."""

from __future__ import annotations

import inspect
import random

import numpy as np
import psutil
import pytest
import torch
from fastai.data.core import TfmdDL
from fastai.torch_core import TensorImage
from fastai.vision.all import Transform

from fastinat import inat_dataloaders
from fastinat.data.augment import ToFloatNormalize
from fastinat.data.workers import InatDL, close_workers


def epoch(dl) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in dl]


def loaders(root, workers: int, seed: int = 0):
    from fastai.torch_core import set_seed

    set_seed(seed)
    return inat_dataloaders(root, size=24, bs=32, workers=workers, progress=False, device="cpu")


def test_batches_do_not_depend_on_the_number_of_workers(demo_data):
    runs = []
    for workers in (0, 2):
        dls = loaders(demo_data, workers)
        assert isinstance(dls.train, InatDL)
        torch.manual_seed(7)
        runs.append(epoch(dls.train)[:6])
        close_workers(dls)
    for (x0, y0), (x2, y2) in zip(*runs, strict=True):
        assert torch.equal(y0, y2)
        assert torch.equal(x0, x2)  # the same augmentations, not only the same order


def fastais_loader(dl) -> TfmdDL:
    """fastai's own TfmdDL over the same dataset and transforms, in order, in this process."""
    return TfmdDL(dl.dataset, bs=dl.bs, shuffle=False, drop_last=False, num_workers=0, device="cpu",
                  after_item=list(dl.after_item.fs), before_batch=list(dl.before_batch.fs),
                  after_batch=list(dl.after_batch.fs))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_equal_fastais_own_loader(demo_data, workers):
    ours = loaders(demo_data, workers).valid  # in order, all items
    assert isinstance(ours, InatDL)
    got, expected = epoch(ours), epoch(fastais_loader(ours))
    assert len(got) == len(expected) == 9
    for (xa, ya), (xb, yb) in zip(got, expected, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    ours.close()


@pytest.mark.parametrize("split", ["train", "valid"])
def test_items_equal_fastais_pipelines_with_the_same_random_state(demo_data, split):
    from fastai.torch_core import set_seed

    dl = getattr(loaders(demo_data, 0), split)
    theirs = fastais_loader(dl)
    for loader in (dl, theirs):
        loader.before_iter()  # as an epoch starts: the pipelines learn the split (train augments)
    for i in range(6):
        set_seed(i)
        xa, ya = dl.do_item(i)
        set_seed(i)
        xb, yb = theirs.do_item(i)
        assert torch.equal(ya, yb) and torch.equal(xa, xb)  # train: the same random augmentation


class Invert(Transform):
    order = 50  # after InatAugment, on the uint8 item

    def encodes(self, x: TensorImage) -> TensorImage:
        return 255 - x


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_follow_a_change_of_the_item_transforms(demo_data, workers):
    from fastinat.data.augment import InatAugment

    dl = loaders(demo_data, workers).valid
    before = epoch(dl)[:2]  # with 2 workers: they are up now, with the old transforms
    dl.after_item.fs.append(Invert())
    inverted = epoch(dl)[:2]
    assert inverted[0][0].shape == before[0][0].shape and not torch.equal(inverted[0][0], before[0][0])
    for (xa, ya), (xb, yb) in zip(inverted, epoch(fastais_loader(dl))[:2], strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    i = next(i for i, f in enumerate(dl.after_item.fs) if isinstance(f, InatAugment))
    dl.after_item.fs[i] = InatAugment(16, augment=False)  # another size
    assert next(iter(dl))[0].shape == (32, 3, 16, 16)
    dl.close()


def test_the_fastai_and_torch_internals_InatDL_relies_on(demo_data):
    """fastinat/data/workers.py names these in its docstring; a change in fastai or torch shows here."""
    import torch.utils.data.dataloader as torch_loader
    from fastai.data.load import fa_collate  # noqa: F401  (imported by workers.py)

    problems = []

    def editable(fs) -> bool:  # a list or fastcore's L
        return all(hasattr(fs, m) for m in ("__iter__", "__setitem__", "append"))

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    for name, params in {"do_item": ["self", "s"], "do_batch": ["self", "b"], "create_batch": ["self", "b"],
                         "get_idxs": ["self"], "randomize": ["self"], "before_iter": ["self"]}.items():
        method = getattr(TfmdDL, name, None)
        found = None if method is None else list(inspect.signature(method).parameters)
        need(found == params, f"fastai TfmdDL.{name}{tuple(params)}: now {found}")
    for name in ("after_iter", "wif"):
        need(callable(getattr(TfmdDL, name, None)), f"fastai TfmdDL.{name}()")
    dl = loaders(demo_data, 0).train
    for name in ("bs", "drop_last", "device", "pin_memory", "timeout", "prebatched", "indexed",
                 "num_workers", "offs", "rng"):
        need(hasattr(dl, name), f"fastai TfmdDL.{name}")
    for name in ("after_item", "before_batch", "after_batch"):
        need(editable(getattr(getattr(dl, name, None), "fs", None)), f"fastai TfmdDL.{name}.fs (a list)")
    fake = getattr(dl, "fake_l", None)
    need(hasattr(fake, "num_workers") and hasattr(fake, "pin_memory_device"),
         "fastai TfmdDL.fake_l.num_workers / .pin_memory_device")
    ds = dl.dataset
    need(hasattr(ds, "items") and hasattr(ds, "split_idx"), "fastai Datasets.items / .split_idx")
    tls = getattr(ds, "tls", None)
    need(tls is not None and len(tls) == 2 and all(editable(t.tfms.fs) for t in tls),
         "fastai Datasets.tls: one TfmdLists per block, each with tfms.fs")
    need(tls is not None and int(tls[1][0]) == int(ds[0][1]), "fastai Datasets.tls[1][i]: item i's label")
    params = inspect.signature(torch.utils.data.DataLoader).parameters
    for name in ("persistent_workers", "pin_memory_device", "prefetch_factor", "worker_init_fn"):
        need(name in params, f"torch DataLoader({name}=)")
    need("_iterator" in vars(torch.utils.data.DataLoader([0])), "torch DataLoader._iterator (private)")
    need(callable(getattr(torch_loader._MultiProcessingDataLoaderIter, "_shutdown_workers", None)),
         "torch _MultiProcessingDataLoaderIter._shutdown_workers() (private)")
    need(callable(getattr(torch.UntypedStorage, "_new_shared", None)), "torch UntypedStorage._new_shared (private)")
    assert not problems, ("fastai/torch changed what fastinat/data/workers.py relies on:\n  "
                          + "\n  ".join(problems))


def test_workers_persist_across_epochs_and_augment_anew(demo_data):
    me = psutil.Process()
    before = {p.pid for p in me.children()}  # other tests' processes, if any are still around
    dls = loaders(demo_data, 2)
    first = epoch(dls.train)
    pids = {p.pid for p in me.children()} - before
    assert len(pids) == 2
    assert dls.train.workers_running and not dls.valid.workers_running
    second = epoch(dls.train)
    assert {p.pid for p in me.children()} - before == pids  # no new processes for epoch 2
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=False))
    dls.train.close()
    assert not dls.train.workers_running
    psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)
    assert len(epoch(dls.train)) == len(first)  # a closed loader starts new workers when used


def test_in_process_batches_leave_the_callers_random_state_alone(demo_data):
    dls = loaders(demo_data, 0)
    py, npy = random.getstate(), np.random.get_state()
    epoch(dls.train)
    assert random.getstate() == py
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], npy[1:2], strict=True))


def test_batches_are_channels_last_and_normalised_exactly(demo_data):
    dls = loaders(demo_data, 2)
    mean, std = dls.inat.stats
    for dl in (dls.train, dls.valid):
        dl.after_batch.fs.clear()  # the raw uint8 batch, as it leaves the workers
        raw, _ = next(iter(dl))
        assert raw.dtype == torch.uint8 and raw.shape == (32, 3, 24, 24)
        assert raw.is_contiguous(memory_format=torch.channels_last)
        norm = ToFloatNormalize(mean, std)(raw)
        assert norm.is_contiguous(memory_format=torch.channels_last)
        expected = (raw.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        assert torch.allclose(norm, expected, atol=1e-5)
        nchw = ToFloatNormalize(mean, std)(raw.contiguous())  # any layout: the same arithmetic
        assert torch.equal(nchw, norm)
    close_workers(dls)


def test_normalising_never_touches_torchs_thread_count(monkeypatch):
    from fastai.torch_core import TensorImage

    def refuse(n):
        raise AssertionError("ToFloatNormalize changed torch's (process-wide) thread count")

    monkeypatch.setattr(torch, "set_num_threads", refuse)
    x = TensorImage(torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8).permute(0, 3, 1, 2))
    for mean, std in (([0.5] * 3, [0.25] * 3), (None, None)):
        got = ToFloatNormalize(mean, std)(x)
        expected = x.float() / 255 if mean is None else (x.float() / 255 - 0.5) / 0.25
        assert torch.allclose(got, expected, atol=1e-6)


def test_predict_gives_the_model_the_valid_loaders_input_bits(demo_data):
    """EvalTransform (predict, evaluate, explain) == the valid loader, to the last bit."""
    from fastinat.inference import EvalTransform
    from fastinat.learner import model_card

    dls = loaders(demo_data, 0)
    x, _ = next(iter(dls.valid))
    files = dls.valid.items[:len(x)]
    transform = EvalTransform(model_card("scratch", "cnn", {}, dls))  # what a run's model.json says
    got = transform.batch([transform.pixels(f) for f in files])
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, x.as_subclass(torch.Tensor))
    assert torch.equal(transform(files[0]), got[0])  # one image at a time: the same numbers
    close_workers(dls)


def test_eval_resize_box_averages_big_squares_then_is_bilinear():
    import cv2

    from fastinat.data.augment import eval_pixels

    rng = np.random.default_rng(0)
    for h, w, size in [(700, 1000, 224), (300, 250, 224), (100, 120, 224), (65, 64, 32)]:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        side = min(h, w)
        square = a[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        r = side // size
        if r >= 2:  # 700 -> 3x box average to 233, then bilinear; 65 -> 2x to 32, then a copy
            square = cv2.resize(square, (side // r, side // r), interpolation=cv2.INTER_AREA)
        expected = cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR)
        got = eval_pixels(a, size)
        assert got.shape == (size, size, 3) and got.flags.writeable
        assert np.array_equal(got, expected)
    # one-pixel stripes, 3x too big: box-averaged to flat grey, not aliased into new stripes
    stripes = np.zeros((700, 1000, 3), np.uint8)
    stripes[:, ::2] = 255
    assert eval_pixels(stripes, 224).std() < 20
    assert cv2.resize(stripes[:, 150:850], (224, 224), interpolation=cv2.INTER_LINEAR).std() > 60
    # the centre square: columns outside it never reach the output
    marked = np.full((100, 300, 3), 50, np.uint8)
    marked[:, :100], marked[:, 200:] = 0, 255
    assert (eval_pixels(marked, 50) == 50).all()
