"""Hostile datasets through the CLI: nested class folders, hidden and junk files, links, loops,
broken files, tiny classes, a train set smaller than a batch, and a loss that overflows.

One dataset (`hostile`) holds most of it, trained once for the module; each test checks one
behaviour of that run or of another command on the same data.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import jpeg_bytes, photo, tree_digest
from fastinat.recipes.cli import app

runner = CliRunner()
TINY = ["--size", "16", "--filters", "8,16", "--dense-units", "16", "--workers", "0", "--no-wandb",
        "--lr", "1e-2"]
#: What Python's own warning format puts under a warning: "file.py:123: Category: text".
SOURCE_LINE = re.compile(r"\.py:\d+: \w+")


def _img(path: Path, seed: int, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    photo(24, 20, seed).save(path, fmt)
    return path


def make_hostile(root: Path) -> dict:
    """Write the hostile dataset; return what a correct reader must find in it."""
    aves, elsewhere = root / "train" / "Aves", root.parent / f"{root.name}-fungi"
    usable = [_img(aves / "a.jpg", 1), _img(aves / "b.jpg", 2), _img(aves / "UPPER.JPG", 3, "JPEG"),
              _img(aves / "c.jpeg", 4), _img(aves / "sub" / "a.jpg", 5),  # same name, in a subfolder
              _img(aves / "sub" / "deeper" / "d.PNG", 6, "PNG"), _img(aves / "e.Png", 7, "PNG")]
    fungi = [_img(elsewhere / f"f{i}.jpg", 10 + i) for i in range(4)] + [_img(elsewhere / "more" / "g.jpg", 20)]
    (root / "train").mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, root / "train" / "Fungi")  # a class folder that is a link
    usable += [root / "train" / "Fungi" / f.relative_to(elsewhere) for f in fungi]
    usable.append(_img(root / "train" / "Mammalia" / "only.jpg", 30))  # too small for a validation image
    # never data: hidden files and folders, macOS and Windows junk, link loops
    (aves / "._a.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (aves / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    _img(aves / ".thumbnails" / "t.jpg", 40)
    _img(root / "train" / "__MACOSX" / "Aves" / "x.jpg", 41)
    (aves / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    os.symlink(".", aves / "sub" / "self")  # a loop
    if hasattr(os, "mkfifo"):
        os.mkfifo(aves / "pipe.jpg")  # opening it would wait forever: not a file, never listed
    os.symlink("../..", aves / "sub" / "up")  # a link back up to train/
    # left out, each with a reason: broken images, a non-image, a file in no class folder
    skipped = [aves / f"broken{i:02d}.jpg" for i in range(12)]
    for i, p in enumerate(skipped):
        p.write_bytes(b"" if i % 2 else jpeg_bytes(photo(24, 20, i))[:60])
    os.symlink(root / "gone.jpg", aves / "dangling.jpg")  # a link to nothing: unreadable
    skipped.append(aves / "dangling.jpg")
    (aves / "notes.txt").write_text("seen at the lake\n")
    (root / "train" / "README.txt").write_text("my birds\n")
    skipped += [aves / "notes.txt", root / "train" / "README.txt"]
    for cls in ("Aves", "Fungi", "Mammalia"):
        for i in range(2):
            usable.append(_img(root / "val" / cls / ("nested" if i else "") / f"v{i}.jpg", 50 + i))
    return {"usable": usable, "skipped": skipped,
            "counts": {"train": {"Aves": 7, "Fungi": 5, "Mammalia": 1},
                       "val": {"Aves": 2, "Fungi": 2, "Mammalia": 2}}}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(dataset root, what is in it, a finished scratch run on it, that run's output)."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "ds"
    truth = make_hostile(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTINAT_CACHE", str(base / "cache"))
        mp.setenv("WANDB_MODE", "disabled")
        before = tree_digest(base / "ds-fungi")
        result = runner.invoke(app, ["scratch", "--data", str(root), "--out", str(base / "runs"),
                                     "--name", "r", "--bs", "64", "--epochs", "2", "--presize", *TINY])
        assert result.exit_code == 0, result.output
        assert tree_digest(base / "ds-fungi") == before
    return root, truth, base / "runs" / "r", result.output


def _usable_train(truth, root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in truth["usable"] if p.relative_to(root).parts[0] == "train"}


def test_data_check_counts_nested_images_and_lists_exactly_the_unusable_files(hostile):
    root, truth, _, _ = hostile
    before = tree_digest(root / "val")
    result = runner.invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 1, result.output
    rows = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:4]]
            for ln in result.output.splitlines() if ln.count("│") == 4}
    for cls, n in truth["counts"]["train"].items():
        assert rows[cls] == [str(n), str(truth["counts"]["val"][cls])]
    listed = {ln.strip().split(": ")[0] for ln in result.output.splitlines() if ln.startswith("  ")}
    assert listed == {str(p) for p in truth["skipped"][:-1]}  # README.txt: a note, not a problem
    assert "note: 1 file directly in train/ or val/ belongs to no class folder and is not used" in result.output
    assert "._a.jpg" not in result.output and "DS_Store" not in result.output
    assert "__MACOSX" not in result.output and "Thumbs.db" not in result.output
    assert tree_digest(root / "val") == before


def test_training_uses_nested_and_linked_images_and_one_smaller_batch(hostile):
    root, truth, run, output = hostile
    expected = _usable_train(truth, root)
    valid = set((run / "valid_files.txt").read_text().split())
    assert valid <= expected and len(valid) == 2  # 1 Aves + 1 Fungi; Mammalia has one image
    n_train = len(expected) - len(valid)
    assert f"data: {n_train} train / 2 valid / 6 TEST images, 3 classes" in output
    assert f"Warning: Only {n_train} training image(s), fewer than the batch size 64: each epoch " \
           f"trains on one batch of {n_train}." in output
    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert len(rows) == 2
    assert all(0 < float(r.split(",")[1]) < 100 for r in rows)  # a finite train loss every epoch
    assert (run / "model.safetensors").is_file()


def test_presized_copies_of_equal_names_in_subfolders_do_not_collide(hostile):
    root, truth, run, _ = hostile
    copies = list((run.parent.parent / "cache" / "presize").rglob("*.npy"))
    assert len(copies) == len(truth["usable"]) == 19  # train/Aves/a.jpg and train/Aves/sub/a.jpg: two


def test_a_class_without_a_validation_image_is_one_warning(hostile):
    *_, output = hostile
    lines = [ln for ln in output.splitlines() if "validation image" in ln]
    assert lines == ["Warning: Class Mammalia has no validation image (too few images in train/ for "
                     "the split), so it is not validated during training."]


def test_skipped_files_are_one_capped_line_and_listed_in_the_run_folder(hostile):
    root, truth, run, output = hostile
    lines = [ln for ln in output.splitlines() if "Skipping" in ln]
    assert len(lines) == 1
    line = lines[0]
    rel = sorted(p.relative_to(root).as_posix() for p in truth["skipped"])
    assert line.startswith(f"Warning: Skipping {len(rel)} unusable file(s) in {root}: "
                           + ", ".join(rel[:10]) + f" and {len(rel) - 10} more; ")
    assert line.endswith(f"the full list, with the reasons: {run / 'skipped_files.txt'}.")
    listing = dict(ln.split("\t") for ln in (run / "skipped_files.txt").read_text().splitlines())
    assert set(listing) == {str(p) for p in truth["skipped"]}
    assert listing[str(root / "train" / "Aves" / "notes.txt")] == "not an image file (extension .txt)"
    assert listing[str(root / "train" / "README.txt")] == "not in a class folder"
    assert "empty file" in listing[str(root / "train" / "Aves" / "broken01.jpg")]
    assert not SOURCE_LINE.search(output) and "warnings.warn" not in output


def test_predict_walks_a_folder_like_training_does(hostile, tmp_path):
    root, truth, run, _ = hostile
    folder = root / "train" / "Aves"
    result = runner.invoke(app, ["predict", str(run), str(folder), "--json"])
    records = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    paths = {Path(r["path"]).relative_to(root).as_posix() for r in records}
    want = {p for p in _usable_train(truth, root) if p.startswith("train/Aves/")}
    broken = {p.relative_to(root).as_posix() for p in truth["skipped"] if p.suffix == ".jpg"}
    assert paths == want | broken  # subfolders in; ._a.jpg, .DS_Store, Thumbs.db, notes.txt, loops out
    assert {r["path"] for r in records if "error" in r} == {str(root / p) for p in broken}
    assert result.exit_code == 1  # the broken .jpg files are errors, as before
    only_good = tmp_path / "photos"
    for p in (folder / "sub").rglob("*"):
        if p.is_file() and not p.is_symlink():
            _img(only_good / p.relative_to(folder), 0)
    (only_good / "._x.jpg").write_bytes(b"\x00\x05\x16\x07")
    (only_good / ".DS_Store").write_bytes(b"Bud1")
    clean = runner.invoke(app, ["predict", str(run), str(only_good), "--json"])
    assert clean.exit_code == 0, clean.output
    assert sorted(json.loads(ln)["path"] for ln in clean.output.splitlines()) == \
        [str(only_good / "sub" / "a.jpg"), str(only_good / "sub" / "deeper" / "d.PNG")]


def test_explain_keeps_one_picture_per_image_of_equal_names(hostile, tmp_path):
    _, _, run, _ = hostile
    photos = tmp_path / "photos"
    for i, rel in enumerate(["x.jpg", "more/x.jpg", "y.jpg"]):
        _img(photos / rel, i)
    (photos / "._x.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS junk: not explained
    result = runner.invoke(app, ["explain", str(run), str(photos), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["more_x-gradcam.png", "x.jpg-gradcam.png", "y-gradcam.png"]


def test_evaluate_names_the_skipped_files_even_with_python_warnings_ignored(hostile):
    import warnings

    root, truth, run, _ = hostile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the filter PYTHONWARNINGS=ignore (or -W ignore) installs
        result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "Skipping" in ln]
    assert len(lines) == 1 and f"Skipping {len(truth['skipped'])} unusable file(s)" in lines[0]
    assert str(run / "report" / "skipped_files.txt") in lines[0]
    assert len((run / "report" / "skipped_files.txt").read_text().splitlines()) == len(truth["skipped"])
    report = json.loads((run / "report" / "metrics.json").read_text())
    assert sum(r["support"] for r in report["per_class"]) == 6  # val/Fungi/nested/v1.jpg counted too


def test_third_party_warnings_are_one_line_without_source(hostile, monkeypatch):
    from PIL import Image

    root, _, run, _ = hostile
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 24 x 20 = 480 pixels: a PIL bomb warning
    result = runner.invoke(app, ["predict", str(run), str(root / "val" / "Aves" / "v0.jpg")])
    warned = [ln for ln in result.output.splitlines() if "DecompressionBombWarning" in ln]
    assert warned and all(ln.startswith("Warning: Image size (480 pixels) exceeds limit") for ln in warned)
    assert not SOURCE_LINE.search(result.output) and "warn(" not in result.output
    assert result.exit_code == 0, result.output


def test_classes_too_small_for_a_validation_split_still_give_a_model(tmp_path):
    root = tmp_path / "ds"
    for i, c in enumerate(("a", "b", "c")):
        for split in ("train", "val"):
            _img(root / split / c / "only.png", i, "PNG")
    result = runner.invoke(app, ["scratch", "--data", str(root), "--out", str(tmp_path / "runs"), "--name", "r",
                                 "--epochs", "2", "--patience", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert "Warning: 3 classes have no validation image (too few images in train/ for the split), so they " \
           "are not validated during training: a, b, c." in result.output
    assert "data: 3 train / 0 valid / 3 TEST images" in result.output
    run = tmp_path / "runs" / "r"
    assert len((run / "history.csv").read_text().splitlines()) == 3  # no early stop without a validation set
    assert json.loads((run / "model.json").read_text())["best"] == {"valid_accuracy": None, "epoch": 2}
    predicted = runner.invoke(app, ["predict", str(run), str(root / "val"), "--json"])
    assert predicted.exit_code == 0 and len(predicted.output.splitlines()) == 3, predicted.output


# -- a loss that is not a number ----------------------------------------------------------------

def _small(root: Path) -> Path:
    """Two classes, 8 train and 2 val images each."""
    for split, n in (("train", 8), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _img(root / split / c / f"{i}.jpg", i + (10 if c == "b" else 0))
    return root


def test_an_overflowing_loss_stops_the_run_with_one_line(tmp_path):
    root = _small(tmp_path / "ds")
    result = runner.invoke(app, ["scratch", "--data", str(root), "--out", str(tmp_path / "runs"),
                                 "--name", "r", "--bs", "4", "--epochs", "3", *TINY, "--lr", "1e30"])
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    m = re.search(r"The (training|validation) loss of epoch (\d) is (nan|inf|-inf), not a finite number, "
                  r"so the run stopped: the learning rate \(1e\+30\) is probably too high; start a new run "
                  r"with a lower --lr", errors[0])
    assert m, errors[0]
    epoch, run = int(m.group(2)), tmp_path / "runs" / "r"
    history = (run / "history.csv").read_text().splitlines()[1:] if (run / "history.csv").exists() else []
    assert len(history) == epoch - 1  # the failed epoch is in no file of the run folder
    assert not (run / "metrics.json").exists()


def test_a_nan_training_loss_keeps_the_run_folder_resumable(tmp_path):
    import torch
    from fastai.callback.core import Callback

    import fastinat
    from fastinat import FastinatError

    class NanLossIn(Callback):
        order = 1

        def after_loss(self):
            if self.training and self.epoch == 1:
                self.learn.loss_grad = self.learn.loss_grad * torch.nan
                self.learn.loss = self.learn.loss * torch.nan

    with pytest.raises(FastinatError, match=r"^The training loss of epoch 2 is nan, .* \(\S+ keeps epoch 1\)"):
        fastinat.train_scratch(data=str(_small(tmp_path / "ds")), out=str(tmp_path), name="r", size=16,
                               filters=[8], dense_units=16, bs=4, workers=0, epochs=3, wandb=False,
                               cbs=[NanLossIn()], console=None)
    run = tmp_path / "r"
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header + epoch 1
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert json.loads((run / "model.json").read_text())["best"]["epoch"] == 1


# -- layouts that cannot train: one line each -----------------------------------------------------

def _two_classes(root: Path) -> Path:
    for split in ("train", "val"):
        for c in ("Aves", "Fungi"):
            for i in range(3):
                _img(root / split / c / f"{i}.jpg", i)
    return root


@pytest.mark.parametrize("case,message", [
    ("empty_class", "class folder train/Fungi is empty."),
    ("only_non_images", "class folder train/Fungi has no readable image."),
    ("only_hidden", "class folder train/Fungi is empty."),
    ("val_only_class", "class folders differ between train/ and val/ (only in val/: Mammalia)."),
    ("self_loop_only", "class folder train/Fungi is empty."),
])
def test_layouts_that_cannot_train_end_in_one_line(tmp_path, case, message):
    import shutil

    root = _two_classes(tmp_path / "ds")
    fungi = root / "train" / "Fungi"
    shutil.rmtree(fungi)
    fungi.mkdir()
    if case == "only_non_images":
        (fungi / "list.csv").write_text("a,b\n")
        (fungi / "sub").mkdir()
        (fungi / "sub" / "notes.md").write_text("#\n")
    elif case == "only_hidden":
        (fungi / "._0.jpg").write_bytes(b"\x00\x05\x16\x07")
        _img(fungi / ".cache" / "0.jpg", 0)
    elif case == "val_only_class":
        _img(fungi / "0.jpg", 0)
        _img(root / "val" / "Mammalia" / "0.jpg", 0)
    elif case == "self_loop_only":
        os.symlink(".", fungi / "loop")
    result = runner.invoke(app, ["scratch", "--data", str(root), "--out", str(tmp_path / "runs"), *TINY])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"Error: {root}: {message}"
    assert not (tmp_path / "runs").exists()


def test_split_of_a_flat_dataset_is_unchanged(demo_data):
    """The seeded split of the demo equals the one fastinat saved before subfolders counted."""
    from fastinat.data.check import scan_dataset
    from fastinat.data.split import stratified_split

    scan = scan_dataset(demo_data)
    _, valid = stratified_split(scan.files["train"], 0.2, 42)
    saved = (Path(__file__).parent / "fixtures" / "scratch-v0" / "valid_files.txt").read_text().split()
    assert sorted(p.relative_to(demo_data).as_posix() for p in valid) == saved
