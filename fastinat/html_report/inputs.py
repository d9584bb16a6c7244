"""What a report is made of: run folders and sweep folders, read back from disk.

Nothing here trains or imports torch. A folder that is neither a run nor a sweep is a
`UsageError`; a run without metrics (still training, or crashed) and a sweep's failed trials
are kept, each with a one-line `problem`, so the page can show them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..io import read_json
from ..run_folder import CARD, CHECKPOINT, CONFIG, HISTORY, METRICS, REPORT

SWEEP_JSON, SWEEP_YAML, LEADERBOARD, IMPORTANCE = ("sweep.json", "sweep.yaml", "leaderboard.csv",
                                                   "param_importance.csv")
#: Options that say where a run went, not how it trained: never a "difference" between runs.
NOT_SETTINGS = {"out", "name", "wandb", "project", "entity", "workers", "presize"}


@dataclass
class Run:
    """One run folder; `metrics` is None when it has no metrics.json (`problem` says why)."""

    path: Path
    label: str
    meta: dict = field(default_factory=dict)  # config.json
    metrics: dict | None = None  # metrics.json
    history: list[dict] = field(default_factory=list)
    card: dict = field(default_factory=dict)  # model.json
    problem: str | None = None

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    @property
    def command(self) -> str:
        return self.meta.get("command", "?")

    def metric(self, name: str) -> float | None:
        v = (self.metrics or {}).get(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    def shape(self) -> str:
        """The architecture: a timm name, or the CNN's filters, kernels and activation."""
        c = self.config
        if self.command == "finetune":
            return f"{c.get('arch', '?')} (freeze {c.get('freeze', '?')})"
        model = self.card.get("model", {})
        filters = model.get("filters") or c.get("filters") or []
        kernels = sorted(set(model.get("kernel_sizes") or c.get("kernel_sizes") or []))
        bn = " bn" if model.get("batchnorm", c.get("batchnorm")) else ""
        return (f"CNN {'-'.join(map(str, filters)) or '?'}, k{'/'.join(map(str, kernels))}, "
                f"{model.get('activation', c.get('activation', '?'))}{bn}")


@dataclass
class Trial:
    number: int
    state: str  # complete | pruned | failed
    value: float | None
    params: dict  # {parameter: value as the leaderboard writes it}
    run: Run | None = None
    error: str | None = None


@dataclass
class Sweep:
    path: Path
    metric: str
    goal: str  # maximize | minimize
    keys: list[str]  # the searched parameters
    trials: list[Trial]
    command: str = "?"
    importance: dict[str, float] | None = None  # Optuna's, from param_importance.csv
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path.name

    def complete(self) -> list[Trial]:
        return [t for t in self.trials if t.state == "complete" and t.value is not None]

    def ranked(self) -> list[Trial]:
        """Complete trials, best first."""
        sign = -1 if self.goal == "maximize" else 1
        return sorted(self.complete(), key=lambda t: (sign * t.value, t.number))


def json_object(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing or damaged."""
    try:
        got = read_json(path)
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def _history(path: Path) -> list[dict]:
    from ..callbacks.history import read_history

    try:
        return read_history(path)
    except (OSError, ValueError, csv.Error):
        return []


def load_run(path: Path, label: str | None = None) -> Run:
    """Read a run folder; one without metrics.json gets a `problem` instead of raising."""
    run = Run(path, label or path.name)
    meta = json_object(path / CONFIG)
    if meta is None:
        run.problem = f"{CONFIG} is damaged"
        return run
    run.meta, run.card = meta, json_object(path / CARD) or {}
    run.history = _history(path / HISTORY)
    run.metrics = json_object(path / METRICS)
    if run.metrics is None:
        state = ("still training or interrupted (checkpoint.pt present)" if (path / CHECKPOINT).exists()
                 else "crashed or still training")
        run.problem = f"no {METRICS}: {state}; {len(run.history)} epoch(s) in {HISTORY}"
    return run


def per_class(run: Run) -> list[dict]:
    """The TEST report's per-class rows (report/per_class.csv), or [] without it."""
    path = run.path / REPORT / "per_class.csv"
    try:
        with open(path, newline="") as fh:
            return [{k: (v if k == "class" else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]
    except (OSError, ValueError, csv.Error):
        return []


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _sweep_spec(path: Path, meta: dict) -> tuple[str, str]:
    """(metric, goal): as the sweep resolved them (sweep.json), else from sweep.yaml with W&B's
    rule (a `metric` without `goal` minimizes; no `metric` at all: valid_accuracy, maximize)."""
    import yaml

    if meta.get("metric") and meta.get("goal"):
        return str(meta["metric"]), str(meta["goal"])
    try:
        raw = yaml.safe_load((path / SWEEP_YAML).read_text()) or {}
    except (OSError, yaml.YAMLError):
        raw = {}
    metric = raw.get("metric") if isinstance(raw, dict) else None
    if not isinstance(metric, dict):
        return "valid_accuracy", "maximize"
    return str(metric.get("name", "valid_accuracy")), str(metric.get("goal", "minimize"))


def _trial_run(sweep_dir: Path, where: str) -> Run | None:
    """The run folder of a trial: SWEEP/runs/<name> (the sweep may have moved since)."""
    if not where:
        return None
    local = sweep_dir / "runs" / Path(where).name
    path = local if local.is_dir() else Path(where)
    return load_run(path, f"{sweep_dir.name}/{path.name}") if (path / CONFIG).is_file() else None


def _leaderboard(sweep_dir: Path, metric: str) -> tuple[list[str], list[Trial]]:
    with open(sweep_dir / LEADERBOARD, newline="") as fh:
        reader = csv.DictReader(fh)
        rows, header = list(reader), reader.fieldnames or []
    keys = [k for k in header if k not in ("rank", "trial", "state", metric, "run", "error")]
    trials = [Trial(int(r["trial"]), r["state"], _number(r.get(metric, "")),
                    {k: r[k] for k in keys}, _trial_run(sweep_dir, r.get("run") or ""),
                    r.get("error") or None) for r in rows]
    return keys, trials


def _from_runs(sweep_dir: Path, metric: str) -> tuple[list[str], list[Trial]]:
    """Without leaderboard.csv: the finished trials' run folders, parameters from their configs."""
    import yaml

    try:
        params = (yaml.safe_load((sweep_dir / SWEEP_YAML).read_text()) or {}).get("parameters") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        params = {}
    keys = [k for k, v in params.items() if isinstance(v, dict) and "value" not in v]
    trials = []
    for i, folder in enumerate(sorted(p for p in (sweep_dir / "runs").glob("trial-*") if p.is_dir())):
        run = load_run(folder, f"{sweep_dir.name}/{folder.name}")
        value = run.metric(metric)
        shown = {k: _shown(run.config.get(k.replace("-", "_"))) for k in keys}
        trials.append(Trial(i, "complete" if value is not None else "failed", value, shown, run,
                            run.problem))
    return keys, trials


def _shown(v) -> str:
    """A config value as the leaderboard writes it (lists as "a,b,c")."""
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def load_sweep(path: Path) -> Sweep:
    """Read a sweep folder: its leaderboard (or, before it has one, its trials' run folders)."""
    meta = json_object(path / SWEEP_JSON) or {}
    metric, goal = _sweep_spec(path, meta)
    problems = []
    if (path / LEADERBOARD).is_file():
        keys, trials = _leaderboard(path, metric)
    else:
        problems.append(f"{path}: no {LEADERBOARD} yet (the sweep is running or was stopped); the "
                        f"finished trials' run folders are shown. `fastinat sweep --resume {path} "
                        "--count 0` writes it.")
        keys, trials = _from_runs(path, metric)
    sweep = Sweep(path, metric, goal, keys, trials, meta.get("command", "?"), _importance(path),
                  problems)
    for t in trials:
        if t.state == "failed":
            sweep.problems.append(f"{sweep.label} trial {t.number} failed: {t.error or 'no error recorded'}")
        elif t.state == "complete" and t.run is None:
            sweep.problems.append(f"{sweep.label} trial {t.number}: its run folder is missing")
    return sweep


def _importance(path: Path) -> dict[str, float] | None:
    try:
        with open(path / IMPORTANCE, newline="") as fh:
            return {r["parameter"]: float(r["importance"]) for r in csv.DictReader(fh)}
    except (OSError, ValueError, KeyError, csv.Error):
        return None


def load(paths: list[str | Path]) -> tuple[list[Run], list[Sweep]]:
    """The runs and sweeps named by `paths`, in the order given; a folder that is neither stands
    for the run and sweep folders inside it (`found_in`), as `tensorboard --logdir` takes a
    folder of runs. A folder named twice (or found twice) is read once.

    Raises:
        UsageError: a path that does not exist, or a folder that is neither a run folder
            (config.json) nor a sweep folder (sweep.json) and holds none.
    """
    if not paths:
        raise UsageError("Give one or more run or sweep folders to report on.")
    runs, sweeps, seen = [], [], set()
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"{p} does not exist; give a run folder (runs/<name>) or a sweep folder.")
        kind = _kind(p)
        if kind is None:
            found = found_in(p)
            if not found:
                raise UsageError(f"{p} is neither a run folder (it has no {CONFIG}) nor a sweep folder "
                                 f"(no {SWEEP_JSON}), and holds none.")
            items = [(_kind(f), f, f.relative_to(p).as_posix()) for f in found]
        else:
            items = [(kind, p, p.resolve().name if p.name in ("latest", ".", "") else p.name)]
        for kind, folder, label in items:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            if kind == "sweep":
                sweeps.append(load_sweep(folder))
            else:
                runs.append(load_run(folder, label))
    return runs, sweeps


def _kind(p: Path) -> str | None:
    """"sweep", "run", or None for a folder that is neither."""
    if (p / SWEEP_JSON).is_file():
        return "sweep"
    return "run" if (p / CONFIG).is_file() else None


def found_in(folder: Path) -> list[Path]:
    """The run and sweep folders under `folder`, at any depth, in name order: a run's or a
    sweep's own subfolders (a sweep's trials) belong to it and are not searched; links (the
    `latest` link) and hidden folders are skipped."""
    if not folder.is_dir():
        return []
    found = []
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or child.is_symlink() or child.name.startswith("."):
            continue
        found += [child] if _kind(child) else found_in(child)
    return found


def differing(runs: list[Run]) -> list[str]:
    """The options whose values differ between `runs` (config.json), in config order."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.config if k not in keys and k not in NOT_SETTINGS]
    return [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]
