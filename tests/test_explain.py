"""`fastinat explain`: Grad-CAM, guided backprop, filters and feature maps for Part A and B models."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fastinat.errors import UsageError
from fastinat.recipes.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(demo_data, tmp_path_factory):
    """A scratch CNN trained on the demo digits (~92% TEST)."""
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["scratch", "--data", str(demo_data), "--out", str(out), "--name", "r",
                                 "--size", "32", "--filters", "16,32,64", "--dense-units", "32", "--epochs", "4",
                                 "--lr", "1e-2", "--bs", "64", "--workers", "0", "--no-augment", "--no-wandb"])
    assert result.exit_code == 0, result.output
    return out / "r"


@pytest.fixture(scope="module")
def timm_models(demo_data):
    """Untrained resnet10t and ViT models with their cards, as load_model would give them."""
    from fastinat import inat_dataloaders
    from fastinat.learner import finetune_learner

    dls = inat_dataloaders(demo_data, size=32, bs=8, workers=0, progress=False)
    models = {}
    for arch in ("resnet10t", "vit_tiny_patch16_224"):
        learn = finetune_learner(dls, arch, pretrained=False, dense_units=(16,))
        model = learn.model.eval()
        model.fastinat_card = learn.card
        models[arch] = model
    return models


def images(demo_data, n_per_class=1, classes=range(10)):
    return [sorted((demo_data / "val" / str(c)).iterdir())[i] for c in classes for i in range(n_per_class)]


def check_maps(records, size):
    for r in records:
        assert r["map"].shape == (size, size)
        assert np.isfinite(r["map"]).all() and r["map"].std() > 0  # not constant
        assert r["map"].min() >= 0 and r["map"].max() <= 1


@pytest.mark.parametrize("method", ["gradcam", "guided-backprop"])
def test_maps_of_a_scratch_model(run, demo_data, method):
    from fastinat import explain

    check_maps(explain(run, images(demo_data, classes=[1, 7]), method=method), 32)


@pytest.mark.parametrize("arch", ["resnet10t", "vit_tiny_patch16_224"])
@pytest.mark.parametrize("method", ["gradcam", "guided-backprop"])
def test_maps_of_timm_models(timm_models, demo_data, arch, method):
    from fastinat import explain

    model = timm_models[arch]
    before = [(name, type(m), getattr(m, "inplace", None)) for name, m in model.named_modules()]
    records = explain(model, images(demo_data, classes=[3]), method=method)
    check_maps(records, 32)
    # the model is as it was: no TokenGrid left in a ViT, in-place activations switched back on
    assert [(name, type(m), getattr(m, "inplace", None)) for name, m in model.named_modules()] == before


@pytest.mark.parametrize("activation", ["relu", "elu", "silu", "gelu", "mish"])
def test_guided_backprop_handles_every_part_a_activation(demo_data, activation):
    from fastinat import explain, inat_dataloaders
    from fastinat.learner import scratch_learner

    dls = inat_dataloaders(demo_data, size=32, bs=8, workers=0, progress=False)
    learn = scratch_learner(dls, filters=[8, 16], dense_units=8, activation=activation)
    model = learn.model.eval()
    model.fastinat_card = learn.card
    check_maps(explain(model, images(demo_data, classes=[4]), method="guided-backprop"), 32)


def test_gradcam_looks_at_the_digit(run, demo_data):
    """More Grad-CAM mass on the stroke than off it, on average over correctly predicted digits."""
    from fastinat import explain

    records = [r for r in explain(run, images(demo_data, n_per_class=2), method="gradcam")
               if r["predicted"] == r["target"] == r["path"].split("/")[-2]]
    assert len(records) >= 10
    inside, outside = [], []
    for r in records:
        grey = r["image"].astype(float).mean(-1)
        stroke = grey > grey.max() / 2
        inside.append(r["map"][stroke].mean())
        outside.append(r["map"][~stroke].mean())
    assert np.mean(inside) > 1.2 * np.mean(outside)


def test_feature_maps_and_filters(run, demo_data, tmp_path):
    from fastinat import explain
    from fastinat.explain import draw

    (fm,) = explain(run, images(demo_data, classes=[0]), method="feature-maps", layer="features.0.2")
    assert fm["map"].shape == (16, 32, 32)  # 16 channels, before the first pooling
    (filters,) = explain(run, [], method="filters")
    assert filters["map"].shape == (16, 3, 3, 3)  # one RGB 3x3 tile per first-layer filter
    paths = draw([fm, filters], tmp_path)
    for p in paths:
        with Image.open(p) as img:
            assert img.width > 200 and img.height > 200


def test_cli_writes_one_overlay_per_image(run, demo_data, tmp_path):
    folder = tmp_path / "three"
    folder.mkdir()
    for f in images(demo_data, n_per_class=3, classes=[3]):
        shutil.copyfile(f, folder / f.name)
    result = runner.invoke(app, ["explain", str(run), str(folder), "--method", "gradcam"])
    assert result.exit_code == 0, result.output
    written = sorted((run / "explain").glob("*-gradcam.png"))
    assert [p.name for p in written] == sorted(f"{f.stem}-gradcam.png" for f in folder.iterdir())
    with Image.open(written[0]) as img:
        assert img.width > 300
    layers = runner.invoke(app, ["explain", str(run), "--list-layers"])
    assert layers.exit_code == 0 and "features.2.2  (default)" in layers.output


@pytest.mark.parametrize("args,code,message", [
    (["--layer", "features.9"], 2, "Unknown layer 'features.9'; use one of: features.0, features.0.0"),
    (["--method", "lime"], 2, "--method: must be gradcam, guided-backprop, filters or feature-maps, got 'lime'"),
    (["--target", "seven"], 2, "Unknown target class 'seven'"),
])
def test_bad_options_are_one_line(run, demo_data, args, code, message):
    result = runner.invoke(app, ["explain", str(run), str(images(demo_data, classes=[2])[0]), *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_run_without_weights_and_unreadable_image(run, demo_data, tmp_path):
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    result = runner.invoke(app, ["explain", str(empty), str(images(demo_data)[0])])
    assert result.exit_code == 2 and "has no model.json" in result.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    result = runner.invoke(app, ["explain", str(run), str(bad)])
    assert result.exit_code == 1 and f"Cannot read the image {bad}" in result.output
    missing = runner.invoke(app, ["explain", str(run), str(tmp_path / "gone.png")])
    assert missing.exit_code == 2 and f"The image {tmp_path / 'gone.png'} does not exist." in missing.output


def test_draw_into_a_file_is_a_usage_error(run, demo_data, tmp_path):
    from fastinat import explain
    from fastinat.explain import draw

    (fm,) = explain(run, images(demo_data, classes=[0]), method="gradcam")
    blocker = tmp_path / "explain"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(UsageError, match=f"{blocker} is a file, not a folder; choose another place"):
        draw([fm], blocker)


def test_fastinat_explain_is_callable_after_its_module_is_imported(run, demo_data):
    """`import fastinat.explain` (done by `fastinat report`) must not turn fastinat.explain
    into something a notebook cannot call."""
    import importlib

    import fastinat

    importlib.import_module("fastinat.explain")
    records = fastinat.explain(run, images(demo_data, classes=[2])[:1], method="gradcam")
    assert len(records) == 1 and records[0]["map"].ndim == 2
