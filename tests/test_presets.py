"""Named presets (`--config NAME`) and `fastinat reproduce` (`make reproduce QUICK=1`)."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest
from typer.testing import CliRunner

from fastinat.config import TRAIN_CONFIGS, ReproduceOptions
from fastinat.data.workers import running_pools
from fastinat.options import load_yaml, resolve
from fastinat.presets import describe, find_config, preset_command, presets
from fastinat.recipes.cli import app

runner = CliRunner()
NAMED = ("scratch-best", "resnet50-frozen", "resnet50-full", "strong")


def test_the_named_presets_exist_and_validate():
    assert set(NAMED) <= set(presets())
    for name, path in presets().items():
        text = path.read_text()
        header = [line for line in text.splitlines() if line.startswith("#")]
        assert describe(name).startswith(f"{name}:"), name
        for word in ("Use:", "Expect:", "Measured:", "GB of GPU memory", "per epoch"):
            assert any(word in line for line in header), (name, word)
        cls = TRAIN_CONFIGS[preset_command(name)]
        cfg = resolve(cls, find_config(name))  # every key known, every value in range
        assert cfg.command == load_yaml(path)["command"]
    strong = resolve(TRAIN_CONFIGS["finetune"], find_config("strong"))
    assert strong.size == 384 and strong.pretrained and strong.freeze in ("none", "gradual")
    assert strong.label_smoothing and strong.mixup and strong.cutmix and strong.ema and strong.drop_path
    full = resolve(TRAIN_CONFIGS["finetune"], find_config("resnet50-full"))
    assert full.arch.startswith("resnet50") and full.size == 352 and full.gradual
    assert full.label_smoothing and full.ema and full.tta and strong.tta
    best = resolve(TRAIN_CONFIGS["scratch"], find_config("scratch-best"))
    assert best.augment_policy == "strong" and best.progressive and best.tta and len(best.blocks()[0]) == 5


def test_a_preset_by_name_on_the_command_line(small_demo, tmp_path):
    result = runner.invoke(app, ["scratch", "--config", "scratch-best", "--data", str(small_demo),
                                 "--out", str(tmp_path), "--name", "p", "--epochs", "3",
                                 "--progressive", "32,48", "--filters", "8,8,8,8,8", "--dense-units", "8",
                                 "--workers", "0", "--no-wandb"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "p" / "config.json").read_text())["config"]
    assert config["activation"] == "mish" and config["label_smoothing"] == 0.1  # from the preset
    assert config["epochs"] == 3 and config["size"] == 48  # flags override it


def test_a_preset_for_the_other_command_or_an_unknown_one_is_one_line(small_demo, tmp_path):
    result = runner.invoke(app, ["scratch", "--config", "strong", "--data", str(small_demo)])
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: The config file " + str(find_config("strong"))
                                     + " is for `fastinat finetune`, not `fastinat scratch`.")
    result = runner.invoke(app, ["finetune", "--config", "strnog", "--data", str(small_demo)])
    assert result.exit_code == 2
    assert "No config file or preset 'strnog' (did you mean strong?); the presets are" in result.output
    result = runner.invoke(app, ["finetune", "--config", "missing.yaml"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error: Cannot read the config file missing.yaml:")


def test_reproduce_quick_runs_every_preset_and_writes_the_table(small_demo, tmp_path, monkeypatch):
    """`make reproduce QUICK=1` as a user runs it, on 4 train/ and 1 val/ images per class
    (instead of 20 and 5: the same pipeline, a third of the time)."""
    import fastinat.reproduce

    monkeypatch.setattr(fastinat.reproduce, "QUICK_IMAGES", {"train": 4, "val": 1})
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["reproduce", "--quick", "--data", str(small_demo)])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "results" / "accuracy.md").read_text()
    data = json.loads((tmp_path / "results" / "accuracy.json").read_text())
    assert data["quick"] and [r["preset"] for r in data["rows"]] == list(presets())
    assert "Quick run" in table and "| preset | architecture | size | epochs |" in table
    for r in data["rows"]:
        assert r["error"] is None, r
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["valid_accuracy"] <= 1
        assert r["device"] and r["versions"]["torch"] and r["seed"] == 42
        metrics = json.loads((tmp_path / r["run"] / "metrics.json").read_text())
        assert metrics["test_accuracy"] == r["test_accuracy"] and metrics["n_test"] == 10
        config = resolve(TRAIN_CONFIGS[r["command"]], find_config(r["preset"]))
        assert (r["test_accuracy_tta"] is not None) == config.tta  # the TTA column where the preset asks
        assert r["weights"] == ("ema" if config.ema else "raw")
        assert f"| {r['preset']} | {r['arch']} | {r['size']} |" in table
    assert {r["arch"] for r in data["rows"]} >= {"resnet50.tv2_in1k", "convnext_base.fb_in22k_ft_in1k_384"}
    # four presets in one process: no loader worker process, pool or pin-memory thread left over
    assert multiprocessing.active_children() == [] and running_pools() == 0
    assert not any("pin_memory" in t.name for t in threading.enumerate())


def test_reproduce_without_the_dataset_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["reproduce"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error: No nature_12K in data/inaturalist_12K")
    assert not (tmp_path / "results").exists()
    result = runner.invoke(app, ["reproduce", "--presets", "scratch-bset"])
    assert result.exit_code == 2 and "did you mean scratch-best" in result.output


@pytest.mark.parametrize("name", NAMED)
def test_quick_settings_keep_each_preset_valid(name):
    from fastinat.reproduce import quick_overrides

    cls = TRAIN_CONFIGS[preset_command(name)]
    cfg = resolve(cls, find_config(name), quick_overrides(name))
    assert cfg.size <= 64 and cfg.total_epochs <= 3 and not getattr(cfg, "pretrained", False)
    assert ReproduceOptions().presets == list(presets())
