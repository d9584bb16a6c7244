"""`fastinat finetune` end to end: weights files, offline, gradual unfreezing, cached features, CLI.

Tiny timm models (resnet10t, vit_tiny) at 32 px with --no-pretrained or weights files the
tests write themselves: nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest
import timm
import torch
from fastai.callback.core import Callback, CancelFitException
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import InterruptIn
from fastinat import FastinatError
from fastinat.recipes.cli import app

runner = CliRunner()
TINY = ["--arch", "resnet10t", "--size", "32", "--bs", "64", "--workers", "0", "--no-augment",
        "--dense-units", "32", "--no-wandb"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]


def finetune(demo_data, out, *args):
    return runner.invoke(app, ["finetune", "--data", str(demo_data), "--out", str(out), *TINY, *args])


def options(demo_data, out, **kw):
    return {"data": str(demo_data), "out": str(out), "arch": "resnet10t", "size": 32, "bs": 64,
            "workers": 0, "augment": False, "dense_units": [32], "wandb": False, **kw}


def write_weights(path, arch="resnet10t", seed=0, **kw):
    """A randomly initialised timm state dict (classifier included), as a user's file would be."""
    torch.manual_seed(seed)
    state = timm.create_model(arch, pretrained=False, **kw).state_dict()
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return state


def run_dir(out):
    (folder,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    return folder


# -- the CLI on the demo ----------------------------------------------------------------------

def test_cli_run_on_the_demo_writes_a_complete_run(demo_data, tmp_path):
    result = finetune(demo_data, tmp_path, "--no-pretrained", "--freeze", "none", "--epochs", "2",
                      "--lr", "3e-3")
    assert result.exit_code == 0, result.output
    assert "model: resnet10t (timm), 4," in result.output  # trainable / total printed
    run = run_dir(tmp_path)
    for name in ("config.json", "valid_files.txt", "history.csv", "model.safetensors", "model.json",
                 "metrics.json"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint.pt").exists()
    card = json.loads((run / "model.json").read_text())
    assert card["kind"] == "finetune" and card["arch"] == "resnet10t"
    assert card["pretrained_weights"] is None
    assert card["normalize"]["mean"] != IMAGENET_MEAN  # random weights: the dataset's statistics
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5 and metrics["n_test"] == 359


def test_help_states_defaults_and_train_bn():
    result = runner.invoke(app, ["finetune", "--help"])
    assert result.exit_code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # unwrap rich's panels
    for expected in ("--arch", "--freeze-epochs", "--weights", "--cache-features",
                     "fastai's train_bn", "299 for inception_v3"):
        assert expected in text, expected


@pytest.mark.parametrize("arch,size", [("resnet50", 224), ("inception_v3", 299),
                                       ("legacy_xception", 299), ("vit_small_patch16_224", 224)])
def test_default_size_is_the_backbones_own(arch, size):
    from fastinat.models.backbones import default_size

    assert default_size(arch) == size


@pytest.mark.parametrize("arch", ["resnet50", "legacy_xception", "inception_v3", "efficientnet_b0",
                                  "convnext_tiny", "vit_small_patch16_224"])
def test_the_architectures_of_the_task_build_freeze_and_run(demo_data, arch):
    """Random weights at 96 px (ViT's fixed 224 px input is rebuilt for it): a forward pass
    and a backward pass that reaches the head and the last stage, not the frozen stem.
    (ConvNeXt's own head norm stays unused: fastai pools forward_features itself.)"""
    from fastinat import inat_dataloaders
    from fastinat.learner import finetune_learner

    dls = inat_dataloaders(demo_data, size=96, bs=4, workers=0, progress=False, augment=False)
    learn = finetune_learner(dls, arch, pretrained=False, freeze="last:1", dense_units=(8,))
    xb, yb = dls.one_batch()
    learn.model.train()
    learn.loss_func(learn.model(xb), yb).backward()
    body = list(learn.model[0].model.parameters())
    assert body[0].grad is None  # the stem is frozen
    assert sum(p.grad is not None for p in body) > 2  # the last stage learns
    assert all(p.grad is not None for p in learn.model[1].parameters())


# -- weights ----------------------------------------------------------------------------------

@pytest.mark.parametrize("train_bn", [False, True])
def test_weights_file_round_trip(small_demo, tmp_path, train_bn):
    """The backbone of the saved model is the file's, tensor for tensor, when it was frozen."""
    state = write_weights(tmp_path / "backbone.safetensors")
    result = finetune(small_demo, tmp_path / "runs", "--weights", str(tmp_path / "backbone.safetensors"),
                      "--freeze", "head", "--epochs", "1",
                      "--train-bn" if train_bn else "--no-train-bn")
    assert result.exit_code == 0, result.output
    run = run_dir(tmp_path / "runs")
    saved = load_file(str(run / "model.safetensors"))
    backbone = {k.removeprefix("0.model."): v for k, v in saved.items() if k.startswith("0.model.")}
    assert backbone and set(backbone) == {k for k in state if not k.startswith("fc.")}
    norms = {k for k in backbone if ".bn" in k or k.startswith("bn1.") or ".downsample.2." in k
             or k.startswith("conv1.1.") or k.startswith("conv1.4.")}
    for key, tensor in backbone.items():
        if train_bn and key in norms:
            continue
        assert torch.equal(tensor, state[key]), key
    if train_bn:  # fastai's train_bn: the batch-norm layers did train
        assert any(not torch.equal(backbone[k], state[k]) for k in norms if k.endswith(".weight"))
    card = json.loads((run / "model.json").read_text())
    assert card["normalize"]["mean"] == IMAGENET_MEAN  # the backbone's own statistics
    assert card["pretrained_weights"] == str((tmp_path / "backbone.safetensors").resolve())


def test_pytorch_state_dict_loads_too(demo_data, tmp_path):
    from fastinat import inat_dataloaders
    from fastinat.learner import finetune_learner

    state = write_weights(tmp_path / "backbone.pth", "vit_tiny_patch16_224")
    dls = inat_dataloaders(demo_data, size=32, bs=8, workers=0, progress=False)
    learn = finetune_learner(dls, "vit_tiny_patch16_224", weights=tmp_path / "backbone.pth")
    body = learn.model[0].model.state_dict()
    assert torch.equal(body["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert body["pos_embed"].shape[1] == 1 + 2 * 2  # resampled from 14x14 to the 2x2 grid of 32 px
    assert learn.card["model"]["timm_kwargs"] == {"img_size": 32}
    xb, _ = dls.one_batch()
    assert learn.model(xb).shape == (8, 10)


@pytest.mark.parametrize("file_arch,arch,message", [
    ("resnet18", "resnet10t", "does not fit resnet10t: it has no tensor 'conv1.0.weight'."),
    ("resnet18", "resnet50", "does not fit resnet50: 'layer1.0.conv1.weight' has shape [64, 64, 3, 3] "
                             "in the file but [64, 64, 1, 1] in the model."),
])
def test_mismatched_weights_file_names_the_first_key(demo_data, tmp_path, file_arch, arch, message):
    write_weights(tmp_path / "other.safetensors", file_arch)
    result = finetune(demo_data, tmp_path / "runs", "--weights", str(tmp_path / "other.safetensors"),
                      "--arch", arch)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unreadable_weights_file(demo_data, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    result = finetune(demo_data, tmp_path / "runs", "--weights", str(tmp_path / "junk.safetensors"))
    assert result.exit_code == 1 and "Cannot read the weights file" in result.output


def test_offline_pretrained_is_one_line_with_the_way_out(demo_data, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    result = finetune(demo_data, tmp_path / "runs", "--pretrained")
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        "Error: Cannot get the pretrained weights of resnet10t: no network, and they are not in the "
        "Hugging Face cache; pass a local file with --weights FILE, or train from random weights "
        "with --no-pretrained.")
    assert not (tmp_path / "runs").exists()


# -- gradual unfreezing -----------------------------------------------------------------------

class Watch(Callback):
    """Per epoch: do the backbone's conv weights train, and the learning rate of every group."""

    order = 99

    def before_fit(self):
        self.seen = []

    def after_batch(self):
        if self.training and self.iter == 1:
            conv = self.model[0].model.conv1[0].weight
            self.seen.append((conv.requires_grad, [h["lr"] for h in self.opt.hypers]))


def test_gradual_unfreezes_after_freeze_epochs_with_two_learning_rates(demo_data, tmp_path):
    from rich.console import Console

    from fastinat.train import train_finetune

    watch, console = Watch(), Console(record=True, width=200)
    run = train_finetune(**options(demo_data, tmp_path, pretrained=False, freeze="gradual",
                                   freeze_epochs=1, epochs=2, lr=1e-2), cbs=[watch], console=console)
    assert "epochs: 3 epochs in all, 1 head-only then 2 unfrozen" in console.export_text()  # as they run
    (frozen, lrs1), (thawed, lrs2), (still, _) = watch.seen
    assert not frozen and thawed and still
    assert len(lrs1) == 2 and lrs1[0] == pytest.approx(lrs1[1] / 10)  # fine_tune's slice(lr)
    assert lrs2[0] == pytest.approx(lrs2[1] / 100)  # slice(lr/100, lr)
    with open(run / "history.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2", "3"]


def test_gradual_run_resumes_after_the_switch_like_an_uninterrupted_one(small_demo, tmp_path):
    from fastinat.train import train_finetune

    opts = options(small_demo, tmp_path, pretrained=False, freeze="gradual", freeze_epochs=1,
                   epochs=2, lr=1e-2)
    whole = train_finetune(**opts, name="whole")
    with pytest.raises(FastinatError, match="Interrupted after epoch 2 of 3"):
        train_finetune(**opts, name="cut", cbs=[InterruptIn(epoch=2, at_batch=2)])
    result = runner.invoke(app, ["finetune", "--resume", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key in ("valid_accuracy", "valid_loss", "test_accuracy", "test_loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


# -- cached features ------------------------------------------------------------------------

class FirstLoss(Callback):
    order = 99

    def after_batch(self):
        if self.training:
            self.first = float(self.learn.loss.detach())
            raise CancelFitException


@pytest.fixture
def small_data(demo_data, tmp_path):
    """5 train and 2 TEST images per class: one batch of 40 holds the whole training set."""
    root = tmp_path / "small"
    for split, n in (("train", 5), ("val", 2)):
        for cls in sorted((demo_data / split).iterdir()):
            (root / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                shutil.copy(f, root / split / cls.name / f.name)
    return root


def test_cached_features_give_the_same_first_step_loss_as_live_ones(small_data):
    from fastai.torch_core import set_seed

    from fastinat import cached_learner, inat_dataloaders
    from fastinat.learner import finetune_learner

    losses = []
    for cached in (False, True):
        dls = inat_dataloaders(small_data, size=32, bs=40, workers=0, augment=False, progress=False)
        set_seed(0)
        learn = finetune_learner(dls, "resnet10t", pretrained=False, dense_units=(16,), dropout=0.0,
                                 freeze="head", train_bn=False)
        if cached:
            learn = cached_learner(learn, progress=False)
            assert learn.dls.feature_cache.is_file()
        first = FirstLoss()
        learn.fit(1, 1e-3, cbs=[first])
        losses.append(first.first)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_cache_features_cli_reuses_the_cache_and_saves_the_full_network(small_demo, tmp_path):
    write_weights(tmp_path / "backbone.safetensors")
    args = ["--weights", str(tmp_path / "backbone.safetensors"), "--cache-features", "--epochs", "2",
            "--lr", "1e-2"]
    first = finetune(small_demo, tmp_path / "runs", *args, "--name", "first")
    assert first.exit_code == 0, first.output
    assert "Computing backbone features once" in first.output
    again = finetune(small_demo, tmp_path / "runs", *args, "--name", "again")
    assert again.exit_code == 0, again.output
    assert "Computing backbone features" not in again.output  # read from the cache
    a, b = (json.loads((tmp_path / "runs" / n / "metrics.json").read_text()) for n in ("first", "again"))
    assert a["test_accuracy"] == b["test_accuracy"] and a["valid_loss"] == b["valid_loss"]
    saved = load_file(str(tmp_path / "runs" / "first" / "model.safetensors"))
    assert any(k.startswith("0.model.") for k in saved) and any(k.startswith("1.") for k in saved)
    config = json.loads((tmp_path / "runs" / "first" / "config.json").read_text())["config"]
    assert config["train_bn"] is False  # the cached features are the backbone exactly as loaded
    bigger = finetune(small_demo, tmp_path / "runs", *args, "--name", "bigger", "--size", "40")
    assert "Computing backbone features once" in bigger.output  # another size: other features
