"""The accuracy recipes: label smoothing, MixUp/CutMix, EMA and progressive resizing, each
checked for doing what it says, and EMA + progressive resizing for resuming exactly."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from typer.testing import CliRunner

from conftest import InterruptIn
from fastinat import FastinatError
from fastinat.recipes.cli import app

runner = CliRunner()


def options(data, out, **kw):
    return {"data": str(data), "out": str(out), "size": 16, "filters": [8, 16], "dense_units": 16,
            "bs": 32, "workers": 0, "lr": 1e-2, "wandb": False, **kw}


@pytest.fixture(scope="module")
def dls(small_demo):
    from fastinat import inat_dataloaders

    return inat_dataloaders(small_demo, size=16, bs=16, workers=0, progress=False)


def test_label_smoothing_changes_the_loss(dls):
    from fastinat import scratch_learner

    xb, yb = dls.one_batch()
    plain, smooth = scratch_learner(dls, filters=[8]), scratch_learner(dls, filters=[8], label_smoothing=0.2)
    preds = torch.randn(len(yb), len(dls.vocab))
    a, b = float(plain.loss_func(preds, yb)), float(smooth.loss_func(preds, yb))
    eps, n = 0.2, len(dls.vocab)
    logp = torch.log_softmax(preds, 1)
    expected = (1 - eps) * torch.nn.functional.nll_loss(logp, yb) - eps / n * logp.sum(1).mean()
    assert a != pytest.approx(b)
    assert b == pytest.approx(float(expected), rel=1e-5)


class Before(Callback):
    """The training batches as the loader made them (before the mixing callback, order 0)."""

    order = -1

    def before_fit(self):
        self.xs = []

    def before_batch(self):
        if self.training:
            self.xs.append(self.learn.xb[0].clone())


class After(Callback):
    """The training batches after mixing, and the loss the learner took."""

    order = 99

    def __init__(self, mix):
        self.mix, self.seen = mix, []

    def after_loss(self):
        if self.training:
            m = self.mix
            self.seen.append({"x": self.learn.xb[0].clone(), "kind": m.last, "lam": m.lam.clone(),
                              "y1": m.yb1[0].clone(), "y": self.learn.yb[0].clone(),
                              "pred": self.learn.pred.detach().clone(), "loss": float(self.learn.loss.detach())})

    def after_batch(self):
        if len(self.seen) == 6:
            raise CancelFitException()


def _partner(x, orig, i, lam) -> int:
    """The image j that image i of the batch was mixed with: x_i = lam x_i' + (1 - lam) x_j'."""
    errors = [float((x[i] - torch.lerp(orig[j], orig[i], lam)).abs().max()) for j in range(len(orig))]
    j = min(range(len(orig)), key=errors.__getitem__)
    assert errors[j] < 1e-4, f"image {i} is not a blend of two batch images"
    return j


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "both"])
def test_mixup_and_cutmix_mix_inputs_and_targets(dls, kind):
    from fastinat import scratch_learner
    from fastinat.callbacks.mix import MixUpCutMix

    learn = scratch_learner(dls, filters=[8])
    mix = MixUpCutMix(mixup=0.4 if kind != "cutmix" else 0, cutmix=1.0 if kind != "mixup" else 0)
    before, after = Before(), After(mix)
    torch.manual_seed(0)
    learn.fit(1, cbs=[before, mix, after])
    assert len(after.seen) == len(before.xs) == 6
    ce = torch.nn.functional.cross_entropy
    for orig, seen in zip(before.xs, after.seen, strict=True):
        x, lam, y1, y = seen["x"], seen["lam"], seen["y1"], seen["y"]
        assert not torch.equal(x, orig) or float(lam.min()) > 0.999  # a zero-area box mixes nothing
        if seen["kind"] == "mixup":  # each image a blend with a partner; its target too
            assert bool(((lam >= 0.5) & (lam <= 1)).all())
            for i in range(len(x)):
                if lam[i] < 0.98:  # else any partner would fit
                    assert y1[i] == y[_partner(x, orig, i, lam[i])]
            expected = torch.lerp(ce(seen["pred"], y1, reduction="none"), ce(seen["pred"], y, reduction="none"), lam)
        else:  # one box pasted from the partners, the rest unchanged; lam = the area kept
            changed = (x != orig).any(1).any(0)
            rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
            if len(rows):
                box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
                assert box.numel() <= (1 - float(lam)) * changed.numel() + 1e-6
            expected = torch.lerp(ce(seen["pred"], y1, reduction="none"), ce(seen["pred"], y, reduction="none"), lam)
        assert seen["loss"] == pytest.approx(float(expected.mean()), rel=1e-5)  # against both targets
    kinds = {s["kind"] for s in after.seen}
    assert kinds == ({"mixup", "cutmix"} if kind == "both" else {kind})
    learn.validate()  # validation is never mixed: the plain loss function is back
    assert learn.loss_func is mix.old_lf


def test_mixup_cannot_go_with_cached_features(small_demo, tmp_path):
    result = runner.invoke(app, ["finetune", "--data", str(small_demo), "--out", str(tmp_path),
                                 "--arch", "resnet18", "--no-pretrained", "--cache-features",
                                 "--mixup", "0.2", "--no-wandb"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: Bad options: --cache-features trains the head on backbone features computed once; "
        "MixUp and CutMix mix the images themselves: drop --mixup/--cutmix or --cache-features."]
    assert not list(tmp_path.iterdir())


class Sizes(Callback):
    """The image size of every batch, per epoch and phase."""

    order = 99

    def before_fit(self):
        self.train_sizes, self.valid_sizes = {}, {}

    def before_batch(self):
        (self.train_sizes if self.training else self.valid_sizes).setdefault(self.epoch, set()).add(self.x.shape[-1])


def test_progressive_resizing_feeds_the_planned_size_per_epoch(small_demo, tmp_path):
    from fastinat.train import train_scratch

    sizes = Sizes()
    run = train_scratch(**options(small_demo, tmp_path, epochs=4, progressive=[8, 12, 16], workers=2,
                                  augment=False),  # without augmentation too: the plain view resized
                        name="p", cbs=[sizes])  # loader workers hold a copy of the crops' size
    assert sizes.train_sizes == {0: {8}, 1: {8}, 2: {12}, 3: {16}}  # 4 epochs in 3 shares
    assert all(v == {16} for v in sizes.valid_sizes.values())  # validation at the last size
    with open(run / "history.csv") as fh:
        assert [int(r["size"]) for r in csv.DictReader(fh)] == [8, 8, 12, 16]
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["progressive"] == [8, 12, 16] and config["size"] == 16
    assert json.loads((run / "model.json").read_text())["input_size"] == 16


def test_progressive_refuses_more_sizes_than_epochs_and_fixed_size_models(small_demo, tmp_path):
    result = runner.invoke(app, ["scratch", "--data", str(small_demo), "--epochs", "2",
                                 "--progressive", "8,12,16"])
    assert result.exit_code == 2 and "gives 3 sizes for 2 epochs" in result.output
    result = runner.invoke(app, ["finetune", "--data", str(small_demo), "--arch", "vit_tiny_patch16_224",
                                 "--no-pretrained", "--progressive", "32,48", "--no-wandb"])
    assert result.exit_code == 2 and "cannot train with --progressive" in result.output


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_ema_validates_and_saves_the_average_and_resumes_exactly(small_demo, tmp_path):
    from fastinat.train import train_scratch

    opts = options(small_demo, tmp_path, epochs=2, ema=0.9, progressive=[12, 16])
    sizes = Sizes()
    whole = train_scratch(**opts, name="whole", cbs=[sizes])  # with augmentation: the crops' size
    assert sizes.train_sizes == {0: {12}, 1: {16}} and sizes.valid_sizes == {0: {16}, 1: {16}}
    with pytest.raises(FastinatError):
        train_scratch(**opts, name="cut", cbs=[InterruptIn(epoch=1, at_batch=2)])
    cut = tmp_path / "cut"
    checkpoint = torch.load(cut / "checkpoint.pt", weights_only=True)
    raw, ema = checkpoint["model"], checkpoint["callbacks"]["ema"]["weights"]
    assert checkpoint["callbacks"]["ema"]["steps"] == len(range(0, 320, 32))  # one epoch's steps
    saved = _tensors(cut / "model.safetensors")  # the best (epoch 1) weights: the average's
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    for k, v in saved.items():
        assert torch.equal(v, ema[k]), k

    result = runner.invoke(app, ["scratch", "--resume", str(cut)])
    assert result.exit_code == 0, result.output
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (whole, cut))
    assert a["weights"] == b["weights"] == "ema"
    for key in ("valid_accuracy", "valid_loss", "test_accuracy", "test_loss", "best_epoch"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    with open(whole / "history.csv") as f1, open(cut / "history.csv") as f2:
        h1, h2 = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert [r["size"] for r in h1] == [r["size"] for r in h2] == ["12", "16"]
    assert [float(r["valid_loss"]) for r in h1] == pytest.approx([float(r["valid_loss"]) for r in h2], rel=1e-5)
    w1, w2 = _tensors(whole / "model.safetensors"), _tensors(cut / "model.safetensors")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6), k


def test_recipe_options_are_in_help_and_config(small_demo, tmp_path):
    result = runner.invoke(app, ["scratch", "--help"], terminal_width=200)
    for flag in ("--label-smoothing", "--mixup", "--cutmix", "--ema", "--progressive"):
        assert flag in result.output
    result = runner.invoke(app, ["scratch", "--data", str(small_demo), "--out", str(tmp_path), "--name", "r",
                                 "--size", "16", "--filters", "8", "--epochs", "1", "--workers", "0",
                                 "--no-wandb", "--label-smoothing", "0.1", "--mixup", "0.2",
                                 "--cutmix", "1", "--ema", "0.5"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert (config["label_smoothing"], config["mixup"], config["cutmix"], config["ema"]) == (0.1, 0.2, 1.0, 0.5)
