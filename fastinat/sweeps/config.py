"""Sweep configs in W&B's sweep format, validated before any trial starts.

    method: bayes                      # grid | random | bayes
    metric: {name: valid_accuracy, goal: maximize}   # goal: minimize when not given (W&B's)
    command: [fastinat, scratch]       # which training: scratch or finetune
    parameters:
      dropout: {values: [0, 0.2, 0.4]}
      lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}
      bs: {min: 16, max: 64}           # integers: int_uniform, as W&B infers
      epochs: {value: 10}
    early_terminate: {type: hyperband, min_iter: 3, eta: 3}

Parameter names are the CLI option names of `fastinat scratch` / `fastinat finetune`
(`dense-units` or `dense_units`). Every distribution of W&B's sweep config schema is read with
W&B's keys and defaults (`DISTRIBUTIONS`), and `Param.draw` is W&B's own inverse CDF
(wandb/sweeps `params.py`), so a local sweep samples what W&B samples. Every value is checked
with the same code that checks the command line, so a sweep never starts with a value its
trials would refuse.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TRAIN_CONFIGS, TrainConfig
from ..errors import FastinatError, UsageError, did_you_mean
from ..options import load_yaml, resolve, specs, value

COMMANDS: dict[str, type[TrainConfig]] = TRAIN_CONFIGS
METHODS = ("grid", "random", "bayes")
METRICS = ("valid_accuracy", "valid_loss", "valid_f1")
GOALS = ("minimize", "maximize")  # W&B's default first

# W&B's distributions: their keys and W&B's defaults (None: required), as in W&B's schema.
_RANGE = {"min": None, "max": None}
_Q = {"q": 1.0}
_NORMAL = {"mu": 0.0, "sigma": 1.0}
_BETA = {"a": 1.0, "b": 1.0}
DISTRIBUTIONS: dict[str, dict] = {
    "constant": {"value": None}, "categorical": {"values": None},
    "categorical_w_probabilities": {"values": None, "probabilities": None},
    "int_uniform": _RANGE, "uniform": _RANGE, "q_uniform": {**_RANGE, **_Q},
    "log_uniform": _RANGE, "log_uniform_values": _RANGE, "q_log_uniform": {**_RANGE, **_Q},
    "q_log_uniform_values": {**_RANGE, **_Q}, "inv_log_uniform": _RANGE, "inv_log_uniform_values": _RANGE,
    "normal": _NORMAL, "q_normal": {**_NORMAL, **_Q}, "log_normal": _NORMAL, "q_log_normal": {**_NORMAL, **_Q},
    "beta": _BETA, "q_beta": {**_BETA, **_Q},
}
CHOICES = ("constant", "categorical", "categorical_w_probabilities")  # the values are listed
WANDB_GRID = ("constant", "categorical", "int_uniform", "q_uniform")  # what W&B's own grid takes
UNBOUNDED = ("normal", "log_normal")  # infinite support (also quantised)
#: W&B warns that these take exponents of e; most people mean the `_values` form.
EXPONENTS = ("log_uniform", "q_log_uniform", "inv_log_uniform")
TINY = 1e-9  # the quantiles that stand for a support's ends
#: Top-level keys fastinat reads.
KNOWN_KEYS = {"method", "metric", "parameters", "early_terminate", "command", "program", "name",
              "description", "project", "entity", "run_cap"}
#: W&B's other top-level keys: valid, handed to W&B unchanged, of no use to the local backend.
WANDB_ONLY = ("controller", "scheduler", "job", "image_uri", "apiVersion", "kind")
TEXT_KEYS = ("program", "name", "description", "project", "entity", "job", "image_uri", "apiVersion")
HYPERBAND_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")
METRIC_KEYS = {"name": None, "goal": None, "target": None, "impute": ("latest", "best", "worst"),
               "impute_while_running": ("latest", "best", "worst", "false")}
#: Options a sweep sets itself, per trial.
NOT_SWEEPABLE = {"data", "out", "name", "resume", "config"}


def builtin_dir() -> Path:
    """recipes/sweeps/, shipped as package data of fastinat.recipes."""
    from ..paths import builtin_dir as shipped

    return shipped("sweeps")


class SweepConfigError(UsageError):
    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")


@dataclass
class Param:
    name: str  # the config field (underscores)
    key: str  # as written in the YAML
    kind: str  # W&B's distribution, as written or inferred: constant, categorical, int_uniform, ...
    spec: dict = field(default_factory=dict)  # its W&B keys, W&B's defaults filled in
    values: list = field(default_factory=list)  # constant / categorical values; a grid's points

    @property
    def base(self) -> str:
        """The distribution before rounding: q_log_uniform_values -> log_uniform_values."""
        return self.kind[2:] if self.kind.startswith("q_") else self.kind

    def draw(self, u: float):
        """The value W&B draws at quantile u in [0, 1]: W&B's inverse CDF (sweeps `params.py`)."""
        import numpy as np
        from scipy import stats

        s, base = self.spec, self.base
        u = min(max(u, TINY), 1 - TINY)  # as W&B's draws: never an end (randint's ppf(0) is min - 1)
        if self.kind == "categorical_w_probabilities":
            return self.values[int(np.argmin(u >= np.cumsum(s["probabilities"])))]
        if self.kind == "int_uniform":
            return int(stats.randint.ppf(u, s["min"], s["max"] + 1))
        lo, hi = s.get("min"), s.get("max")
        if base.endswith("_values"):  # limits as values: the same draw on their logarithms
            lo, hi = math.log(lo), math.log(hi)
        x = {"uniform": lambda: lo + u * (hi - lo),
             "log_uniform": lambda: math.exp(lo + u * (hi - lo)),
             "log_uniform_values": lambda: math.exp(lo + u * (hi - lo)),
             "inv_log_uniform": lambda: math.exp(-(lo + (1 - u) * (hi - lo))),
             "inv_log_uniform_values": lambda: math.exp(-(-hi + (1 - u) * (hi - lo))),
             "normal": lambda: stats.norm.ppf(u, loc=s.get("mu"), scale=s.get("sigma")),
             "log_normal": lambda: stats.lognorm.ppf(u, s=s.get("sigma"), scale=math.exp(s.get("mu"))),
             "beta": lambda: stats.beta.ppf(u, a=s.get("a"), b=s.get("b"))}[base]()
        if self.kind.startswith("q_"):
            x = np.round(x / s["q"]) * s["q"]  # to the nearest multiple of q (half to even, as numpy)
            return int(x) if isinstance(s["q"], int) else float(x)
        return float(x)

    def grid(self) -> list | None:
        """The values a grid runs through, or None for a continuous or unbounded distribution.

        As W&B's grid: values, value, int_uniform min..max, q_uniform min, min+q, ... below max.
        Beyond W&B's grid (which refuses them): the other q_ forms with a finite range, as every
        multiple of q a random draw can give.
        """
        import numpy as np

        s = self.spec
        if self.kind in ("constant", "categorical"):
            return list(self.values)
        if self.kind == "int_uniform":
            return list(range(s["min"], s["max"] + 1))
        if self.kind == "q_uniform":
            return np.arange(s["min"], s["max"], s["q"]).tolist()
        if self.kind.startswith("q_") and self.base not in UNBOUNDED:
            lo, hi = (round(self.draw(u) / s["q"]) for u in (0.0, 1.0))
            return [k * s["q"] for k in range(lo, hi + 1)]
        return None


@dataclass
class SweepConfig:
    path: Path
    raw: dict
    command: str
    method: str
    metric: str
    goal: str  # maximize | minimize
    params: list[Param]
    hyperband: dict | None = None  # {"bands": [epochs...], "eta": float, "strict": bool}
    run_cap: int | None = None  # the total of trials when --count is not given
    target: float | None = None  # the sweep ends once a complete trial reaches it
    goal_given: bool = True
    notes: list[str] = field(default_factory=list)  # one line each, shown when the sweep starts
    wandb_only: list[str] = field(default_factory=list)  # keys the local backend ignores

    @property
    def config_cls(self) -> type[TrainConfig]:
        return COMMANDS[self.command]

    @property
    def searched(self) -> list[Param]:
        return [p for p in self.params if p.kind != "constant"]

    def fixed(self) -> dict:
        return {p.name: p.values[0] for p in self.params if p.kind == "constant"}

    def grid_size(self) -> int | None:
        if self.method != "grid":
            return None
        return math.prod(len(p.values) for p in self.searched) if self.searched else 1

    def reached(self, v: float | None) -> bool:
        """True when a trial's value reaches metric.target."""
        if self.target is None or v is None or math.isnan(v):
            return False
        return v >= self.target if self.goal == "maximize" else v <= self.target

    def actual(self, params: dict) -> dict:
        """{key: value as the trial runs with it}: W&B's draws read as the options read them
        (7.0 for an int option is 7; "32,64" for a list is [32, 64]). A value the option
        refuses stays as drawn: its trial fails with the option's message."""
        out = {}
        for key, raw in params.items():
            try:
                out[key] = value(self.config_cls, key.replace("-", "_"), raw)
            except (UsageError, KeyError):
                out[key] = raw
        return out


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


def _command(path, raw: dict) -> tuple[str, list[str]]:
    """The training the sweep runs (and a note when it came from the parameter names).

    `command: [fastinat, scratch]` names it. A W&B config without one (`program: train.py`,
    or W&B's `${program}` macros) gets the command whose options its parameters are.
    """
    cmd = raw.get("command")
    words = [str(w) for w in cmd] if isinstance(cmd, list) else str(cmd or "").split()
    found = sorted({w for w in words if w in COMMANDS})
    if len(found) == 1:
        return found[0], []
    if found:
        raise SweepConfigError(path, f"`command` names both {' and '.join(found)}; keep one.")
    params = raw.get("parameters") if isinstance(raw.get("parameters"), dict) else {}
    names = {str(k).replace("-", "_") for k in params}
    own = {c: sorted(names - set().union(*(specs(o) for o in COMMANDS.values() if o is not cls)))
           for c, cls in COMMANDS.items()}
    sole = [c for c, keys in own.items() if keys]
    if len(sole) == 1:
        shown = ", ".join(k.replace("_", "-") for k in own[sole[0]])
        return sole[0], [f"note: no `command` names the training; {shown} are options of fastinat "
                         f"{sole[0]}, so the trials run fastinat {sole[0]}."]
    why = "parameters of both" if sole else "parameters that fit both"
    raise SweepConfigError(path, f"no `command` names the training and it has {why} scratch and "
                                 "finetune; add command: [fastinat, scratch] or [fastinat, finetune].")


def _yaml_float(text: str) -> str:
    """'1e-4' as YAML reads a float: a dot in the mantissa, a sign in the exponent ('1.0e-4')."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    mantissa += "" if "." in mantissa else ".0"
    if exponent and exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _number(path, where: str, v, whole: bool = False):
    """`v` if it is a number (a whole one if `whole`); else one line that says how to write it."""
    if isinstance(v, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", v.strip()):
        raise SweepConfigError(path, f"{where}: YAML reads {v} as text, not a number (a YAML float needs a "
                                     f"dot and a signed exponent); write {_yaml_float(v)}.")
    if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)):
        raise SweepConfigError(path, f"{where} must be {'a whole number' if whole else 'a number'}, "
                                     f"not {v!r}.")
    return v


def _check_value(path, cls, name: str, key: str, value) -> None:
    """Raise SweepConfigError if `fastinat <command> --key value` would be refused."""
    try:
        resolve(cls, overrides={name: value})
    except FastinatError as e:
        why = re.sub(r"^Bad option( [\w-]+)?: ", "", str(e))
        raise SweepConfigError(path, f"parameter {key}: {why}") from None


def _distribution(path, where: str, spec: dict) -> str:
    """The distribution as written, or as W&B infers it from the keys."""
    kind = spec.get("distribution")
    if kind is None:
        if "value" in spec:
            return "constant"
        if "values" in spec:
            return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
        if "min" in spec and "max" in spec:
            ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            return "int_uniform" if ints else "uniform"
        raise SweepConfigError(path, f"{where} needs values, value, min and max, or a distribution.")
    if kind == "categorical" and "probabilities" in spec:
        raise SweepConfigError(path, f"{where}: W&B calls values with probabilities "
                                     "categorical_w_probabilities; write that, or leave distribution out.")
    if kind not in DISTRIBUTIONS:
        raise SweepConfigError(path, f"{where}: unknown distribution {kind!r}"
                                     f"{did_you_mean(str(kind), DISTRIBUTIONS)}; W&B's are "
                                     f"{', '.join(DISTRIBUTIONS)}.")
    return kind


def _check_numbers(path, where: str, kind: str, s: dict) -> None:
    """W&B's schema rules on min/max, q, mu/sigma, a/b and probabilities (defaults filled in)."""
    for k in ("min", "max", "q", "mu", "sigma", "a", "b"):
        if k in s:
            s[k] = _number(path, f"{where}: {k}", s[k], whole=kind == "int_uniform" and k != "q")
    if "min" in s and not s["min"] < s["max"]:
        raise SweepConfigError(path, f"{where}: min {s['min']} must be below max {s['max']}.")
    if kind.endswith("log_uniform_values") and s["min"] <= 0:
        raise SweepConfigError(path, f"{where}: {kind} takes values, so min must be above 0 (log_uniform "
                                     "takes exponents of e instead).")
    bad = [k for k in ("q", "sigma", "a", "b") if k in s and s[k] <= 0]
    if bad:
        raise SweepConfigError(path, f"{where}: {bad[0]} must be above 0, not {s[bad[0]]}.")
    if kind in CHOICES[1:] and (not isinstance(s["values"], list) or not s["values"]):
        raise SweepConfigError(path, f"{where}: values must be a non-empty list.")
    if kind == "categorical_w_probabilities":
        if not isinstance(s["probabilities"], list):
            raise SweepConfigError(path, f"{where}: probabilities must be a list, one per value.")
        probs = [_number(path, f"{where}: probabilities", p) for p in s["probabilities"]]
        summed = math.isclose(sum(probs), 1, abs_tol=1e-8)
        if not probs or len(probs) != len(s["values"]) or min(probs) < 0 or not summed:
            raise SweepConfigError(path, f"{where}: probabilities must be one number >= 0 per value, "
                                         f"summing to 1 (got {probs} for {len(s['values'])} values).")


def wandb_param(path, key, spec) -> Param:
    """One parameter in W&B's format: its distribution (written or inferred), W&B's defaults."""
    where = f"parameter {key}"
    if not isinstance(spec, dict):
        raise SweepConfigError(path, f"{where} must be a mapping such as {{values: [...]}}, {{value: ...}} "
                                     "or {min: ..., max: ...}.")
    if "parameters" in spec:
        raise SweepConfigError(path, f"{where}: nested parameters name no fastinat option; give each "
                                     "option its own entry under parameters.")
    kind = _distribution(path, where, spec)
    keys = DISTRIBUTIONS[kind]
    extra = sorted(set(spec) - set(keys) - {"distribution"})
    if extra:
        raise SweepConfigError(path, f"{where}: {kind} takes {', '.join(keys)}, not {extra[0]}.")
    missing = [k for k, default in keys.items() if default is None and k not in spec]
    if missing:
        raise SweepConfigError(path, f"{where}: {kind} needs {' and '.join(missing)}.")
    s = {**keys, **{k: v for k, v in spec.items() if k != "distribution"}}
    _check_numbers(path, where, kind, s)
    values = [s["value"]] if kind == "constant" else list(s.get("values") or [])
    return Param(str(key).replace("-", "_"), str(key), kind, s, values)


def _check_draws(path, cls, p: Param) -> list[str]:
    """Check what `p` can draw with the option's own check; notes for unbounded draws."""
    if p.kind in CHOICES:
        for v in p.values:
            _check_value(path, cls, p.name, p.key, v)
        return []
    q = p.spec.get("q", 1)
    if specs(cls)[p.name].base_type is int and (p.kind == p.base != "int_uniform" or q != int(q)):
        raise SweepConfigError(path, f"parameter {p.key} takes whole numbers, and {p.kind} draws fractions; "
                                     "use int_uniform, a q_ form with a whole q, or values.")
    if p.base not in UNBOUNDED:  # both ends of the support
        notes = []
        for end in (TINY, 1 - TINY):
            try:
                _check_value(path, cls, p.name, p.key, p.draw(end))
            except SweepConfigError as e:
                note = _touching(path, cls, p, end, e)
                if note is None:  # the support reaches beyond the option's range
                    raise
                notes.append(note)
        return notes
    _check_value(path, cls, p.name, p.key, p.draw(0.5))
    for u in (0.001, 0.999):
        try:
            _check_value(path, cls, p.name, p.key, p.draw(u))
        except SweepConfigError as e:
            return [f"note: {p.kind} draws of {p.key} beyond {p.draw(u):.4g} (1 in 1000) fail their trial "
                    f"({str(e).split(': ', 2)[-1].rstrip('.')})"]
    return []


def _touching(path, cls, p: Param, end: float, refused: SweepConfigError) -> str | None:
    """A note when the support's `end` only touches the option's range: the end's draw is the
    option's exclusive bound on that side (`q_beta` rounded up to dropout's 1.0) and the median
    draw is accepted. W&B runs such a space, and a trial that draws the bound fails alone (the
    option's own check, as the trial starts); None when the support reaches beyond the range."""
    spec, v = specs(cls)[p.name], p.draw(end)
    bound = spec.below if end > 0.5 else spec.above
    if bound is None or not isinstance(v, (int, float)) or not math.isclose(v, bound, rel_tol=1e-9, abs_tol=1e-12):
        return None
    _check_value(path, cls, p.name, p.key, p.draw(0.5))  # most draws fail: the median's message
    inside, out = 0.5, end  # quantiles: accepted and refused; the edge between them, by bisection
    for _ in range(60):
        mid = (inside + out) / 2
        try:
            _check_value(path, cls, p.name, p.key, p.draw(mid))
            inside = mid
        except SweepConfigError:
            out = mid
    n = 1 / max(abs(end - out), TINY)
    why = str(refused).split(": ", 2)[-1].rstrip(".")
    return (f"note: the {p.kind} space of {p.key} touches the option's bound: a draw of {v:g} (about 1 in "
            f"{float(f'{n:.2g}'):,.0f} at random) fails its trial alone, as on W&B ({why})")


def _param(path, cls, key: str, spec) -> tuple[Param, list[str]]:
    name = str(key).replace("-", "_")
    sweepable = [n.replace("_", "-") for n in specs(cls) if n not in NOT_SWEEPABLE]
    if name not in specs(cls) or name in NOT_SWEEPABLE:
        why = "is set by the sweep itself" if name in NOT_SWEEPABLE else \
            f"is not an option of fastinat {cls.command}"
        raise SweepConfigError(path, f"parameter {key} {why}{did_you_mean(name.replace('_', '-'), sweepable)}.")
    p = wandb_param(path, key, spec)
    notes = _check_draws(path, cls, p)
    if p.kind in EXPONENTS:  # W&B's own warning
        notes.append(f"note: {p.key} uses {p.kind}, where min/max are exponents of e ({p.spec['min']} -> "
                     f"{math.exp(p.spec['min']):.4g}); {p.kind}_values takes the values themselves")
    return p, notes


def _metric(path, raw: dict) -> tuple[str, str, float | None, bool]:
    """(name, goal, target, goal given); no metric: valid_accuracy, maximize (fastinat's)."""
    if "metrics" in raw:
        raise SweepConfigError(path, "metrics (several objectives) needs W&B's method: custom; give one "
                                     "metric.")
    if raw.get("metric") is None:
        return "valid_accuracy", "maximize", None, True
    metric = raw["metric"]
    if not isinstance(metric, dict) or "name" not in metric:
        raise SweepConfigError(path, "metric must be a mapping with a name, e.g. {name: valid_loss, "
                                     "goal: minimize}.")
    for key in metric:
        if key not in METRIC_KEYS:
            raise SweepConfigError(path, f"unknown key metric.{key}; a metric has {', '.join(METRIC_KEYS)}.")
        allowed = METRIC_KEYS[key]
        if allowed and metric[key] not in allowed:
            raise SweepConfigError(path, f"metric.{key} must be one of {', '.join(allowed)}.")
    name, goal = metric["name"], metric.get("goal", GOALS[0])
    if name not in METRICS:
        why = " (never select on the TEST set)" if str(name).startswith("test") else ""
        raise SweepConfigError(path, f"unknown metric {name!r}{why}; use {', '.join(METRICS)}.")
    if goal not in GOALS:
        raise SweepConfigError(path, f"metric goal must be maximize or minimize, not {goal!r}.")
    target = metric.get("target")
    target = None if target is None else _number(path, "metric.target", target)
    return name, goal, target, "goal" in metric


def hyperband_bands(min_iter: int | None, max_iter: int | None, s: int | None, eta: float) -> list[int]:
    """The epochs at which hyperband compares trials, as W&B computes them: from max_iter and s
    (max_iter / eta, / eta^2, ... s of them, down to 1), else min_iter * eta^k."""
    bands = []
    if max_iter is not None:
        band = float(max_iter)
        for _ in range(s):
            band /= eta
            if band < 1:
                break
            bands.append(int(band))
        return sorted(bands)
    band = float(min_iter)
    while len(bands) < 100 and band < 1e9:
        bands.append(int(band))
        band *= eta
    return bands


def _hyperband(path, early) -> dict:
    """early_terminate as W&B's schema has it: type hyperband; min_iter, or max_iter and s."""
    if not isinstance(early, dict) or early.get("type") != "hyperband":
        raise SweepConfigError(path, "early_terminate supports type: hyperband.")
    unknown = sorted(set(early) - set(HYPERBAND_KEYS))
    if unknown:
        raise SweepConfigError(path, f"unknown key early_terminate.{unknown[0]}; hyperband takes "
                                     f"{', '.join(HYPERBAND_KEYS[1:])}.")
    hb = {k: early.get(k) for k in ("min_iter", "max_iter", "s")}
    for k, v in hb.items():
        if v is not None:
            hb[k] = _number(path, f"early_terminate.{k}", v, whole=True)
    eta = _number(path, "early_terminate.eta", early.get("eta", 3))
    strict = early.get("strict", True)
    if (hb["max_iter"] is not None and hb["s"] is None) or (hb["max_iter"] is None and hb["min_iter"] is None):
        raise SweepConfigError(path, "early_terminate: hyperband needs min_iter, or max_iter and s.")
    if (hb["min_iter"] is not None and hb["min_iter"] < 1) or eta <= 1 or not isinstance(strict, bool):
        raise SweepConfigError(path, "early_terminate needs min_iter >= 1, eta above 1 and strict true or "
                                     "false.")
    bands = hyperband_bands(hb["min_iter"], hb["max_iter"], hb["s"], eta)
    if not bands:
        raise SweepConfigError(path, f"early_terminate: max_iter {hb['max_iter']}, s {hb['s']} and eta {eta} "
                                     "leave no epoch to stop at; raise max_iter or s, or lower eta.")
    return {**hb, "bands": bands, "eta": eta, "strict": strict}


def _top_level(path, raw: dict) -> list[str]:
    """Check the top-level keys W&B's schema knows; return the W&B-only ones present."""
    unknown = sorted(set(raw) - KNOWN_KEYS - set(WANDB_ONLY) - {"metrics"})
    if unknown:
        raise SweepConfigError(path, f"unknown key {unknown[0]!r}; a sweep config has "
                                     f"{', '.join(sorted(KNOWN_KEYS | set(WANDB_ONLY)))}.")
    for key in TEXT_KEYS:
        if key in raw and not isinstance(raw[key], str):
            raise SweepConfigError(path, f"{key} must be text, not {raw[key]!r}.")
    controller, scheduler = raw.get("controller"), raw.get("scheduler")
    if controller is not None and (not isinstance(controller, dict) or controller.get("type") not in
                                   ("local", "cloud")):
        raise SweepConfigError(path, "controller must be {type: local} or {type: cloud}.")
    if scheduler is not None and (not isinstance(scheduler, dict) or scheduler.get("engine") != "wandb"
                                  or "early_terminate" in raw or (controller or {}).get("type") == "local"):
        raise SweepConfigError(path, "scheduler needs engine: wandb (W&B supports no other yet), without "
                                     "early_terminate or a local controller.")
    if raw.get("kind", "sweep") != "sweep":
        raise SweepConfigError(path, "kind must be sweep.")
    if raw.get("run_cap") is not None and _number(path, "run_cap", raw["run_cap"], whole=True) < 1:
        raise SweepConfigError(path, "run_cap must be at least 1.")
    return [k for k in WANDB_ONLY if k in raw]


def _params(path, cls, raw: dict, method: str) -> tuple[list[Param], list[str]]:
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SweepConfigError(path, "`parameters` must map option names to {values: [...]}, {value: ...} "
                                     "or a distribution.")
    params, notes = {}, []
    for key, spec in params_raw.items():
        p, more = _param(path, cls, key, spec)
        if p.name in params:
            raise SweepConfigError(path, f"parameter {key} is given twice.")
        params[p.name], notes = p, notes + more
    if method == "grid":
        for p in params.values():
            if p.kind == "categorical_w_probabilities":
                raise SweepConfigError(path, f"parameter {p.key}: a grid runs every value, so probabilities "
                                             "have no meaning there (W&B refuses them); use random or bayes.")
            p.values = p.grid()
            if p.values is None:
                raise SweepConfigError(path, f"a grid sweep needs discrete parameters; {p.key} is {p.kind} "
                                             "(use values, int_uniform or a q_ form with a finite range).")
    return list(params.values()), notes


def load_sweep_config(path: str | Path, overrides: dict | None = None) -> SweepConfig:
    """Read and validate a sweep YAML; `overrides` ({option: value}, e.g. epochs) fix options."""
    path = find_config(path)
    raw = load_yaml(path)
    wandb_only = _top_level(path, raw)
    command, found = _command(path, raw)
    cls = COMMANDS[command]
    method = raw.get("method")
    if method not in METHODS:
        raise SweepConfigError(path, f"unknown method {method!r}; use grid, random or bayes.")
    name, goal, target, goal_given = _metric(path, raw)
    params, notes = _params(path, cls, raw, method)
    notes = found + notes
    fixed = {p.name: p for p in params}
    for key, v in (overrides or {}).items():
        if v is not None:
            _check_value(path, cls, key, key.replace("_", "-"), v)
            fixed[key] = Param(key, key.replace("_", "-"), "constant", {"value": v}, [v])
    early = raw.get("early_terminate")
    hyperband = _hyperband(path, early) if early else None
    return SweepConfig(path, raw, command, method, name, goal, list(fixed.values()), hyperband,
                       raw.get("run_cap"), target, goal_given, notes, wandb_only)
