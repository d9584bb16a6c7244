"""Writes that fail (a full disk, a read-only or vanished folder, an unwritable cache) and Ctrl-C
in the middle of a report: one line, the right exit code, nothing half-written, and a run that
resumes from its last good epoch once the disk has space again."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from fastai.callback.core import Callback
from typer.testing import CliRunner

from conftest import demo_subset, tree_digest
from fastinat.recipes.cli import app

runner = CliRunner()
TINY = ["--size", "16", "--filters", "8,16", "--dense-units", "16", "--bs", "8", "--workers", "0",
        "--lr", "1e-2", "--no-augment", "--no-wandb"]


@pytest.fixture(scope="module")
def data(demo_data, tmp_path_factory):
    """Digits 0 to 2 of the demo, 10 train and 2 val images each: a run takes a second or two."""
    root = demo_subset(demo_data, tmp_path_factory.mktemp("writes") / "digits", 10, 2)
    for split in ("train", "val"):
        for digit in range(3, 10):
            shutil.rmtree(root / split / str(digit))
    return root


def scratch(data, out, *args):
    return runner.invoke(app, ["scratch", "--data", str(data), "--out", str(out), *TINY, *args])


class FullDisk:
    """Make writes of files named `name` fail with ENOSPC (the `nth` such write, counting from 1,
    and every one after it while `full`): half the bytes reach the disk, as on a real full disk."""

    def __init__(self, monkeypatch, name: str, nth: int = 1):
        import sys

        import fastinat.io as io

        self.name, self.nth, self.seen, self.full = name, nth, 0, False
        real = io.atomic_write

        def atomic_write(dest, write, **kw):
            if Path(dest).name != self.name:
                return real(dest, write, **kw)
            self.seen += 1
            self.full = self.full or self.seen >= self.nth

            def half_then_full(tmp):
                write(tmp)
                if self.full:
                    with open(tmp, "r+b") as fh:
                        fh.truncate(os.path.getsize(tmp) // 2)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            return real(dest, half_then_full, **kw)

        for module in [m for n, m in sys.modules.items() if n.startswith("fastinat")]:
            if getattr(module, "atomic_write", None) is real:  # `from .io import atomic_write` too
                monkeypatch.setattr(module, "atomic_write", atomic_write)

    def free(self) -> None:
        self.full, self.nth = False, 10**9


def one_line_error(result, *parts) -> str:
    """The single `Error:` line of a failed command (no traceback), checked to hold `parts`."""
    assert "Traceback" not in result.output and "Exception occured" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def finished_run(data, tmp_path_factory, name: str, epochs: int) -> Path:
    """A run trained to the end through the CLI, in a folder of its own."""
    out = tmp_path_factory.mktemp(name)
    result = scratch(data, out, "--epochs", str(epochs), "--name", name)
    assert result.exit_code == 0, result.output
    return out / name


@pytest.fixture(scope="module")
def whole(data, tmp_path_factory):
    """An uninterrupted 2-epoch run: what a resumed one must match."""
    return finished_run(data, tmp_path_factory, "whole", 2)


def same_results(a: Path, b: Path) -> None:
    ma, mb = metrics(a), metrics(b)
    for key in ("valid_accuracy", "valid_loss", "test_accuracy", "test_loss", "best_epoch", "epochs_trained"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-5, abs=1e-6), key
    assert (a / "history.csv").read_text().count("\n") == (b / "history.csv").read_text().count("\n")


def test_a_real_short_write_is_a_write_error_for_every_kind_of_file(tmp_path):
    """The operating system refuses the bytes (here a file size limit: EFBIG, as ENOSPC would):
    weights, checkpoints, JSON and reports all end in WriteError naming the file, with nothing
    left behind (safetensors' own writer raised a SafetensorError and a traceback)."""
    import resource
    import signal

    import torch

    from fastinat.errors import WriteError
    from fastinat.io import save_torch, save_weights, write_json

    model = torch.nn.Linear(1000, 100)  # 400 KB of weights
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        for name, write in (("model.safetensors", lambda p: save_weights(model, p)),
                            ("checkpoint.pt", lambda p: save_torch({"model": model.state_dict()}, p)),
                            ("big.json", lambda p: write_json(p, list(range(100_000))))):
            with pytest.raises(WriteError, match=f"Could not write {tmp_path / name}: File too large") as err:
                write(tmp_path / name)
            assert err.value.exit_code == 1
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert list(tmp_path.iterdir()) == []


# -- a full disk during training ---------------------------------------------------------------

@pytest.mark.parametrize("name,nth,resumes_after", [
    ("model.safetensors", 1, 0),  # the first save of the best weights (epoch 1)
    ("checkpoint.pt", 2, 1),      # the resume checkpoint of epoch 2: epoch 1 is the last good one
])
def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes(data, whole, tmp_path, monkeypatch, name,
                                                              nth, resumes_after):
    disk = FullDisk(monkeypatch, name, nth)
    result = scratch(data, tmp_path, "--epochs", "2", "--name", "cut")
    run = tmp_path / "cut"
    assert result.exit_code == 1, result.output
    one_line_error(result, f"Could not write {run / name}", "No space left on device", "free some space",
                   f"fastinat scratch --resume {run}")
    assert no_temporary_files(run) and not (run / "metrics.json").exists()
    if nth == 1:
        assert not (run / name).exists()  # never half a file
    disk.free()
    again = runner.invoke(app, ["scratch", "--resume", str(run)])
    assert again.exit_code == 0, again.output
    assert (f"after epoch {resumes_after} of 2" if resumes_after else "from its start") in again.output
    same_results(whole, run)
    assert no_temporary_files(run) and not (run / "checkpoint.pt").exists()


def test_a_full_disk_while_writing_the_test_report_keeps_no_part_of_it(data, whole, tmp_path, monkeypatch):
    disk = FullDisk(monkeypatch, "top_losses.png")  # the report's last file
    result = scratch(data, tmp_path, "--epochs", "2", "--name", "cut")
    run = tmp_path / "cut"
    assert result.exit_code == 1, result.output
    one_line_error(result, "top_losses.png", "No space left on device", f"--resume {run}")
    assert not (run / "report").exists() and not (run / "metrics.json").exists() and no_temporary_files(run)
    disk.free()
    again = runner.invoke(app, ["scratch", "--resume", str(run)])
    assert again.exit_code == 0, again.output
    same_results(whole, run)
    assert (run / "report" / "top_losses.png").is_file()


def test_a_full_disk_before_the_first_epoch_leaves_no_run_folder(data, tmp_path, monkeypatch):
    FullDisk(monkeypatch, "config.json")
    result = scratch(data, tmp_path, "--epochs", "1", "--name", "cut")
    assert result.exit_code == 1, result.output
    one_line_error(result, "config.json", "No space left on device", "run the same command again")
    assert not (tmp_path / "cut").exists()  # it held nothing to resume: the same command works again


# -- a read-only or vanished out folder -----------------------------------------------------------

def read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` read-only; as root (chmod stops nothing) make writes under it fail as they would."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.mkdir()
    except PermissionError:
        return
    probe.rmdir()
    real = os.mkdir

    def mkdir(path, *a, **k):
        if Path(path).parent == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)


def test_a_read_only_out_folder_is_one_line(data, tmp_path, monkeypatch):
    out = tmp_path / "ro"
    read_only(monkeypatch, out)
    try:
        result = scratch(data, out, "--epochs", "1", "--name", "x")
    finally:
        out.chmod(0o755)
    assert result.exit_code == 1, result.output
    one_line_error(result, f"Could not write {out / 'x'}", "Permission denied", "permissions")
    assert list(out.iterdir()) == []


class RemoveRunFolder(Callback):
    """The run folder disappears (deleted, or its drive unmounted) during epoch 2."""

    order = 1

    def before_epoch(self):
        if self.epoch == 1:
            shutil.rmtree(self.learn.path)


def test_a_vanished_run_folder_is_one_line_and_not_made_again(data, tmp_path):
    from fastinat.errors import WriteError
    from fastinat.train import train_scratch

    with pytest.raises(WriteError) as err:
        train_scratch(data=str(data), out=str(tmp_path), name="gone", size=16, filters=[8, 16], dense_units=16,
                      bs=64, workers=0, lr=1e-2, augment=False, wandb=False, epochs=3, cbs=[RemoveRunFolder()])
    assert err.value.exit_code == 1
    assert f"the folder {tmp_path / 'gone'} is gone" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "gone").exists()


# -- an unwritable cache -------------------------------------------------------------------------

def test_an_unwritable_cache_is_a_warning_and_the_run_goes_on(data, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be\n")  # stops root too
    monkeypatch.setenv("FASTINAT_CACHE", str(blocker))
    result = scratch(data, tmp_path, "--epochs", "1", "--name", "p", "--presize")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if "Not presizing" in line]
    assert len(warning) == 1 and re.match(  # one line, as the CLI shows every warning
        r"Warning: Not presizing: cannot write the presize cache .*not-a-folder.*\(UserWarning\)$", warning[0])
    assert (tmp_path / "p" / "metrics.json").is_file()
    assert blocker.read_text().startswith("a file")


def test_an_unwritable_feature_cache_keeps_the_features_in_memory(tmp_path, monkeypatch):
    """`--cache-features` with a cache that cannot be written: a warning, and the features this run
    computed are used from memory (the backbone is stubbed: only the cache's side is tested)."""
    import torch

    import fastinat.features as features

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be\n")
    monkeypatch.setenv("FASTINAT_CACHE", str(blocker))
    feats = {"train": torch.ones(4, 3), "train_y": torch.zeros(4).long()}
    monkeypatch.setattr(features, "augments", lambda dls: False)
    monkeypatch.setattr(features, "feature_key", lambda learn, views, seed: {"arch": "resnet10t", "size": 16})
    monkeypatch.setattr(features, "compute_features", lambda learn, views, progress: feats)
    with pytest.warns(UserWarning, match=r"Not caching the backbone features: cannot write .*not-a-folder"):
        got, path = features.load_or_compute(type("Learn", (), {"dls": None})(), progress=False)
    assert got is feats and path is None and blocker.read_text().startswith("a file")


# -- Ctrl-C in evaluate --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    return finished_run(data, tmp_path_factory, "r", 1)


@pytest.mark.parametrize("split,folder", [("valid", "report-valid"), ("test", "report")])
def test_ctrl_c_in_evaluate_leaves_no_partial_report(trained, monkeypatch, split, folder):
    """Ctrl-C while the report is written: exit 130, one line; a new report folder is not there at
    all, and an old one is exactly as it was."""
    import fastinat.report as report

    before = tree_digest(trained)
    written = []

    def interrupted(*args, **kwargs):
        written.extend(p.name for p in Path(args[5] if len(args) > 5 else kwargs["dest"]).parent.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_grid", interrupted)
    result = runner.invoke(app, ["evaluate", str(trained), "--split", split])
    assert result.exit_code == 130, result.output
    assert "Interrupted" in one_line_error(result)
    assert {"per_class.csv", "metrics.json", "confusion_matrix.png"} <= set(written)  # had begun
    assert tree_digest(trained) == before  # report-valid/ absent; report/ (from training) unchanged
    assert (folder == "report") == (trained / folder).is_dir()


def test_evaluate_replaces_an_old_report_whole(trained, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained / "report", old)
    (trained / "report" / "stale.txt").write_text("from an older evaluate\n")
    result = runner.invoke(app, ["evaluate", str(trained)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (trained / "report").iterdir())
    assert names == sorted(p.name for p in old.iterdir()) and no_temporary_files(trained)


# -- sweeps: Ctrl-C inside a trial's training, a full disk -----------------------------------------

@pytest.fixture
def sweep_config(tmp_path) -> Path:
    import yaml

    path = tmp_path / "grid.yaml"
    fixed = {"filters": [8], "dense-units": 8, "epochs": 1, "size": 16, "bs": 8, "workers": 0,
             "augment": False, "lr": 1.0e-2}
    path.write_text(yaml.safe_dump({
        "command": ["fastinat", "scratch"], "method": "grid", "metric": {"name": "valid_accuracy", "goal": "maximize"},
        "parameters": {**{k: {"value": v} for k, v in fixed.items()}, "dropout": {"values": [0.0, 0.3]}}}))
    return path


def test_ctrl_c_inside_a_trial_stops_the_sweep(data, sweep_config, tmp_path, monkeypatch):
    """Ctrl-C while a trial trains (train() turns it into Interrupted): the sweep stops, exit 130,
    and no next trial starts; --resume runs the cut trial again."""
    from fastinat.sweeps.run import EpochReport

    def ctrl_c(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochReport, "after_epoch", ctrl_c)
    args = ["sweep", str(sweep_config), "--data", str(data), "--out", str(tmp_path), "--name", "s", "--backend", "local"]
    cut = runner.invoke(app, args)
    assert cut.exit_code == 130, cut.output
    assert f"fastinat sweep --resume {tmp_path / 's'}" in one_line_error(cut)
    assert sorted(p.name for p in (tmp_path / "s" / "runs").iterdir() if not p.is_symlink()) == ["trial-000"]
    monkeypatch.undo()
    again = runner.invoke(app, ["sweep", "--resume", str(tmp_path / "s")])
    assert again.exit_code == 0, again.output
    with open(tmp_path / "s" / "leaderboard.csv") as fh:
        states = [line.split(",")[2] for line in fh.read().splitlines()[1:]]
    assert sorted(states) == ["complete", "complete", "failed"]  # the cut one is shown, and ran again


def test_a_full_disk_inside_a_trial_stops_the_sweep_in_one_line(data, sweep_config, tmp_path, monkeypatch):
    disk = FullDisk(monkeypatch, "history.csv")
    args = ["sweep", str(sweep_config), "--data", str(data), "--out", str(tmp_path), "--name", "s", "--backend", "local"]
    cut = runner.invoke(app, args)
    assert cut.exit_code == 1, cut.output
    one_line_error(cut, "history.csv", "No space left on device", f"fastinat sweep --resume {tmp_path / 's'}")
    assert "trial 1" not in cut.output  # the next trial would fail the same way: not started
    disk.free()
    results = runner.invoke(app, ["sweep", "--resume", str(tmp_path / "s"), "--count", "0"])
    assert results.exit_code == 0, results.output
    with open(tmp_path / "s" / "leaderboard.csv") as fh:
        rows = fh.read().splitlines()[1:]
    assert len(rows) == 1 and "failed" in rows[0] and "a file could not be written" in rows[0]
    from fastinat.sweeps.run import _finished, _study, open_sweep

    assert _finished(_study(*open_sweep(tmp_path / "s")[1:], seed=0)) == 0  # it runs again on --resume
