"""InatDL: persistent loader workers, seeded batches, channels_last batches, normalisation."""

from __future__ import annotations

import random

import numpy as np
import psutil
import pytest
import torch

from fastinat import inat_dataloaders
from fastinat.data.augment import ToFloatNormalize
from fastinat.data.workers import InatDL, close_workers


def epoch(dl) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in dl]


def loaders(root, workers: int, seed: int = 0):
    from fastai.torch_core import set_seed

    set_seed(seed)
    return inat_dataloaders(root, size=24, bs=32, num_workers=workers, progress=False, device="cpu")


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


@pytest.mark.parametrize("split", ["train", "valid"])
def test_fused_items_equal_fastais_pipelines(demo_data, split):
    runs = []
    for fused in (True, False):
        dl = getattr(loaders(demo_data, 0), split)
        if not fused:
            dl._fused = None  # every item through fastai's transform pipelines
        torch.manual_seed(3)
        runs.append(epoch(dl)[:4])
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    from fastai.vision.all import ToTensor

    dl = loaders(demo_data, 0).train
    dl.after_item.fs.append(ToTensor())  # a changed pipeline: items go fastai's way again
    assert dl._fused[0] != dl._item_key()
    assert dl.do_item(0)[0].shape == (3, 24, 24)


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


@pytest.mark.parametrize("threads", [1, 2])
def test_normalising_restores_the_thread_count(threads):
    from fastai.torch_core import TensorImage

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = TensorImage(torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8))
        ToFloatNormalize([0.5] * 3, [0.25] * 3)(x)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_predict_gives_the_model_the_valid_loaders_input_bits(demo_data):
    """EvalTransform (predict, evaluate, explain) == the valid loader, to the last bit."""
    from fastinat.inference import EvalTransform
    from fastinat.learner import data_card

    dls = loaders(demo_data, 0)
    x, _ = next(iter(dls.valid))
    files = dls.valid.items[:len(x)]
    transform = EvalTransform(data_card(dls))
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
