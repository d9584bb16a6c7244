"""Test-time augmentation (`--tta`): the views, their average, and the CLI numbers it adds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fastinat.config import TTA_VIEWS
from fastinat.recipes.cli import app

runner = CliRunner()


def test_tta_views_are_the_plain_view_its_mirror_and_four_corners():
    import cv2

    from fastinat.data.augment import eval_pixels, tta_pixels

    a = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)  # landscape, odd sides
    views = tta_pixels(a, 14)
    assert views.shape == (len(TTA_VIEWS), 14, 14, 3) == (6, 14, 14, 3) and views.dtype == np.uint8
    assert (views[0] == eval_pixels(a, 14)).all()
    assert (views[1] == views[0][:, ::-1]).all()
    big = eval_pixels(a, 16)  # round(14 * 8 / 7)
    assert (views[2] == big[:14, :14]).all() and (views[3] == big[:14, 2:]).all()
    assert (views[4] == big[2:, :14]).all() and (views[5] == big[2:, 2:]).all()
    assert len({v.tobytes() for v in views}) == 6  # six different views
    assert (cv2.flip(views[0], 1) == views[1]).all()


class ViewDependent(nn.Module):
    """A linear model on the raw pixels: every view of an image gets different logits."""

    def __init__(self, size: int, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * size * size, classes)
        self.fastinat_card = {"input_size": size, "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
                              "classes": [f"c{i}" for i in range(classes)]}

    def forward(self, x):
        return self.fc(x.flatten(1)) * 5


def test_tta_averages_the_softmax_of_every_view(demo_data):
    from fastinat import predict
    from fastinat.inference import EvalTransform, predict_batches

    files = sorted((demo_data / "val" / "3").iterdir())[:5] + [demo_data / "missing.png"]
    model = ViewDependent(16, 4)
    transform = EvalTransform(model.fastinat_card)
    got = list(predict_batches(model, files, bs=2, progress=False, threads=2, tta=True))
    assert got[-1][1] is None and got[-1][2] == "no such file"
    for path, probs, _ in got[:-1]:
        views = transform.views(path)
        with torch.no_grad():  # each view alone through the model
            expected = torch.stack([torch.softmax(model(transform.batch([v])), 1)[0] for v in views])
        assert probs.shape == (6, 4)
        assert torch.allclose(probs, expected, atol=1e-5)
        assert not torch.allclose(probs[0], probs[1], atol=1e-3)  # the views do differ
        plain = next(predict_batches(model, [path], bs=2, progress=False))[1]
        assert torch.allclose(probs[0], plain, atol=1e-5)  # view 0 is the plain evaluation view
    records = predict(model, files, top_k=4, tta=True)
    for (_, probs, _), r in zip(got, records, strict=True):
        if probs is None:
            assert "error" in r
            continue
        mean = probs.mean(0)
        assert r["tta_views"] == 6 and r["label"] == f"c{int(mean.argmax())}"
        assert dict(r["topk"]) == pytest.approx({f"c{i}": float(p) for i, p in enumerate(mean)}, abs=1e-5)
    assert "tta_views" not in predict(model, files[:1])[0]


@pytest.fixture(scope="module")
def tta_run(small_demo, tmp_path_factory):
    """A tiny scratch run trained with --tta (its last step adds the TTA numbers)."""
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["scratch", "--data", str(small_demo), "--out", str(out), "--name", "t",
                                 "--size", "16", "--filters", "8,16", "--dense-units", "16", "--epochs", "1",
                                 "--bs", "64", "--workers", "0", "--no-wandb", "--tta"])
    assert result.exit_code == 0, result.output
    assert "TTA, 6 views" in result.output  # the summary table's extra rows
    return out / "t"


def test_training_with_tta_writes_separate_tta_numbers(tta_run):
    metrics = json.loads((tta_run / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key in ("accuracy", "loss", "f1"):
            assert 0 <= metrics[f"{split}_{key}_tta"] < 10, key
            assert f"{split}_{key}" in metrics  # the plain numbers stay
    assert metrics["tta_views"] == 6
    assert json.loads((tta_run / "config.json").read_text())["config"]["tta"] is True
    report = json.loads((tta_run / "report" / "metrics.json").read_text())
    assert report["test_accuracy_tta"] == metrics["test_accuracy_tta"]
    assert report["accuracy"] == metrics["test_accuracy"]


def test_evaluate_tta_prints_both_numbers_and_writes_them(tta_run):
    plain = runner.invoke(app, ["evaluate", str(tta_run)])
    assert plain.exit_code == 0, plain.output
    assert "TTA" not in plain.output
    before = json.loads((tta_run / "report" / "metrics.json").read_text())
    assert "test_accuracy_tta" not in before
    result = runner.invoke(app, ["evaluate", str(tta_run), "--tta"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tta_run / "report" / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.4f}" in result.output
    assert f"with TTA (6 views): accuracy {metrics['test_accuracy_tta']:.4f}" in result.output
    assert metrics["accuracy"] == pytest.approx(before["accuracy"])  # view 0 is the plain view
    assert metrics["loss"] == pytest.approx(before["loss"], rel=1e-4)
    trained = json.loads((tta_run / "metrics.json").read_text())
    assert metrics["test_loss_tta"] == pytest.approx(trained["test_loss_tta"], rel=1e-4)
    valid = runner.invoke(app, ["evaluate", str(tta_run), "--tta", "--split", "valid"])
    assert valid.exit_code == 0, valid.output
    metrics = json.loads((tta_run / "report-valid" / "metrics.json").read_text())
    assert metrics["valid_accuracy_tta"] == pytest.approx(trained["valid_accuracy_tta"])


def test_predict_tta_shows_the_averaged_probabilities(tta_run, small_demo):
    folder = small_demo / "val" / "7"
    plain = runner.invoke(app, ["predict", str(tta_run), str(folder), "--json", "--top-k", "10"])
    tta = runner.invoke(app, ["predict", str(tta_run), str(folder), "--json", "--top-k", "10", "--tta"])
    assert plain.exit_code == 0 and tta.exit_code == 0, plain.output + tta.output
    a = [json.loads(line) for line in plain.output.splitlines()]
    b = [json.loads(line) for line in tta.output.splitlines()]
    assert [r["path"] for r in a] == [r["path"] for r in b] and len(b) == 8
    assert all(r["tta_views"] == 6 and sum(p for _, p in r["topk"]) == pytest.approx(1, abs=1e-4) for r in b)
    assert any(dict(x["topk"]) != dict(y["topk"]) for x, y in zip(a, b, strict=True))
    table = runner.invoke(app, ["predict", str(tta_run), str(folder), "--tta"])
    assert table.exit_code == 0 and "mean over 6 test-time augmentation views" in table.output


def test_the_html_report_shows_the_tta_number_where_present(tta_run, tmp_path):
    import shutil

    metrics = json.loads((tta_run / "metrics.json").read_text())
    best, plain = tmp_path / "best", tmp_path / "plain"
    shutil.copytree(tta_run, best)  # the best run (the report's last section): with TTA numbers
    (best / "metrics.json").write_text(json.dumps({**metrics, "valid_accuracy": 1.0}))
    shutil.copytree(tta_run, plain)
    (plain / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if "_tta" not in k
                                                    and k != "tta_views"}))
    for runs, shown in (([plain], False), ([best, plain], True)):
        out = tmp_path / f"{len(runs)}.html"
        result = runner.invoke(app, ["report", *map(str, runs), "--out", str(out), "--no-explain"])
        assert result.exit_code == 0, result.output
        html = out.read_text()
        assert ("TEST acc (TTA)" in html) == shown
    assert f"with test-time augmentation: {100 * metrics['test_accuracy_tta']:.1f}%" in html


def test_finetune_on_cached_features_with_tta_evaluates_the_full_network(small_demo, tmp_path):
    """The head trains on cached features; the TTA numbers come from the saved full network."""
    result = runner.invoke(app, ["finetune", "--data", str(small_demo), "--out", str(tmp_path), "--name", "f",
                                 "--arch", "resnet10t", "--no-pretrained", "--size", "24", "--dense-units", "16",
                                 "--epochs", "1", "--workers", "0", "--no-augment", "--no-wandb",
                                 "--cache-features", "--tta"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert metrics["tta_views"] == 6 and 0 <= metrics["test_accuracy_tta"] <= 1
    assert 0 <= metrics["valid_accuracy_tta"] <= 1 and metrics["test_loss_tta"] > 0
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "f"), "--tta"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "f" / "report" / "metrics.json").read_text())
    assert report["test_loss_tta"] == pytest.approx(metrics["test_loss_tta"], rel=1e-4)
