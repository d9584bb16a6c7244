"""Sweep configs in W&B's sweep format, validated before any trial starts.

    method: bayes                      # grid | random | bayes
    metric: {name: valid_accuracy, goal: maximize}
    command: [fastinat, scratch]       # which training: scratch or finetune
    parameters:
      dropout: {values: [0, 0.2, 0.4]}
      lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
      epochs: {value: 10}
    early_terminate: {type: hyperband, min_iter: 3, eta: 3}

Parameter names are the CLI option names of `fastinat scratch` / `fastinat finetune`
(`dense-units` or `dense_units`). Every value is checked with the same code that checks the
command line, so a sweep never starts with a value its trials would refuse.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TRAIN_CONFIGS, TrainConfig
from ..errors import FastinatError, UsageError, did_you_mean
from ..options import load_yaml, resolve, specs

COMMANDS: dict[str, type[TrainConfig]] = TRAIN_CONFIGS
METHODS = ("grid", "random", "bayes")
METRICS = ("valid_accuracy", "valid_loss", "valid_f1")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform", "categorical")
#: Top-level keys W&B's sweep format knows; anything else is a typo.
KNOWN_KEYS = {"method", "metric", "parameters", "early_terminate", "command", "program", "name",
              "description", "project", "entity", "run_cap"}
#: Options a sweep sets itself, per trial.
NOT_SWEEPABLE = {"data", "out", "name", "resume", "config"}


def builtin_dir() -> Path:
    """recipes/sweeps/, shipped as package data of fastinat.recipes."""
    from importlib.resources import files

    return Path(str(files("fastinat.recipes") / "sweeps"))


class SweepConfigError(UsageError):
    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")


@dataclass
class Param:
    name: str  # the config field (underscores)
    key: str  # as written in the YAML
    kind: str  # value | values | uniform | log_uniform_values | int_uniform | q_uniform
    values: list = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    q: float | None = None


@dataclass
class SweepConfig:
    path: Path
    raw: dict
    command: str
    method: str
    metric: str
    goal: str  # maximize | minimize
    params: list[Param]
    hyperband: dict | None = None  # {"min_iter", "eta", "max_iter"}

    @property
    def config_cls(self) -> type[TrainConfig]:
        return COMMANDS[self.command]

    @property
    def searched(self) -> list[Param]:
        return [p for p in self.params if p.kind != "value"]

    def fixed(self) -> dict:
        return {p.name: p.values[0] for p in self.params if p.kind == "value"}

    def grid_size(self) -> int | None:
        if self.method != "grid":
            return None
        return math.prod(len(p.values) for p in self.searched) if self.searched else 1


def find_config(name: str | Path) -> Path:
    """A YAML path, or the name of a built-in sweep (`scratch`, `finetune`)."""
    path = Path(name)
    if path.is_file():
        return path
    builtin = builtin_dir() / f"{name}.yaml"
    if not path.suffix and builtin.is_file():
        return builtin
    known = ", ".join(sorted(p.stem for p in builtin_dir().glob("*.yaml")))
    raise UsageError(f"No sweep config {name} (a YAML file, or one of the built-in: {known}).")


def _command(path, raw: dict) -> str:
    cmd = raw.get("command")
    words = [str(w) for w in cmd] if isinstance(cmd, list) else str(cmd or "").split()
    found = [w for w in words if w in COMMANDS]
    if len(found) != 1:
        raise SweepConfigError(path, "`command` must name the training, e.g. [fastinat, scratch] or "
                                     "[fastinat, finetune].")
    return found[0]


def _check_value(path, cls, name: str, key: str, value) -> None:
    """Raise SweepConfigError if `fastinat <command> --key value` would be refused."""
    try:
        resolve(cls, overrides={name: value})
    except FastinatError as e:
        why = re.sub(r"^Bad option( [\w-]+)?: ", "", str(e))
        raise SweepConfigError(path, f"parameter {key}: {why}") from None


def _param(path, cls, key: str, spec) -> Param:
    name = str(key).replace("-", "_")
    sweepable = [n.replace("_", "-") for n in specs(cls) if n not in NOT_SWEEPABLE]
    if name not in specs(cls) or name in NOT_SWEEPABLE:
        why = "is set by the sweep itself" if name in NOT_SWEEPABLE else \
            f"is not an option of fastinat {cls.command}"
        raise SweepConfigError(path, f"parameter {key} {why}{did_you_mean(name.replace('_', '-'), sweepable)}.")
    if not isinstance(spec, dict):
        raise SweepConfigError(path, f"parameter {key} must be a mapping such as {{values: [...]}} or "
                                     "{value: ...}.")
    if "value" in spec:
        _check_value(path, cls, name, key, spec["value"])
        return Param(name, key, "value", [spec["value"]])
    dist = spec.get("distribution", "categorical" if "values" in spec else None)
    if dist not in DISTRIBUTIONS:
        raise SweepConfigError(path, f"parameter {key}: unknown distribution {dist!r}; use values, value, "
                                     f"or one of {', '.join(DISTRIBUTIONS)}.")
    if dist == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SweepConfigError(path, f"parameter {key}: values must be a non-empty list.")
        for v in values:
            _check_value(path, cls, name, key, v)
        return Param(name, key, "values", list(values))
    lo, hi = spec.get("min"), spec.get("max")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or not lo < hi:
        raise SweepConfigError(path, f"parameter {key}: {dist} needs numbers min < max.")
    if dist == "log_uniform_values" and lo <= 0:
        raise SweepConfigError(path, f"parameter {key}: log_uniform_values needs min > 0.")
    for v in (lo, hi):
        _check_value(path, cls, name, key, int(v) if dist == "int_uniform" else v)
    return Param(name, key, dist, [], float(lo), float(hi), spec.get("q"))


def load_sweep_config(path: str | Path, overrides: dict | None = None) -> SweepConfig:
    """Read and validate a sweep YAML; `overrides` ({option: value}, e.g. epochs) fix options."""
    path = find_config(path)
    raw = load_yaml(path)
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise SweepConfigError(path, f"unknown key {unknown[0]!r}; a sweep config has "
                                     f"{', '.join(sorted(KNOWN_KEYS))}.")
    command = _command(path, raw)
    cls = COMMANDS[command]
    method = raw.get("method")
    if method not in METHODS:
        raise SweepConfigError(path, f"unknown method {method!r}; use grid, random or bayes.")
    metric = raw.get("metric") or {"name": "valid_accuracy", "goal": "maximize"}
    name, goal = metric.get("name"), metric.get("goal", "maximize")
    if name not in METRICS:
        why = " (never select on the TEST set)" if str(name).startswith("test") else ""
        raise SweepConfigError(path, f"unknown metric {name!r}{why}; use {', '.join(METRICS)}.")
    if goal not in ("maximize", "minimize"):
        raise SweepConfigError(path, f"metric goal must be maximize or minimize, not {goal!r}.")
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SweepConfigError(path, "`parameters` must map option names to {values: [...]} or {value: ...}.")
    params = {}
    for key, spec in params_raw.items():
        p = _param(path, cls, key, spec)
        if p.name in params:
            raise SweepConfigError(path, f"parameter {key} is given twice.")
        params[p.name] = p
    for key, value in (overrides or {}).items():
        if value is not None:
            _check_value(path, cls, key, key.replace("_", "-"), value)
            params[key] = Param(key, key.replace("_", "-"), "value", [value])
    if method == "grid":
        continuous = [p.key for p in params.values() if p.kind not in ("value", "values")]
        if continuous:
            raise SweepConfigError(path, f"a grid sweep needs values lists; {continuous[0]} is a "
                                         "distribution.")
    hyperband = None
    early = raw.get("early_terminate")
    if early:
        if not isinstance(early, dict) or early.get("type") != "hyperband":
            raise SweepConfigError(path, "early_terminate supports type: hyperband.")
        hyperband = {"min_iter": int(early.get("min_iter", 1)), "eta": int(early.get("eta", 3)),
                     "max_iter": early.get("max_iter")}
        if hyperband["min_iter"] < 1 or hyperband["eta"] < 2:
            raise SweepConfigError(path, "early_terminate needs min_iter >= 1 and eta >= 2.")
    return SweepConfig(path, raw, command, method, name, goal, list(params.values()), hyperband)
