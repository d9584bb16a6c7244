"""W&B's sweep format, faithfully: every distribution as W&B defines it, inferred distributions,
grids over discrete ranges, W&B's defaults (goal, q, probabilities, run_cap, target, hyperband)
and one line for every config W&B refuses. Nothing here trains: draws go through the sweep's
own sampling (`_suggest`) on Optuna trials, sweeps through a scripted `run_trial`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from typer.testing import CliRunner

from fastinat.recipes.cli import app
from fastinat.sweeps import run as sweep_run
from fastinat.sweeps.config import SweepConfig, load_sweep_config, wandb_param

runner = CliRunner()
N = 2000  # draws per distribution
SD = 4.5  # tolerance, in standard errors (fixed seeds: no flakiness, a wrong definition still fails)


def draws(spec: dict, n: int = N, seed: int = 0) -> list:
    """n draws of one parameter by the local backend's sampling, on Optuna trials (RandomSampler)."""
    cfg = SweepConfig(Path("t.yaml"), {}, "scratch", "random", "valid_loss", "minimize",
                      [wandb_param("t.yaml", "x", spec)])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        out.append(sweep_run._suggest(study.ask(), cfg)["x"])
    return out


def _q(x, q):
    return np.round(x / q) * q


# (spec, support [lo, hi], W&B's definition as a numpy sampler, q)
E = math.e
CASES = {
    "uniform": ({"distribution": "uniform", "min": -1.0, "max": 3.0}, (-1, 3),
                lambda r, n: r.uniform(-1, 3, n), None),
    "int_uniform": ({"distribution": "int_uniform", "min": 1, "max": 6}, (1, 6),
                    lambda r, n: r.integers(1, 7, n), 1),
    "q_uniform": ({"distribution": "q_uniform", "min": 0, "max": 10}, (0, 10),  # q: W&B's default 1
                  lambda r, n: _q(r.uniform(0, 10, n), 1), 1),
    "q_uniform q=0.25": ({"distribution": "q_uniform", "min": 0.1, "max": 0.9, "q": 0.25}, (0, 1),
                         lambda r, n: _q(r.uniform(0.1, 0.9, n), 0.25), 0.25),
    "log_uniform": ({"distribution": "log_uniform", "min": -3.0, "max": 1.0}, (E ** -3, E),  # exponents
                    lambda r, n: np.exp(r.uniform(-3, 1, n)), None),
    "log_uniform_values": ({"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-2},
                           (1e-4, 1e-2), lambda r, n: np.exp(r.uniform(np.log(1e-4), np.log(1e-2), n)), None),
    "q_log_uniform": ({"distribution": "q_log_uniform", "min": 0.0, "max": 4.0, "q": 2}, (0, 54),
                      lambda r, n: _q(np.exp(r.uniform(0, 4, n)), 2), 2),
    "q_log_uniform_values": ({"distribution": "q_log_uniform_values", "min": 8, "max": 512, "q": 8},
                             (8, 512), lambda r, n: _q(np.exp(r.uniform(np.log(8), np.log(512), n)), 8), 8),
    "inv_log_uniform": ({"distribution": "inv_log_uniform", "min": 0.0, "max": 3.0}, (E ** -3, 1),
                        lambda r, n: np.exp(-r.uniform(0, 3, n)), None),
    "inv_log_uniform_values": ({"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1.0},
                               (0.01, 1), lambda r, n: 1 / np.exp(r.uniform(np.log(1), np.log(100), n)), None),
    "normal": ({"distribution": "normal", "mu": 2.0, "sigma": 0.5}, (-math.inf, math.inf),
               lambda r, n: r.normal(2, 0.5, n), None),
    "normal defaults": ({"distribution": "normal"}, (-math.inf, math.inf),
                        lambda r, n: r.normal(0, 1, n), None),
    "q_normal": ({"distribution": "q_normal", "mu": 10.0, "sigma": 3.0, "q": 2}, (-math.inf, math.inf),
                 lambda r, n: _q(r.normal(10, 3, n), 2), 2),
    "log_normal": ({"distribution": "log_normal", "mu": 0.0, "sigma": 0.5}, (0, math.inf),
                   lambda r, n: r.lognormal(0, 0.5, n), None),
    "q_log_normal": ({"distribution": "q_log_normal", "mu": 2.0, "sigma": 0.5, "q": 1}, (0, math.inf),
                     lambda r, n: _q(r.lognormal(2, 0.5, n), 1), 1),
    "beta": ({"distribution": "beta", "a": 2.0, "b": 5.0}, (0, 1), lambda r, n: r.beta(2, 5, n), None),
    "beta defaults": ({"distribution": "beta"}, (0, 1), lambda r, n: r.beta(1, 1, n), None),
    "q_beta": ({"distribution": "q_beta", "a": 3.0, "b": 3.0, "q": 0.1}, (0, 1),
               lambda r, n: _q(r.beta(3, 3, n), 0.1), 0.1),
}


@pytest.mark.parametrize("case", CASES)
def test_each_distribution_draws_what_wandb_defines(case):
    from scipy import stats

    spec, (lo, hi), definition, q = CASES[case]
    x = draws(spec)
    arr = np.array(x, dtype=float)
    assert len(x) == N and np.all(np.isfinite(arr))
    assert arr.min() >= lo - 1e-12 and arr.max() <= hi + 1e-12, (arr.min(), arr.max())
    if q is not None:  # multiples of q; whole numbers (ints) when q is a YAML integer, as W&B
        assert np.allclose(arr / q, np.round(arr / q), atol=1e-9)
        whole = spec["distribution"] == "int_uniform" or isinstance(spec.get("q", 1.0), int)
        assert all(isinstance(v, int) for v in x) == whole
    ref = definition(np.random.default_rng(1), 400_000).astype(float)
    assert abs(arr.mean() - ref.mean()) < SD * ref.std() / math.sqrt(N), (arr.mean(), ref.mean())
    assert abs(arr.std() / ref.std() - 1) < 0.1, (arr.std(), ref.std())
    assert stats.ks_2samp(arr, ref).pvalue > 1e-3  # the whole distribution, not only two moments


def test_categorical_draws_follow_probabilities_or_are_uniform():
    values = ["relu", "elu", "silu"]
    for probs in ([0.6, 0.3, 0.1], None):
        spec = {"values": values, **({"probabilities": probs} if probs else {})}
        x = draws(spec)
        for v, p in zip(values, probs or [1 / 3] * 3, strict=True):
            share = x.count(v) / N
            assert abs(share - p) < SD * math.sqrt(p * (1 - p) / N), (v, share, p)


@pytest.mark.parametrize("spec,kind", [
    ({"values": [1, 2]}, "categorical"),
    ({"values": [1, 2], "probabilities": [0.5, 0.5]}, "categorical_w_probabilities"),
    ({"value": 3}, "constant"),
    ({"min": 1, "max": 5}, "int_uniform"),
    ({"min": 0.1, "max": 0.5}, "uniform"),
    ({"min": 1, "max": 5.0}, "uniform"),
    ({"distribution": "uniform", "min": 1, "max": 5}, "uniform"),
])
def test_distributions_are_inferred_as_wandb_infers_them(spec, kind):
    p = wandb_param("t.yaml", "x", spec)
    assert p.kind == kind
    if kind == "int_uniform":
        assert set(draws(spec, 300)) == {1, 2, 3, 4, 5}


def test_wandb_defaults_fill_missing_keys():
    assert wandb_param("t", "x", {"distribution": "q_uniform", "min": 0, "max": 4}).spec["q"] == 1.0
    assert wandb_param("t", "x", {"distribution": "normal"}).spec == {"mu": 0.0, "sigma": 1.0}
    assert wandb_param("t", "x", {"distribution": "q_beta"}).spec == {"a": 1.0, "b": 1.0, "q": 1.0}


# -- sweeps through the CLI, with a scripted trial ----------------------------------------------

def write(path: Path, parameters: dict, method="random", **extra) -> Path:
    config = {"command": ["fastinat", "scratch"], "method": method, "parameters": parameters, **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def sweep(*args):
    return runner.invoke(app, ["sweep", *map(str, args)])


def leaderboard(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "leaderboard.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def scripted(monkeypatch):
    """run_trial without training: the metric is `score(params)` after every epoch; returns the
    params each trial was given, by trial name."""
    given = {}

    def install(score=lambda params: float(params.get("dropout", 0.5))):
        def run_trial(sweep_dir, cfg, params, name, report=None, console=None):
            given[name] = dict(params)
            value = score(params)
            for epoch in range(1, cfg.fixed().get("epochs", 1) + 1):
                if report is not None and report(value, epoch):
                    return sweep_dir / "runs" / name, {cfg.metric: value}, True
            return sweep_dir / "runs" / name, {cfg.metric: value}, False

        monkeypatch.setattr(sweep_run, "run_trial", run_trial)
        return given

    return install


def test_grid_runs_every_point_of_discrete_ranges(tmp_path, scripted):
    given = scripted()
    cfg = write(tmp_path / "g.yaml", {
        "bs": {"min": 16, "max": 17},  # int_uniform: 16, 17
        "dropout": {"distribution": "q_uniform", "min": 0, "max": 0.2, "q": 0.1},  # W&B: 0, 0.1 (not max)
        "l2": {"distribution": "q_log_uniform_values", "min": 0.01, "max": 0.02, "q": 0.01},
        "epochs": {"value": 1}}, method="grid")
    assert load_sweep_config(cfg).grid_size() == 8
    result = sweep(cfg, "--data", tmp_path, "--out", tmp_path, "--name", "s", "--backend", "local")
    assert result.exit_code == 0, result.output
    ran = {(p["bs"], round(p["dropout"], 9), round(p["l2"], 9)) for p in given.values()}
    assert len(given) == 8 and ran == {(b, d, w) for b in (16, 17) for d in (0, 0.1) for w in (0.01, 0.02)}
    assert all(isinstance(p["bs"], int) for p in given.values())


def test_goal_defaults_to_minimize_and_run_cap_is_the_total(tmp_path, scripted):
    """metric without goal: minimize (printed); run_cap trials without --count; q_uniform without q
    gives whole numbers (W&B's q: 1), ints for an int option; what is recorded is what ran."""
    given = scripted(lambda p: p["dropout"])
    cfg = write(tmp_path / "r.yaml", {"dropout": {"min": 0.0, "max": 0.5},
                                      "bs": {"distribution": "q_uniform", "min": 16, "max": 20},
                                      "l2": {"distribution": "log_uniform_values", "min": 1.0e-5, "max": 1.0e-3}},
                metric={"name": "valid_loss"}, run_cap=4)
    result = sweep(cfg, "--data", tmp_path, "--out", tmp_path, "--name", "s", "--backend", "local")
    assert result.exit_code == 0, result.output
    assert "metric: valid_loss, goal: minimize (W&B's default" in result.output
    rows = leaderboard(tmp_path / "s")
    assert len(rows) == 4 and len(given) == 4
    assert [float(r["valid_loss"]) for r in rows] == sorted(float(r["valid_loss"]) for r in rows)  # lowest first
    for r in rows:
        ran = given[f"trial-{int(r['trial']):03d}"]
        assert isinstance(ran["bs"], int) and 16 <= ran["bs"] <= 20 and r["bs"] == str(ran["bs"])
        assert 1e-5 <= ran["l2"] <= 1e-3 and float(r["l2"]) == pytest.approx(ran["l2"], rel=1e-3)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert {"dropout.quantile", "bs.quantile", "l2.quantile"} == set(study.trials[0].params)
    assert study.trials[0].user_attrs["params"] == given["trial-000"]  # the values, not the quantiles
    with open(tmp_path / "s" / "param_importance.csv") as fh:
        assert {r["parameter"] for r in csv.DictReader(fh)} <= {"dropout", "bs", "l2"}


def test_target_ends_the_sweep_once_a_trial_reaches_it(tmp_path, scripted):
    given = scripted()
    cfg = write(tmp_path / "t.yaml", {"dropout": {"min": 0.0, "max": 0.5}},
                metric={"name": "valid_accuracy", "goal": "maximize", "target": 0.4})
    result = sweep(cfg, "--data", tmp_path, "--out", tmp_path, "--name", "s", "--backend", "local",
                   "--count", "50")
    assert result.exit_code == 0, result.output
    values = [given[f"trial-{i:03d}"]["dropout"] for i in range(len(given))]
    assert len(values) < 50 and values[-1] >= 0.4 and all(v < 0.4 for v in values[:-1])
    assert f"metric.target 0.4 reached by trial {len(values) - 1}" in result.output
    again = sweep("--resume", tmp_path / "s", "--count", "60")
    assert again.exit_code == 0 and len(given) == len(values)  # reached: nothing more runs


def test_wandb_only_keys_are_one_note_and_log_uniform_gets_wandbs_warning(tmp_path, scripted):
    scripted()
    cfg = write(tmp_path / "w.yaml", {"l2": {"distribution": "log_uniform", "min": -9.0, "max": -5.0}},
                controller={"type": "local"}, job="entity/project/job:v0", run_cap=1)
    result = sweep(cfg, "--data", tmp_path, "--out", tmp_path, "--name", "s", "--backend", "local")
    assert result.exit_code == 0, result.output
    assert "note: controller, job: W&B-only, ignored by the local backend" in result.output
    assert "l2 uses log_uniform, where min/max are exponents of e" in result.output


def test_a_space_that_touches_an_options_bound_is_accepted_with_a_note(tmp_path):
    """The issue's space: q_beta rounds its rare draws above 0.975 up to 1.0, which dropout
    (below 1) refuses; W&B runs the sweep, so does fastinat, and says how rare that draw is."""
    cfg = load_sweep_config(write(tmp_path / "b.yaml", {
        "dropout": {"distribution": "q_beta", "a": 2, "b": 5, "q": 0.05}}))
    assert cfg.notes == ["note: the q_beta space of dropout touches the option's bound: a draw of 1 (about 1 "
                         "in 18,000,000 at random) fails its trial alone, as on W&B (must be at least 0 and "
                         "below 1, got 1.0)"]
    cfg = load_sweep_config(write(tmp_path / "u.yaml", {
        "dropout": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.05}}))
    assert "a draw of 1 (about 1 in 40 at random)" in cfg.notes[0]  # [0.975, 1] of [0, 1]


def test_a_draw_on_the_touched_bound_fails_that_trial_alone(tmp_path, monkeypatch):
    """A grid of q_beta over dropout runs 0, 0.5 and 1.0: the real trial path (`run_trial` ->
    `train_scratch`, the option's own check) fails the 1.0 trial with one line; the others run."""
    import json

    import fastinat.train

    def train(cfg, recipe, *, resume=None, cbs=(), console=None):  # what a finished run leaves
        run_dir = Path(cfg.out) / cfg.name
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"valid_accuracy": 1 - cfg.dropout}))
        return run_dir

    monkeypatch.setattr(fastinat.train, "train", train)
    cfg = write(tmp_path / "g.yaml", {"dropout": {"distribution": "q_beta", "a": 2, "b": 5, "q": 0.5},
                                      "epochs": {"value": 1}},
                method="grid", metric={"name": "valid_accuracy", "goal": "maximize"})
    result = sweep(cfg, "--data", tmp_path, "--out", tmp_path, "--name", "s", "--backend", "local")
    assert result.exit_code == 0, result.output
    assert "touches the option's bound: a draw of 1 " in result.output
    failed = [line for line in result.output.splitlines() if "failed:" in line]
    assert failed == [failed[0]] and failed[0].endswith(
        "failed: Bad option --dropout: must be at least 0 and below 1, got 1.0."), result.output
    assert "Traceback" not in result.output
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    states = {t.user_attrs["params"]["dropout"]: t.state.name for t in study.trials}
    assert states == {0.0: "COMPLETE", 0.5: "COMPLETE", 1.0: "FAIL"}
    assert sorted(float(r["dropout"]) for r in leaderboard(tmp_path / "s") if r["valid_accuracy"]) == [0.0, 0.5]


# -- hyperband, as W&B computes it -----------------------------------------------------------------

@pytest.mark.parametrize("early,bands", [
    ({"min_iter": 3}, [3, 9, 27, 81]),  # eta: W&B's default 3
    ({"min_iter": 1, "eta": 2}, [1, 2, 4, 8]),
    ({"min_iter": 2, "eta": 1.5}, [2, 3, 4, 6, 10]),  # eta as a number: 2, 3.0, 4.5, 6.75, 10.1
    ({"max_iter": 27, "s": 2}, [3, 9]),
    ({"max_iter": 81, "s": 3, "eta": 3}, [3, 9, 27]),
    ({"max_iter": 10, "s": 5, "eta": 2}, [1, 2, 5]),  # stops below 1
])
def test_hyperband_bands_from_min_iter_or_max_iter_and_s(tmp_path, early, bands):
    cfg = write(tmp_path / "h.yaml", {"dropout": {"values": [0, 0.2]}},
                early_terminate={"type": "hyperband", **early})
    hb = load_sweep_config(cfg).hyperband
    assert hb["bands"][:len(bands)] == bands and hb["strict"] is True


def test_hyperband_stops_as_wandb_strict_and_not():
    stops = sweep_run.hyperband_stops  # lower is better
    others = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]]
    # at band 2 the threshold is the 1/eta quantile of every trial's value there (own included)
    assert stops([9.0, 9.0], others + [[9.0, 9.0]], [1, 2], 2, True)
    assert not stops([1.5, 1.5], others + [[1.5, 1.5]], [1, 2], 2, True)
    assert not stops([5.0], others + [[5.0]], [2], 2, True)  # no band reached yet
    # strict compares the value at the band; not strict its best so far
    late = [0.5, 9.0]
    assert stops(late, others + [late], [1, 2], 2, True)
    assert not stops(late, others + [late], [1, 2], 2, False)


# -- refusals: one line naming the parameter, exit 2, before anything is made -------------------------

def refused(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text("command: [fastinat, scratch]\n" + text)
    result = sweep(path, "--data", tmp_path, "--out", tmp_path / "sweeps", "--backend", "local")
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "sweeps").exists()
    return result.output


@pytest.mark.parametrize("text,message", [
    ("method: random\nparameters: {lr: {distribution: log_uniform_values, min: 1e-4, max: 1.0e-2}}",
     "parameter lr: min: YAML reads 1e-4 as text, not a number (a YAML float needs a dot and a signed "
     "exponent); write 1.0e-4."),
    ("method: random\nrun_cap: 1e3\nparameters: {dropout: {values: [0.1]}}", "run_cap: YAML reads 1e3 as text"),
    ("method: random\nparameters: {lr: {distribution: loguniform_values, min: 0.1, max: 1.0}}",
     "parameter lr: unknown distribution 'loguniform_values' (did you mean log_uniform_values?)"),
    ("method: random\nparameters: {lr: {distribution: uniform, min: 0.1, max: 0.5, q: 0.1}}",
     "parameter lr: uniform takes min, max, not q."),
    ("method: random\nparameters: {lr: {distribution: log_uniform_values, min: 0, max: 0.1}}",
     "parameter lr: log_uniform_values takes values, so min must be above 0"),
    ("method: random\nparameters: {dropout: {min: 0.5, max: 0.1}}", "parameter dropout: min 0.5 must be below max 0.1"),
    ("method: random\nparameters: {bs: {distribution: int_uniform, min: 16, max: 64.5}}",
     "parameter bs: max must be a whole number"),
    ("method: random\nparameters: {bs: {min: 16.0, max: 64.0}}", "parameter bs takes whole numbers, and uniform draws "
                                                              "fractions"),
    ("method: random\nparameters: {bs: {distribution: q_uniform, min: 16, max: 64, q: 0.5}}",
     "parameter bs takes whole numbers, and q_uniform draws fractions"),
    ("method: random\nparameters: {lr: {distribution: normal, mu: 0.1, sigma: 0}}", "parameter lr: sigma must be above 0"),
    ("method: random\nparameters: {dropout: {distribution: beta, a: -1}}", "parameter dropout: a must be above 0"),
    ("method: random\nparameters: {dropout: {distribution: normal, mu: 2.0, sigma: 0.1}}",
     "parameter dropout: must be at least 0 and below 1, got 2.0"),
    ("method: random\nparameters: {dropout: {distribution: q_uniform, min: 0, max: 1.5, q: 0.05}}",
     "parameter dropout: must be at least 0 and below 1, got 1.5"),  # beyond the bound, not touching it
    ("method: random\nparameters: {dropout: {distribution: uniform, min: 0, max: 1.01}}",
     "parameter dropout: must be at least 0 and below 1, got 1.0099"),
    ("method: random\nparameters: {dropout: {distribution: q_uniform, min: 0.96, max: 1, q: 0.05}}",
     "parameter dropout: must be at least 0 and below 1, got 1.0"),  # touching, but every draw is 1.0
    ("method: random\nparameters: {dropout: {values: [0.1, 0.2], probabilities: [0.5, 0.6]}}",
     "parameter dropout: probabilities must be one number >= 0 per value, summing to 1"),
    ("method: random\nparameters: {dropout: {distribution: categorical, values: [0.1], probabilities: [1.0]}}",
     "parameter dropout: W&B calls values with probabilities categorical_w_probabilities"),
    ("method: random\nparameters: {dropout: {distribution: constant}}", "parameter dropout: constant needs value."),
    ("method: random\nparameters: {dropout: {mu: 0.1}}", "parameter dropout needs values, value, min and max, or a "
                                                      "distribution."),
    ("method: random\nparameters: {opt: {parameters: {lr: {value: 0.1}}}}", "parameter opt is not an option"),
    ("method: random\nparameters: {dropout: {parameters: {lr: {value: 0.1}}}}", "parameter dropout: nested parameters"),
    ("method: grid\nparameters: {dropout: {distribution: normal, mu: 0.2, sigma: 0.1}}",
     "a grid sweep needs discrete parameters; dropout is normal"),
    ("method: grid\nparameters: {dropout: {values: [0.1, 0.2], probabilities: [0.5, 0.5]}}",
     "parameter dropout: a grid runs every value, so probabilities have no meaning there"),
    ("method: custom\nparameters: {dropout: {values: [0.1]}}", "unknown method 'custom'"),
    ("method: random\nmetric: {name: valid_loss, goal: lower}\nparameters: {dropout: {values: [0.1]}}",
     "metric goal must be maximize or minimize"),
    ("method: random\nmetric: {name: valid_loss, aim: 0.1}\nparameters: {dropout: {values: [0.1]}}",
     "unknown key metric.aim"),
    ("method: random\nmetrics: [{name: valid_loss}, {name: valid_f1}]\nparameters: {dropout: {values: [0.1]}}",
     "metrics (several objectives) needs W&B's method: custom"),
    ("method: random\nrun_cap: 0\nparameters: {dropout: {values: [0.1]}}", "run_cap must be at least 1"),
    ("method: random\nscheduler: {engine: optuna}\nparameters: {dropout: {values: [0.1]}}",
     "scheduler needs engine: wandb"),
    ("method: random\ncontroller: {type: remote}\nparameters: {dropout: {values: [0.1]}}",
     "controller must be {type: local} or {type: cloud}"),
    ("method: random\nearly_terminate: {type: hyperband, eta: 3}\nparameters: {dropout: {values: [0.1]}}",
     "early_terminate: hyperband needs min_iter, or max_iter and s."),
    ("method: random\nearly_terminate: {type: hyperband, min_iter: 2, max_iter: 9}\nparameters: {dropout: {values: [0.1]}}",
     "early_terminate: hyperband needs min_iter, or max_iter and s."),
    ("method: random\nearly_terminate: {type: hyperband, min_iter: 1, eta: 1}\nparameters: {dropout: {values: [0.1]}}",
     "early_terminate needs min_iter >= 1, eta above 1"),
    ("method: random\nearly_terminate: {type: hyperband, max_iter: 2, s: 1}\nparameters: {dropout: {values: [0.1]}}",
     "early_terminate: max_iter 2, s 1 and eta 3 leave no epoch to stop at"),
    ("method: random\nearly_terminate: {type: hyperband, min_iter: 1, bands: 3}\nparameters: {dropout: {values: [0.1]}}",
     "unknown key early_terminate.bands"),
])
def test_configs_wandb_refuses_are_one_line_naming_the_problem(tmp_path, text, message):
    assert message in refused(tmp_path, text)


def test_wandb_backend_refuses_a_grid_wandbs_grid_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setattr("fastinat.sweeps._need_wandb_online", lambda: None)
    cfg = write(tmp_path / "g.yaml", {"l2": {"distribution": "q_beta", "q": 0.25}}, method="grid")
    result = sweep(cfg, "--data", tmp_path, "--out", tmp_path / "sweeps", "--backend", "wandb")
    assert result.exit_code == 2 and "l2 is q_beta (--backend local grids it)" in result.output
    assert load_sweep_config(cfg).params[0].values == [0.0, 0.25, 0.5, 0.75, 1.0]  # the local grid
