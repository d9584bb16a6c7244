"""`fastinat evaluate` / `predict` / `load_model` on real (tiny) Part A and Part B runs."""

from __future__ import annotations

import csv
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fastinat.recipes.cli import app

runner = CliRunner()
REPORT = ("per_class.csv", "metrics.json", "confusion_matrix.png", "curves.png",
          "predictions_grid.png", "top_losses.png")


@pytest.fixture(scope="module")
def runs(demo_data, tmp_path_factory):
    """A trained scratch run and a trained finetune run on the demo digits (~92% TEST each)."""
    out = tmp_path_factory.mktemp("runs")
    common = ["--data", str(demo_data), "--out", str(out), "--bs", "64", "--workers", "0",
              "--no-augment", "--no-wandb"]
    a = runner.invoke(app, ["scratch", *common, "--name", "a", "--size", "32", "--filters", "16,32,64",
                            "--dense-units", "32", "--epochs", "4", "--lr", "1e-2"])
    assert a.exit_code == 0, a.output
    b = runner.invoke(app, ["finetune", *common, "--name", "b", "--arch", "resnet10t", "--size", "32",
                            "--no-pretrained", "--freeze", "none", "--dense-units", "32", "--epochs", "2",
                            "--lr", "1e-2"])
    assert b.exit_code == 0, b.output
    return {"scratch": out / "a", "finetune": out / "b"}


@pytest.mark.parametrize("kind", ["scratch", "finetune"])
def test_training_ends_with_the_test_report(runs, kind):
    report = runs[kind] / "report"
    for name in REPORT:
        assert (report / name).is_file(), name
    for name in REPORT[2:]:
        with Image.open(report / name) as img:
            assert img.width >= 400 and img.height >= 250, name
    with Image.open(report / "predictions_grid.png") as grid:  # 10 rows x 3 columns of tiles
        assert grid.height > 2.5 * grid.width
    with open(report / "per_class.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == [str(d) for d in range(10)]
    assert sum(int(r["support"]) for r in rows) == 359
    metrics = json.loads((runs[kind] / "metrics.json").read_text())
    detail = json.loads((report / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(detail["accuracy"])


@pytest.mark.parametrize("kind", ["scratch", "finetune"])
def test_evaluate_numbers_agree_with_scikit_learn(runs, demo_data, kind):
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    from fastinat import predict

    run = runs[kind]
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    assert "macro avg" in result.output and "weighted avg" in result.output
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    records = predict(run, demo_data / "val", top_k=10)
    classes = [str(d) for d in range(10)]
    y_true = [classes.index(r["path"].split("/")[-2]) for r in records]
    y_pred = [classes.index(r["label"]) for r in records]
    probs = np.array([[dict(r["topk"])[c] for c in classes] for r in records])
    probs /= probs.sum(1, keepdims=True)  # predict rounds to 6 decimals
    assert metrics["n"] == len(records) == 359
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["loss"] == pytest.approx(log_loss(y_true, probs, labels=range(10)), rel=1e-3)
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        assert (metrics[f"{avg}_precision"], metrics[f"{avg}_recall"], metrics[f"{avg}_f1"]) == \
            pytest.approx((p, r, f))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(10), zero_division=0)
    with open(run / "report" / "per_class.csv") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        assert (float(row["precision"]), float(row["recall"]), float(row["f1"]), int(row["support"])) == \
            pytest.approx((p[i], r[i], f[i], s[i]), abs=1e-6)


def test_evaluate_the_validation_split(runs):
    run = runs["scratch"]
    result = runner.invoke(app, ["evaluate", str(run), "--split", "valid"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "report-valid" / "metrics.json").read_text())
    assert metrics["n"] == len((run / "valid_files.txt").read_text().split())
    assert metrics["split"] == "valid"


# -- predict -------------------------------------------------------------------------------

def test_predict_a_folder_with_a_corrupt_file(runs, demo_data, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(demo_data / "val" / "3", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    n = len(list(folder.iterdir()))
    result = runner.invoke(app, ["predict", str(runs["scratch"]), str(folder), "--json", "--top-k", "2"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert len(lines) == n
    (bad,) = [r for r in lines if "error" in r]
    assert bad["path"].endswith("broken.png") and "unreadable image" in bad["error"]
    good = [r for r in lines if "error" not in r]
    assert all(set(r) == {"path", "label", "prob", "topk"} and len(r["topk"]) == 2 for r in good)
    # real predictions, not a model check: the fixture's 4-epoch run gets 29-30 of these 37 right
    assert sum(r["label"] == "3" for r in good) / len(good) > 0.7


def test_predict_table_and_a_missing_file(runs, demo_data, tmp_path):
    latest = runs["finetune"].parent / "latest"  # the newest run, as the README uses it
    assert latest.is_symlink() and latest.resolve() == runs["finetune"].resolve()
    one = sorted((demo_data / "val" / "7").iterdir())[0]
    result = runner.invoke(app, ["predict", str(latest), str(one), str(tmp_path / "nope.jpg")])
    assert result.exit_code == 1
    assert "no such file" in result.output and one.name in result.output
    assert result.output.startswith(f"{latest} is {latest.parent / runs['finetune'].name}\n")  # which run


def test_evaluate_names_the_run_latest_points_to(runs):
    latest = runs["finetune"].parent / "latest"
    result = runner.invoke(app, ["evaluate", str(latest)])
    assert result.exit_code == 0, result.output
    assert f"{latest.parent / runs['finetune'].name} - TEST (val/)" in result.output
    assert "latest" not in result.output.replace(str(latest.parent), "")


# -- load_model and the documented preprocessing ---------------------------------------------

def documented_input(path, card) -> torch.Tensor:
    """The preprocessing as fastinat.predict documents it, written out with PIL, OpenCV and NumPy."""
    import cv2

    from fastinat import open_rgb

    s = card["input_size"]
    a = np.asarray(open_rgb(path, min_side=s))
    h, w = a.shape[:2]
    side = min(w, h)
    a = a[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    if side // s >= 2:
        a = cv2.resize(a, (side // (side // s),) * 2, interpolation=cv2.INTER_AREA)
    a = cv2.resize(a, (s, s), interpolation=cv2.INTER_LINEAR)
    x = a.astype(np.float32).transpose(2, 0, 1) / 255
    mean = np.array(card["normalize"]["mean"], dtype=np.float32)[:, None, None]
    std = np.array(card["normalize"]["std"], dtype=np.float32)[:, None, None]
    return torch.from_numpy((x - mean) / std)[None]


def test_load_model_never_unpickles(runs, monkeypatch):
    from fastinat import load_model

    def refuse(*a, **k):
        raise AssertionError("pickle used on the loading path")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    for run in runs.values():
        model = load_model(run)
        assert not model.training and model.fastinat_card["classes"] == [str(d) for d in range(10)]


def test_part_a_by_hand_matches_predict(runs, demo_data):
    from fastinat import load_model, predict

    files = sorted((demo_data / "val" / "5").iterdir())[:6]
    model = load_model(runs["scratch"])
    with torch.no_grad():
        probs = torch.softmax(model(torch.cat([documented_input(f, model.fastinat_card) for f in files])), 1)
    records = predict(runs["scratch"], files, top_k=10)
    for p, r in zip(probs, records, strict=True):
        assert [float(p[int(c)]) for c, _ in r["topk"]] == pytest.approx([v for _, v in r["topk"]], abs=1e-5)


def test_part_b_is_a_plain_timm_model_plus_the_documented_head(runs, demo_data):
    """model.safetensors of a Part B run: `0.model.*` is timm.create_model(arch, num_classes=0),
    `1.*` is fastai's head: concat pool (max, avg) -> BN -> dropout -> linear -> ReLU -> BN ->
    dropout -> linear (linears without bias). Written out in plain torch, it gives predict's
    probabilities."""
    import timm
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from fastinat import predict

    run = runs["finetune"]
    card = json.loads((run / "model.json").read_text())
    state = load_file(str(run / "model.safetensors"))
    body = timm.create_model(card["arch"], pretrained=False, num_classes=0,
                             **card["model"]["timm_kwargs"]).eval()
    body.load_state_dict({k.removeprefix("0.model."): v for k, v in state.items() if k.startswith("0.model.")})

    def bn(x, i):
        return F.batch_norm(x, state[f"1.{i}.running_mean"], state[f"1.{i}.running_var"],
                            state[f"1.{i}.weight"], state[f"1.{i}.bias"], training=False, eps=1e-5)

    files = sorted((demo_data / "val" / "2").iterdir())[:6]
    with torch.no_grad():
        fmap = body.forward_features(torch.cat([documented_input(f, card) for f in files]))
        x = torch.cat([F.adaptive_max_pool2d(fmap, 1), F.adaptive_avg_pool2d(fmap, 1)], 1).flatten(1)
        x = F.relu(F.linear(bn(x, 2), state["1.4.weight"]))  # fastai: no bias after a BN
        x = F.linear(bn(x, 6), state["1.8.weight"])
        probs = torch.softmax(x, 1)
    records = predict(run, files, top_k=10)
    for p, r in zip(probs, records, strict=True):
        assert [float(p[int(c)]) for c, _ in r["topk"]] == pytest.approx([v for _, v in r["topk"]], abs=1e-5)


# -- bad input -----------------------------------------------------------------------------

def broken_copy(run, tmp_path, damage):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    damage(copy / "model.safetensors")
    return copy


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("case,message", [
    ("not a run", "has no model.json: it is not a fastinat run folder"),
    ("no weights", "has no model.safetensors (the weights file is missing)"),
    ("truncated", "model.safetensors is damaged or truncated"),
])
def test_bad_runs_are_one_line(runs, demo_data, tmp_path, command, case, message):
    if case == "not a run":
        run = tmp_path
    else:
        run = broken_copy(runs["scratch"], tmp_path, {
            "no weights": lambda p: p.unlink(),
            "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        }[case])
    args = [command, str(run)] + ([str(demo_data / "val" / "1")] if command == "predict" else [])
    result = runner.invoke(app, args)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dataset_with_other_classes_names_the_difference(runs, demo_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    for split in ("train", "val"):
        (data / split / "9").rename(data / split / "nine")
    result = runner.invoke(app, ["evaluate", str(runs["scratch"]), "--data", str(data)])
    assert result.exit_code == 2
    assert "differ from the model's: the model's 9 not in the data; the data's nine unknown to the model" \
        in result.output


# -- export --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["scratch", "finetune"])
def test_onnx_export_agrees_with_torch(runs, kind, tmp_path):


    dest = tmp_path / f"{kind}.onnx"
    result = runner.invoke(app, ["export", str(runs[kind]), "--onnx", "--out", str(dest)])
    assert result.exit_code == 0, result.output
    assert "agrees with torch on the top-1 class of 20/20 sample images" in result.output
    assert_onnx_matches(dest, runs[kind])


def assert_onnx_matches(onnx_file, run) -> None:
    """onnxruntime gives the run's logits, on another batch size than the export's example."""
    import onnxruntime as ort

    from fastinat.inference import load_model

    model = load_model(run)
    size = model.fastinat_card["input_size"]
    x = torch.randn(5, 3, size, size)
    got = ort.InferenceSession(str(onnx_file)).run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(got, model(x).numpy(), atol=1e-4)


def test_onnx_export_without_the_extra_is_one_line(runs, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    result = runner.invoke(app, ["export", str(runs["scratch"]), "--onnx"])
    assert result.exit_code == 1
    assert "pip install 'fastinat[onnx]'" in result.output and "Traceback" not in result.output


class ConversionError(RuntimeError):
    """Like torch.onnx's, the dynamo exporter's failure on torch 2.11 with onnxscript 0.7.2."""


def _failing_exporter(monkeypatch, *, torchscript_too=False):
    """torch.onnx.export whose dynamo exporter (and, if asked, TorchScript exporter) fails."""
    real = torch.onnx.export
    calls = []

    def export(*args, dynamo=True, **kwargs):
        calls.append(dynamo)
        if dynamo:
            raise ConversionError("Failed to convert the exported program to an ONNX model. This is "
                                  "step 3/3 of exporting the model to ONNX.\nNext steps: ...")
        if torchscript_too:
            raise RuntimeError("Unsupported: ONNX export of operator foo.\nmore")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    return calls


@pytest.mark.parametrize("kind", ["scratch", "finetune"])
def test_onnx_export_falls_back_to_the_torchscript_exporter(runs, kind, tmp_path, monkeypatch):

    from fastinat.export import export_onnx

    calls = _failing_exporter(monkeypatch)
    dest, check = export_onnx(runs[kind], tmp_path / "lib.onnx")
    assert calls == [True, False] and dest.is_file()
    assert check["exporter"] == "torchscript"
    assert check["dynamo_error"] == ("ConversionError: Failed to convert the exported program to an "
                                     "ONNX model. This is step 3/3 of exporting the model to ONNX.")
    assert check["top1_agree"] == check["images"] == 20
    assert_onnx_matches(dest, runs[kind])

    out = tmp_path / "cli.onnx"
    result = runner.invoke(app, ["export", str(runs[kind]), "--onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == ("The dynamo exporter failed (ConversionError: Failed to convert the exported "
                        "program to an ONNX model. This is step 3/3 of exporting the model to ONNX.); "
                        "exported with the TorchScript exporter instead.")
    assert "agrees with torch on the top-1 class of 20/20 sample images" in lines[1]
    assert len(lines) == 2 and out.is_file()


def test_onnx_export_with_both_exporters_failing_is_one_line(runs, tmp_path, monkeypatch):
    _failing_exporter(monkeypatch, torchscript_too=True)
    dest = tmp_path / "out" / "model.onnx"
    result = runner.invoke(app, ["export", str(runs["scratch"]), "--onnx", "--out", str(dest)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "Error: torch could not export the model to ONNX (dynamo exporter: ConversionError: Failed to "
        "convert the exported program to an ONNX model. This is step 3/3 of exporting the model to "
        "ONNX.; TorchScript exporter: RuntimeError: Unsupported: ONNX export of operator foo.); "
        "nothing was written."]
    assert list(dest.parent.iterdir()) == []  # no model.onnx, no temporary file


@pytest.mark.parametrize("activation", ["relu", "elu", "silu", "gelu", "mish"])
def test_inference_copy_gives_the_same_outputs(activation):
    """predict's CPU model (BatchNorm folded, max-pool before monotonic activations) == the model."""
    import timm

    from fastinat.inference import MaxPool2x2, inference_copy
    from fastinat.models.cnn import build_cnn

    torch.manual_seed(0)
    models = [build_cnn(10, filters=[8, 16, 16], activation=activation, dense_units=16)]
    if activation == "relu":
        models.append(timm.create_model("resnet10t", pretrained=False, num_classes=10))
    x = torch.randn(3, 3, 50, 50)  # odd sizes after the second pooling: the last row is dropped
    for model in models:
        for m in model.modules():  # non-trivial BatchNorm statistics to fold
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.eval()
        fast = inference_copy(model)
        if not hasattr(model, "fc"):  # the scratch CNN: every block's BatchNorm folded away
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
            order = [type(m).__name__ for m in fast.modules() if isinstance(m, (torch.nn.MaxPool2d, torch.nn.ReLU))]
            if activation == "relu":  # pooling first: the activation sees a quarter of the values
                assert order[:2] == ["MaxPool2x2", "ReLU"]
            assert all(type(m) is MaxPool2x2 for m in fast.modules() if isinstance(m, torch.nn.MaxPool2d))
        with torch.inference_mode():
            assert torch.allclose(fast(x), model(x), atol=1e-4, rtol=1e-4)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
