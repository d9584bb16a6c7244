"""`fastinat scratch` end to end on the demo digits: run folder, options, determinism, resume, W&B."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import InterruptIn
from fastinat import FastinatError
from fastinat.recipes.cli import app

runner = CliRunner()
TINY = ["--size", "16", "--filters", "16,32", "--dense-units", "32", "--bs", "64", "--workers", "0",
        "--lr", "1e-2", "--no-wandb"]


def scratch(demo_data, out, *args):
    return runner.invoke(app, ["scratch", "--data", str(demo_data), "--out", str(out), *TINY, *args])


def tiny_options(demo_data, out, **kw):
    return {"data": str(demo_data), "out": str(out), "size": 16, "filters": [16, 32],
            "dense_units": 32, "bs": 64, "workers": 0, "lr": 1e-2, "wandb": False, **kw}


# -- the Learner ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dls(demo_data):
    from fastinat import inat_dataloaders

    return inat_dataloaders(demo_data, size=16, bs=32, workers=0, progress=False)


def test_every_parameter_is_in_the_optimizer_and_the_head_learns(tiny_dls):
    from fastinat.learner import scratch_learner

    learn = scratch_learner(tiny_dls, filters=[8, 16], dense_units=16)
    learn.create_opt()
    in_opt = {id(p) for group in learn.opt.param_lists for p in group}
    assert in_opt == {id(p) for p in learn.model.parameters()}
    head = [p.detach().clone() for p in learn.model.head.parameters()]
    xb, yb = tiny_dls.one_batch()
    learn.loss_func(learn.model(xb), yb).backward()
    learn.opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(head, learn.model.head.parameters(), strict=True))


@pytest.mark.parametrize("l2", [0.0, 5e-4])
def test_l2_reaches_every_parameter(tiny_dls, l2):
    from fastinat.learner import scratch_learner

    learn = scratch_learner(tiny_dls, filters=[8, 16], dense_units=16, l2=l2)
    learn.create_opt()
    learn.opt.set_hypers(wd=learn.wd, lr=1e-2)
    assert all(h["wd"] == l2 for h in learn.opt.hypers)
    before = [p.detach().clone() for p in learn.model.parameters()]
    for p in learn.model.parameters():  # no data gradient: only the L2 term can move a weight
        p.grad = torch.zeros_like(p)
    learn.opt.step()
    moved = [not torch.equal(a, b) for a, b in zip(before, learn.model.parameters(), strict=True)]
    nonzero = [bool(a.abs().sum()) for a in before]  # zero-initialised biases have nothing to decay
    if l2:
        assert all(m for m, nz in zip(moved, nonzero, strict=True) if nz)  # BN, biases, head too
    else:
        assert not any(moved)


# -- the CLI run -----------------------------------------------------------------------------

def test_cli_run_writes_the_complete_run_folder(demo_data, tmp_path):
    result = scratch(demo_data, tmp_path, "--epochs", "2", "--name", "tiny", "--no-augment")
    assert result.exit_code == 0, result.output
    run = tmp_path / "tiny"
    assert "parameters" in result.output and "TEST (val/)" in result.output
    assert "epoch 1/2" in result.output and "epoch 2/2" in result.output
    assert "\r" not in result.output  # no progress-bar fragments in a log
    config = json.loads((run / "config.json").read_text())
    assert config["command"] == "scratch" and config["config"]["filters"] == [16, 32]
    assert {"python", "torch", "fastai", "timm", "fastinat"} <= set(config["versions"])
    assert config["device"].startswith("cpu")
    valid = (run / "valid_files.txt").read_text().splitlines()
    assert len(valid) == 287 and all(v.startswith("train/") for v in valid)
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "valid_loss", "valid_accuracy", "valid_f1", "time"} <= set(rows[0])
    card = json.loads((run / "model.json").read_text())
    assert card["classes"] == [str(d) for d in range(10)] and card["input_size"] == 16
    assert card["model"]["filters"] == [16, 32] and len(card["normalize"]["mean"]) == 3
    from safetensors.torch import load_file

    assert "head.5.weight" in load_file(str(run / "model.safetensors"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("valid_accuracy", "valid_loss", "test_accuracy", "test_loss"):
        assert 0 <= metrics[key] < 10
    assert metrics["test_accuracy"] > 0.3  # two epochs of a tiny CNN already learn digits
    assert not (run / "checkpoint.pt").exists()
    assert not (tmp_path / "wandb").exists() and not (run / "wandb").exists()


def test_config_file_sets_defaults_and_flags_override(small_demo, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("epochs: 1\ndense-units: 12\nactivation: silu\n")
    result = scratch(small_demo, tmp_path, "--config", str(cfg), "--activation", "mish", "--name", "c")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "c" / "config.json").read_text())["config"]
    assert saved["epochs"] == 1 and saved["activation"] == "mish"
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    result = scratch(small_demo, tmp_path, "--config", str(bad))
    assert result.exit_code == 2 and "Unknown option 'epoch' (did you mean epochs?)" in result.output


def test_same_seed_same_split_and_first_epoch(small_demo, tmp_path):
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert scratch(small_demo, tmp_path, "--epochs", "1", "--seed", seed, "--name", name).exit_code == 0

    def first(name):
        with open(tmp_path / name / "history.csv") as fh:
            return next(csv.DictReader(fh))["train_loss"]

    split = {n: (tmp_path / n / "valid_files.txt").read_text() for n in "abc"}
    assert split["a"] == split["b"] != split["c"]
    assert first("a") == first("b") != first("c")


# -- resume ----------------------------------------------------------------------------------

def test_interrupt_and_resume_equals_an_uninterrupted_run(small_demo, tmp_path):
    from fastinat.train import train_scratch

    opts = tiny_options(small_demo, tmp_path, epochs=3)
    whole = train_scratch(**opts, name="whole")
    with pytest.raises(FastinatError) as err:
        train_scratch(**opts, name="cut", cbs=[InterruptIn(epoch=1)])
    assert err.value.exit_code == 130
    assert "Interrupted after epoch 1 of 3" in str(err.value)
    cut = tmp_path / "cut"
    assert (cut / "checkpoint.pt").exists() and not (cut / "metrics.json").exists()
    result = runner.invoke(app, ["scratch", "--resume", str(cut)])
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.output
    with open(cut / "history.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2", "3"]
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    for key in ("valid_accuracy", "valid_loss", "test_accuracy", "test_loss", "best_epoch"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    again = runner.invoke(app, ["scratch", "--resume", str(cut)])
    assert again.exit_code == 2 and "already finished" in again.output


def test_resume_refuses_other_options(tmp_path):
    result = runner.invoke(app, ["scratch", "--resume", str(tmp_path), "--epochs", "3"])
    assert result.exit_code == 2 and "drop --epochs" in result.output


# -- W&B ---------------------------------------------------------------------------------

def test_wandb_offline_without_credentials(small_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no credentials
    args = [a for a in TINY if a != "--no-wandb"]
    result = runner.invoke(app, ["scratch", "--data", str(small_demo), "--out", str(tmp_path), *args,
                                 "--epochs", "1", "--name", "w", "--wandb"], input=None)
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert "wandb sync" in result.output
    assert json.loads((tmp_path / "w" / "config.json").read_text())["wandb_id"]


def test_lr_auto_uses_lr_find(small_demo, tmp_path):
    args = [a for a in TINY]
    args[args.index("--lr") + 1] = "auto"
    result = runner.invoke(app, ["scratch", "--data", str(small_demo), "--out", str(tmp_path), *args,
                                 "--epochs", "1", "--name", "auto"])
    assert result.exit_code == 0, result.output
    assert "lr_find suggests lr=" in result.output
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert saved["config"]["lr"] == "auto" and 1e-7 < saved["lr_used"] < 10
    assert sorted(p.name for p in (tmp_path / "auto").iterdir() if p.suffix == ".pth") == []


def test_configure_learner_sets_up_every_run_the_same_way(tiny_dls):
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.progress import ProgressCallback

    from fastinat.callbacks.memory import TrimBeforeFork
    from fastinat.learner import scratch_learner
    from fastinat.train import configure_learner

    learn = scratch_learner(tiny_dls, filters=[8, 16], dense_units=16)
    assert configure_learner(learn) == "fp32"  # no CUDA here: fp32, never CPU bf16
    kinds = {type(cb) for cb in learn.cbs}
    assert {ChannelsLast, TrimBeforeFork} <= kinds and ProgressCallback not in kinds


def test_early_stop_waits_patience_epochs_then_stops_before_the_next():
    from types import SimpleNamespace

    from fastai.callback.core import CancelFitException

    from fastinat.callbacks.tracker import EarlyStop

    stop = EarlyStop(patience=2)
    stop.learn = SimpleNamespace(resume_epoch=0, epoch=0, epoch_record=None)
    for epoch, acc in enumerate([0.5, 0.6, 0.55, 0.6, 0.7], start=1):
        stop.learn.epoch = epoch - 1
        if stop.stopped_epoch is not None:
            with pytest.raises(CancelFitException):
                stop.before_epoch()
            break
        stop.before_epoch()
        stop.learn.epoch_record = {"epoch": epoch, "valid_accuracy": acc}
        stop.after_epoch()
    assert stop.stopped_epoch == 4  # 0.6 at epoch 2, then two epochs without better
    resumed = EarlyStop(patience=2)
    resumed.load_state(stop.state())  # a resumed run stops at the same place
    resumed.learn = SimpleNamespace(resume_epoch=4, epoch=4, epoch_record=None)
    with pytest.raises(CancelFitException):
        resumed.before_epoch()
