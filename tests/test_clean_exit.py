"""No loader worker outlives the work it served: after `train()`, `evaluate`, `--cache-features`
and several runs in one process, no worker process, pool or pin-memory thread is left, and a CLI
run exits right after its last line. (On a GPU with torch <= 2.11 every leftover worker cost 5 s
at exit, one after another: runs that finished but never exited.)"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import demo_subset
from fastinat.data.workers import close_all_workers, running_pools
from fastinat.recipes.cli import app

runner = CliRunner()
FAST = {"size": 32, "epochs": 1, "augment": False, "workers": 2, "bs": 16, "wandb": False}


def leftovers() -> dict:
    """What a finished command must not leave: worker processes, pools, pin-memory threads."""
    return {"processes": len(multiprocessing.active_children()), "pools": running_pools(),
            "pin_memory_threads": sum("pin_memory" in t.name for t in threading.enumerate())}


NOTHING = {"processes": 0, "pools": 0, "pin_memory_threads": 0}


@pytest.fixture(scope="module")
def tiny(demo_data, tmp_path_factory):
    return demo_subset(demo_data, tmp_path_factory.mktemp("clean") / "digits", 3, 2)


def test_a_copy_of_a_loader_made_for_get_preds_is_closed_too(tiny):
    """fastai's get_preds iterates `dl.new(...)`, whose pool its original's close() never saw."""
    from fastinat import inat_dataloaders

    dls = inat_dataloaders(tiny, size=32, bs=8, workers=2, progress=False, augment=False)
    copy = dls.valid.new(shuffle=False, drop_last=False)
    for _ in copy:
        pass
    for _ in dls.valid:
        pass
    assert running_pools() == 2 and len(multiprocessing.active_children()) == 4
    dls.valid.close()
    assert running_pools() == 1  # the copy's pool
    assert close_all_workers() == 1
    assert leftovers() == NOTHING
    for _ in dls.valid:  # a loader whose pool was closed under it starts a new one
        pass
    assert running_pools() == 1
    close_all_workers()


def test_train_evaluate_and_cached_features_leave_no_workers(tiny, tmp_path, monkeypatch):
    from fastinat import train_finetune, train_scratch

    monkeypatch.chdir(tmp_path)  # nor anything in the current folder (lr_find's ./models once)
    before = leftovers()
    assert before == NOTHING, before
    for seed in (0, 1):  # several runs in one process do not add up
        train_scratch(data=str(tiny), out=str(tmp_path / "runs"), seed=seed, tta=seed == 1, **FAST)
        assert leftovers() == NOTHING
    result = runner.invoke(app, ["evaluate", str(tmp_path / "runs" / "latest"), "--data", str(tiny)])
    assert result.exit_code == 0, result.output
    assert leftovers() == NOTHING
    train_finetune(data=str(tiny), out=str(tmp_path / "runs"), arch="resnet10t", pretrained=False,
                   freeze="head", train_bn=False, cache_features=True, **FAST)
    assert leftovers() == NOTHING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_cli_run_exits_right_after_its_last_line(tiny, tmp_path):
    fastinat = Path(sys.executable).with_name("fastinat")
    cmd = [str(fastinat), "scratch", "--data", str(tiny), "--size", "32", "--epochs", "1", "--no-augment",
           "--workers", "2", "--out", str(tmp_path / "runs"), "--no-wandb"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    last, lines = time.monotonic(), []
    for line in proc.stdout:
        last = time.monotonic()
        lines.append(line)
    proc.wait(timeout=120)
    assert proc.returncode == 0, "".join(lines)
    # interpreter teardown is a second or two, more on a busy 2-core machine; a worker left to
    # the exit handlers cost 5 s each (torch <= 2.11, pinned memory), so this is far below that
    assert time.monotonic() - last < 15, "the process lived on after its last line"
