"""`fastinat data check` and the layout rules every loader shares; the dataset is never touched."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from conftest import photo, tree_digest
from fastinat.recipes.cli import app

runner = CliRunner()


def check(path, *args):
    return runner.invoke(app, ["data", "check", str(path), *args])


def test_clean_demo_passes(demo_data):
    before = tree_digest(demo_data)
    result = check(demo_data)
    assert result.exit_code == 0, result.output
    assert "1,438" in result.output and "359" in result.output
    assert "every image readable" in result.output
    assert tree_digest(demo_data) == before


@pytest.mark.parametrize("use_cache", [True, False])
def test_finds_exactly_the_planted_files(odd_dataset, use_cache):
    root, planted = odd_dataset
    before = tree_digest(root)
    for _ in range(2):  # the second run answers from the check cache
        result = check(root, *([] if use_cache else ["--no-cache"]))
        assert result.exit_code == 1
        listed = {line.strip().split(": ")[0] for line in result.output.splitlines()
                  if line.startswith("  ") and ": " in line}
        assert listed == {str(p) for p in planted}
        assert "4 unusable file(s)" in result.output
        assert "Traceback" not in result.output
    assert tree_digest(root) == before


def test_check_cache_notices_a_changed_file(odd_dataset):
    root, planted = odd_dataset
    assert check(root).exit_code == 1
    for p in planted:
        p.unlink()
    photo(30, 30).save(root / "val" / "Aves" / "empty.jpg")  # broken file replaced by a good one
    assert check(root).exit_code == 0


def _layout(tmp_path, train_classes, val_classes, empty=()):
    root = tmp_path / "ds"
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            if (split, cls) not in empty:
                photo().save(root / split / cls / "a.jpg")
    return root


@pytest.mark.parametrize("case,code,message", [
    ("missing", 2, "does not exist"),
    ("file", 2, "is a file"),
    ("no_val", 2, "has no val/ folder"),
    ("no_train", 2, "has no train/ folder"),
    ("classes_differ", 1, "only in train/: Fungi; only in val/: Mammalia"),
    ("empty_class", 1, "class folder val/Aves is empty"),
])
def test_bad_layouts(tmp_path, case, code, message):
    if case == "missing":
        root = tmp_path / "nope"
    elif case == "file":
        root = tmp_path / "file.zip"
        root.write_bytes(b"PK")
    elif case == "no_val":
        root = _layout(tmp_path, ["Aves"], ["Aves"])
        shutil.rmtree(root / "val")
    elif case == "no_train":
        root = _layout(tmp_path, ["Aves"], ["Aves"])
        shutil.rmtree(root / "train")
    elif case == "classes_differ":
        root = _layout(tmp_path, ["Aves", "Fungi"], ["Aves", "Mammalia"])
    else:
        root = _layout(tmp_path, ["Aves"], ["Aves"], empty={("val", "Aves")})
    before = tree_digest(root) if root.is_dir() else None
    result = check(root)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output
    if before is not None:
        assert tree_digest(root) == before


def test_default_path_says_how_to_get_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["data", "check"])
    assert result.exit_code == 2
    assert "fastinat data download" in result.output and "fastinat data demo" in result.output
    assert len(result.output.strip().splitlines()) == 1
