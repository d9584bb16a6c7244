"""`fastinat data demo`: the embedded digits dataset, its counts, layout and stability."""

from __future__ import annotations

from collections import Counter

from PIL import Image
from typer.testing import CliRunner

from conftest import tree_digest
from fastinat.recipes.cli import app

runner = CliRunner()


def test_demo_counts_and_layout(demo_data):
    train = Counter(p.parent.name for p in (demo_data / "train").rglob("*.png"))
    val = Counter(p.parent.name for p in (demo_data / "val").rglob("*.png"))
    assert sorted(train) == sorted(val) == [str(d) for d in range(10)]
    assert sum(train.values()) + sum(val.values()) == 1797
    for digit in train:  # a fixed 20% of every class is in val/
        n = train[digit] + val[digit]
        assert val[digit] == round(0.2 * n)
    img = Image.open(next((demo_data / "train" / "3").glob("*.png")))
    assert img.size == (32, 32) and img.mode == "RGB"


def test_demo_is_deterministic_and_idempotent(tmp_path, demo_data):
    dest = tmp_path / "digits"
    first = runner.invoke(app, ["data", "demo", str(dest)])
    assert first.exit_code == 0, first.output
    assert "Wrote 1,797 images" in first.output
    assert tree_digest(dest) == tree_digest(demo_data)  # same bytes as another write
    again = runner.invoke(app, ["data", "demo", str(dest)])
    assert again.exit_code == 0
    assert "Already present" in again.output


def test_demo_refuses_a_folder_with_other_files(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("user data")
    result = runner.invoke(app, ["data", "demo", str(dest)])
    assert result.exit_code == 2  # a usage mistake: the folder is not the kind the demo needs
    assert "already holds other files" in result.output
    assert "Traceback" not in result.output
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
