"""`fastinat sweep`: config validation, local (Optuna) sweeps, resume, failures, the W&B boundary."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from conftest import demo_subset
from fastinat.errors import UsageError
from fastinat.recipes.cli import app

runner = CliRunner()
#: Every trial: a tiny CNN, 1 epoch at 16 px, no W&B (the autouse fixture disables it anyway).
FIXED = {"filters": {"value": [8, 16]}, "dense-units": {"value": 16}, "epochs": {"value": 1},
         "size": {"value": 16}, "bs": {"value": 64}, "workers": {"value": 0},
         "augment": {"value": False}, "lr": {"value": 1.0e-2}}


@pytest.fixture(scope="module")
def tiny_data(demo_data, tmp_path_factory):
    """20 train and 4 val images per digit: real trials train in a fraction of the demo's time."""
    return demo_subset(demo_data, tmp_path_factory.mktemp("tiny") / "digits", 20, 4)


def write_config(path, method="grid", parameters=None, **extra):
    config = {"command": ["fastinat", "scratch"], "method": method,
              "metric": {"name": "valid_accuracy", "goal": "maximize"},
              "parameters": {**FIXED, **(parameters or {"dropout": {"values": [0, 0.2, 0.4]}})}, **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def sweep(*args):
    return runner.invoke(app, ["sweep", *map(str, args)])


def leaderboard(sweep_dir):
    with open(sweep_dir / "leaderboard.csv") as fh:
        return list(csv.DictReader(fh))


# -- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    ({"parameters": {"dropuot": {"values": [0.1]}}}, "parameter dropuot is not an option of fastinat "
                                                     "scratch (did you mean dropout?)"),
    ({"parameters": {"bs": {"values": [32, "many"]}}}, "parameter bs: expected a whole number, got 'many'"),
    ({"parameters": {"dropout": {"values": [0.2, 1.5]}}}, "parameter dropout: must be at least 0 and "
                                                          "below 1, got 1.5"),
    ({"parameters": {"activation": {"values": ["relu", "swish"]}}}, "parameter activation:"),
    ({"method": "annealing"}, "unknown method 'annealing'; use grid, random or bayes"),
    ({"metric": {"name": "test_accuracy"}}, "unknown metric 'test_accuracy' (never select on the TEST set)"),
    ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}},
     "a grid sweep needs discrete parameters; lr is log_uniform_values"),
    ({"early_stop": True}, "unknown key 'early_stop'"),
    ({"command": ["python", "train.py"], "parameters": {"freeze": {"value": "head"}}},
     "no `command` names the training and it has parameters of both scratch and finetune"),
    ({"command": ["fastinat", "scratch", "finetune"]}, "`command` names both finetune and scratch"),
    ({"parameters": {"data": {"value": "elsewhere"}}}, "parameter data is set by the sweep itself"),
])
def test_bad_configs_are_one_line_before_any_trial(tmp_path, demo_data, change, message):
    path = tmp_path / "bad.yaml"
    write_config(path)
    config = yaml.safe_load(path.read_text())
    for key, value in change.items():
        if key == "parameters":
            config["parameters"].update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    result = sweep(path, "--data", demo_data, "--out", tmp_path / "sweeps", "--backend", "local")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("parameters,command", [
    ({"filters": {"values": [[8, 16]]}, "lr": {"value": 0.01}}, "scratch"),
    ({"arch": {"value": "resnet10t"}, "freeze": {"values": ["head", "none"]}}, "finetune"),
])
def test_a_wandb_config_without_command_runs_the_training_its_parameters_name(tmp_path, parameters,
                                                                              command):
    """W&B's documented configs name a `program`, not fastinat's command: the parameters decide."""
    from fastinat.sweeps.config import load_sweep_config

    path = tmp_path / "wandb.yaml"
    path.write_text(yaml.safe_dump({"program": "train.py", "method": "random",
                                    "metric": {"name": "valid_loss"}, "parameters": parameters}))
    cfg = load_sweep_config(path)
    assert cfg.command == command and cfg.goal == "minimize"
    assert any(f"the trials run fastinat {command}" in note for note in cfg.notes)
    (tmp_path / "both.yaml").write_text(yaml.safe_dump({"program": "train.py", "method": "random",
                                                        "parameters": {"lr": {"value": 0.01}}}))
    with pytest.raises(UsageError, match="parameters that fit both scratch and finetune"):
        load_sweep_config(tmp_path / "both.yaml")


def test_builtin_configs_hold_the_original_space():
    from fastinat.sweeps.config import load_sweep_config

    scratch = load_sweep_config("scratch")
    space = {p.key: p.values for p in scratch.params}
    assert space["dropout"] == [0, 0.2, 0.4] and space["l2"] == [0, 5e-5, 5e-4]
    assert [32, 16, 8, 4, 2] in space["filters"] and [512, 256, 128, 64, 32] in space["filters"]
    assert [3, 5, 3, 5, 3] in space["kernel-sizes"] and space["batchnorm"] == [True, False]
    finetune = load_sweep_config("finetune")
    space = {p.key: p.values for p in finetune.params}
    assert space["arch"] == ["resnet50", "legacy_xception"]
    assert space["freeze"] == ["head", "last:1", "last:2", "gradual"]


# -- local sweeps -----------------------------------------------------------------------------

def test_local_grid_sweep_runs_exactly_the_grid(tmp_path, tiny_data):
    cfg = write_config(tmp_path / "grid.yaml", parameters={"dropout": {"values": [0, 0.4]}})
    result = sweep(cfg, "--data", tiny_data, "--out", tmp_path, "--name", "s", "--backend", "local",
                   "--count", "10")  # more than the grid holds: the grid wins
    assert result.exit_code == 0, result.output
    s = tmp_path / "s"
    rows = leaderboard(s)
    assert len(rows) == 2 and {r["state"] for r in rows} == {"complete"}
    assert sorted(float(r["dropout"]) for r in rows) == [0, 0.4]
    assert [float(r["valid_accuracy"]) for r in rows] == sorted((float(r["valid_accuracy"]) for r in rows),
                                                                reverse=True)
    runs = sorted(p.name for p in (s / "runs").iterdir() if not p.is_symlink())
    assert runs == ["trial-000", "trial-001"]
    for run in runs:
        assert (s / "runs" / run / "metrics.json").is_file()
    assert "Sweep " in result.output and "best: trial" in result.output
    with open(s / "param_summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert [r["value"] for r in summary] == ["0", "0.4"] and all(r["trials"] == "1" for r in summary)
    assert (s / "params.png").stat().st_size > 5000
    with open(s / "param_importance.csv") as fh:  # one parameter searched: all of the importance
        assert list(csv.DictReader(fh)) == [{"parameter": "dropout", "importance": "1.0"}]
    again = sweep("--resume", s, "--count", "0")  # only the results
    assert again.exit_code == 0 and "best: trial" in again.output
    assert len(list((s / "runs").iterdir())) == 3  # 2 trials + the latest link: nothing new ran


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_data):
    # six conv blocks need 64 px; at 16 px that trial cannot be built
    cfg = write_config(tmp_path / "fail.yaml",
                       parameters={"filters": {"values": [[8, 16], [8, 8, 8, 8, 8, 8]]}})
    result = sweep(cfg, "--data", tiny_data, "--out", tmp_path, "--name", "s", "--backend", "local")
    assert result.exit_code == 0, result.output
    rows = {r["state"]: r for r in leaderboard(tmp_path / "s")}
    assert set(rows) == {"complete", "failed"}
    assert "too small" in rows["failed"]["error"] and rows["failed"]["filters"] == "8,8,8,8,8,8"


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path, tiny_data, monkeypatch):
    from fastinat.sweeps import run as sweep_run

    real = sweep_run.run_trial
    calls = []

    def flaky(sweep_dir, cfg, params, name, *a, **k):
        calls.append(name)
        if len(calls) == 2:  # Ctrl-C in the middle of the second trial
            raise KeyboardInterrupt
        return real(sweep_dir, cfg, params, name, *a, **k)

    monkeypatch.setattr(sweep_run, "run_trial", flaky)
    cfg = write_config(tmp_path / "random.yaml", method="random",
                       parameters={"dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5}})
    cut = sweep(cfg, "--data", tiny_data, "--out", tmp_path, "--name", "s", "--count", "2")
    assert cut.exit_code == 130 and "fastinat sweep --resume" in cut.output
    first = (tmp_path / "s" / "runs" / "trial-000" / "metrics.json").stat().st_mtime_ns
    resumed = sweep("--resume", tmp_path / "s")
    assert resumed.exit_code == 0, resumed.output
    rows = leaderboard(tmp_path / "s")
    assert [r["state"] for r in rows].count("complete") == 2
    assert calls[0] == "trial-000" and "trial-000" not in calls[1:]  # never run again
    assert (tmp_path / "s" / "runs" / "trial-000" / "metrics.json").stat().st_mtime_ns == first
    interrupted = [r for r in rows if r["state"] == "failed"]
    assert len(interrupted) == 1 and "interrupted" in interrupted[0]["error"]
    retried = [r for r in rows if r["state"] == "complete" and r["dropout"] == interrupted[0]["dropout"]]
    assert retried  # the cut trial ran again with its parameters


def test_hyperband_stops_trials_that_trail_their_bracket(tmp_path, tiny_data, monkeypatch):
    """`early_terminate: hyperband`: every epoch's metric reaches Optuna; a trial behind the others
    of its bracket stops early and is recorded as pruned, with the value it had reached."""
    from fastinat.sweeps import run as sweep_run

    epochs_run = {}

    def scripted(sweep_dir, cfg, params, name, report=None, console=None):
        """A trial without training: its metric is 1 - dropout after every epoch."""
        value = 1 - float(params["dropout"])
        for epoch in range(1, cfg.fixed()["epochs"] + 1):
            epochs_run[name] = epoch
            if report(value, epoch):
                return sweep_dir / "runs" / name, {cfg.metric: value}, True
        return sweep_dir / "runs" / name, {cfg.metric: value}, False

    monkeypatch.setattr(sweep_run, "run_trial", scripted)
    cfg = write_config(tmp_path / "hb.yaml", parameters={"dropout": {"values": [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]}},
                       early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    result = sweep(cfg, "--data", tiny_data, "--out", tmp_path, "--name", "s", "--backend", "local",
                   "--epochs", "4")
    assert result.exit_code == 0, result.output
    rows = leaderboard(tmp_path / "s")
    assert len(rows) == 8 and {r["state"] for r in rows} == {"complete", "pruned"}
    pruned = [r for r in rows if r["state"] == "pruned"]
    complete = [r for r in rows if r["state"] == "complete"]
    assert pruned and all(epochs_run[f"trial-{int(r['trial']):03d}"] < 4 for r in pruned)
    assert all(epochs_run[f"trial-{int(r['trial']):03d}"] == 4 for r in complete)
    assert float(rows[0]["dropout"]) == 0 and rows[0]["state"] == "complete"  # the best is never cut
    assert [float(r["valid_accuracy"]) for r in rows] == pytest.approx([1 - float(r["dropout"]) for r in rows])


# -- the W&B backend, at the wandb.sweep / wandb.agent boundary ---------------------------------

def test_wandb_backend_hands_wandb_our_config_and_runs_its_trials(tmp_path, tiny_data, monkeypatch):
    import wandb

    seen = {}

    def fake_sweep(config, project=None, entity=None):
        seen["config"], seen["project"] = config, project
        return "fake-sweep-id"

    class FakeRun:
        def __init__(self, config):
            self.config, self.id = config, f"r{len(seen.setdefault('runs', []))}"
            seen["runs"].append(self.id)

    def fake_agent(sweep_id, function, count=None, project=None, entity=None):
        assert sweep_id == "fake-sweep-id"
        values = seen["config"]["parameters"]["dropout"]["values"]
        for i in range(count):  # what the W&B server would hand each run
            params = {k: v.get("value") for k, v in seen["config"]["parameters"].items() if "value" in v}
            monkeypatch.setattr(wandb, "init", lambda *a, _p={**params, "dropout": values[i]}, **k: FakeRun(_p))
            function()

    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(wandb, "agent", fake_agent)
    monkeypatch.setattr("fastinat.sweeps._need_wandb_online", lambda: None)  # as if logged in
    cfg = write_config(tmp_path / "w.yaml")
    result = sweep(cfg, "--data", tiny_data, "--out", tmp_path, "--name", "w", "--backend", "wandb",
                   "--count", "2", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "fastinat sweep --join fake-sweep-id" in result.output
    config = seen["config"]
    assert config["method"] == "grid" and config["metric"] == {"name": "valid_accuracy", "goal": "maximize"}
    assert config["parameters"]["dropout"] == {"values": [0, 0.2, 0.4]}
    assert config["parameters"]["data"] == {"value": str(tiny_data)}  # the sweep's own options
    rows = leaderboard(tmp_path / "w")
    assert len(rows) == 2 and {r["state"] for r in rows} == {"complete"}
    assert json.loads((tmp_path / "w" / "sweep.json").read_text())["wandb_sweep_id"] == "fake-sweep-id"


def test_wandb_backend_without_credentials_is_one_line(tmp_path, demo_data, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = write_config(tmp_path / "w.yaml")
    result = sweep(cfg, "--data", demo_data, "--out", tmp_path / "sweeps", "--backend", "wandb")
    assert result.exit_code == 2 and "--backend local" in result.output and "Traceback" not in result.output


def test_a_missing_dataset_stops_the_sweep_before_it_starts(tmp_path):
    cfg = write_config(tmp_path / "g.yaml")
    result = sweep(cfg, "--data", tmp_path / "nowhere", "--out", tmp_path / "sweeps", "--backend", "local")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "sweeps").exists()


def test_resume_of_a_damaged_sweep_folder_is_one_line(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "sweep.json").write_text("{ cut off")
    result = sweep("--resume", folder)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{folder / 'sweep.json'} is damaged (JSONDecodeError)" in result.output
    assert sweep("--resume", tmp_path / "nowhere").exit_code == 2  # not a sweep folder: usage
