"""`--augment-policy strong`: RandAugment-style ops + random erasing in the loaders' item pipeline."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import photo
from fastinat.data.augment import InatAugment
from fastinat.data.randaugment import OPS, random_erase, strong_ops
from fastinat.recipes.cli import app

runner = CliRunner()


def _train_views(policy: str, seed: int, n: int = 8, augment: bool = True) -> list[np.ndarray]:
    img = np.asarray(photo(120, 90, seed=3))
    aug = InatAugment(48, augment=augment, policy=policy)
    random.seed(seed)
    return [aug.pixels(img, train=augment).permute(1, 2, 0).numpy().copy() for _ in range(n)]


def test_strong_differs_from_standard_and_none_and_is_seeded():
    strong, standard = _train_views("strong", 0), _train_views("standard", 0)
    none = _train_views("standard", 0, augment=False)
    assert all(v.shape == (48, 48, 3) and v.dtype == np.uint8 for v in strong)
    assert all(not np.array_equal(a, b) for a, b in zip(strong, standard, strict=True))
    assert all(not np.array_equal(a, none[0]) for a in strong)
    assert len({v.tobytes() for v in strong}) == 8  # random every time
    again = _train_views("strong", 0)
    assert all(np.array_equal(a, b) for a, b in zip(strong, again, strict=True))  # same seed, same images
    assert not np.array_equal(np.stack(strong), np.stack(_train_views("strong", 1)))


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_gives_a_valid_image(name):
    a = np.asarray(photo(40, 40, seed=1)).copy()
    random.seed(0)
    for m in (0.0, 0.3, 1.0):
        out = OPS[name](a.copy(), m)
        assert out.shape == a.shape and out.dtype == np.uint8
    if name != "identity":  # full magnitude changes the image (some direction of it)
        random.seed(0)
        assert any(not np.array_equal(OPS[name](a.copy(), 1.0), a) for _ in range(4)), name


def test_ops_do_what_they_say():
    grey = np.full((16, 16, 3), 100, np.uint8)
    assert (OPS["solarize"](grey, 1.0) == 155).all()  # threshold 0: every value inverted
    assert (OPS["posterize"](np.full((4, 4, 3), 0xFF, np.uint8), 1.0) == 0xF0).all()  # 4 bits kept
    ramp = np.tile(np.linspace(50, 150, 16).astype(np.uint8)[:, None, None], (1, 16, 3))
    stretched = OPS["autocontrast"](ramp, 0.5)
    assert stretched.min() == 0 and stretched.max() == 255
    random.seed(0)
    erased = random_erase(grey.copy())
    changed = (erased != grey).any(-1)
    assert 0.02 * 256 * 0.5 <= changed.sum() <= 256 / 3 + 16  # one rectangle of 2%-1/3 of the area


def test_strong_ops_keep_any_shape_valid():
    rng = np.random.default_rng(0)
    for seed in range(60):
        random.seed(seed)
        h, w = rng.integers(1, 40, 2)
        out = strong_ops(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags.writeable


def test_strong_loader_batches_are_seeded_whatever_the_workers(demo_data):
    from fastai.torch_core import set_seed

    from fastinat import inat_dataloaders
    from fastinat.data.workers import close_workers

    batches = []
    for workers in (0, 2):
        set_seed(0)
        dls = inat_dataloaders(demo_data, size=24, bs=32, workers=workers, progress=False, device="cpu",
                               augment_policy="strong")
        torch.manual_seed(7)
        batches.append([x.clone() for x, _ in list(dls.train)[:3]])
        close_workers(dls)
    assert all(torch.equal(a, b) for a, b in zip(*batches, strict=True))


def test_scratch_with_the_strong_policy_records_it(small_demo, tmp_path):
    args = ["scratch", "--data", str(small_demo), "--out", str(tmp_path), "--size", "16", "--filters", "8",
            "--dense-units", "8", "--epochs", "1", "--workers", "0", "--no-wandb"]
    result = runner.invoke(app, [*args, "--augment-policy", "strong", "--name", "s"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "s" / "config.json").read_text())["config"]
    assert config["augment"] is True and config["augment_policy"] == "strong"
    bad = runner.invoke(app, [*args, "--augment-policy", "strongest"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == [
        "Error: Bad option --augment-policy: must be standard or strong, got 'strongest' (did you mean "
        "strong?)."]
    off = runner.invoke(app, [*args, "--augment-policy", "strong", "--no-augment"])
    assert off.exit_code == 2
    assert off.output.strip() == ("Error: Bad options: --augment-policy strong needs --augment "
                                  "(drop --no-augment).")
