"""Run a sweep: one trial function, two engines.

    fastinat sweep recipes/sweeps/scratch.yaml --backend local --count 20
    fastinat sweep --resume runs/sweeps/scratch-20261128-120000 --count 30
    fastinat sweep scratch --backend wandb           # other machines: fastinat sweep --join ID

* local: Optuna runs the YAML (grid -> GridSampler, random -> RandomSampler, bayes ->
  TPESampler). A distribution other than values is a latent quantile u ~ U(0, 1) that Optuna
  samples (`lr.quantile` in the study) and W&B's inverse CDF turns into the value W&B would
  draw (`Param.draw`), so random search samples exactly W&B's distribution and TPE models the
  quantile. `early_terminate: hyperband` is W&B's rule (`WandbHyperband`), fed every epoch's
  metric. The trials' recorded parameters are the values they ran with, never the quantiles.
  The study lives in `SWEEP/study.db` (or `--storage URL`, which several processes or
  machines can share: `storage.py`; its password is never written); `--count` is the total
  number of finished trials wanted, so a killed sweep resumes without repeating them, and
  processes sharing a study stop once the trials started by all of them make the count
  (`_claimed_before`). Trial k draws its values from its own stream (seed + k), so two
  processes never draw the same ones. A trial cut short by Ctrl-C or a failed write is run
  again; so is the trial of a killed process, once its heartbeat has been silent for GRACE
  seconds.
* wandb: `wandb.sweep` creates the sweep on the W&B server and `wandb.agent` calls the same
  trial function; W&B spreads it over every machine that joins.

Every trial is a normal run folder in `SWEEP/runs/`. A trial that raises (an impossible
combination, or any error) is recorded as failed with its message and the sweep goes on.
The sweep folder also gets `leaderboard.csv`, `param_summary.csv`, `params.png` and (local)
`param_importance.csv`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from fastai.callback.core import Callback, CancelFitException
from rich.console import Console

from ..errors import FastinatError, Interrupted, NotADatasetError, UsageError, WriteError
from ..io import atomic_write, read_json, write_json
from .config import WANDB_GRID, SweepConfig, SweepConfigError, load_sweep_config
from .results import TrialRecord, print_leaderboard, write_leaderboard, write_summary
from .storage import (  # noqa: F401 - GRACE, HEARTBEAT: part of this module's interface
    GRACE,
    HEARTBEAT,
    PerTrialSeed,
    env_storage,
    keep_password,
    open_storage,
    safe_url,
    sharing_note,
)

SWEEP_JSON, SWEEP_YAML, STUDY_DB, TRIALS = "sweep.json", "sweep.yaml", "study.db", "trials.jsonl"
INTERRUPTED = "interrupted (Ctrl-C)"
NOT_WRITTEN = "stopped: a file could not be written"
CUT_SHORT = (INTERRUPTED, NOT_WRITTEN)  # these trials run again
KILLED = "its process stopped (killed?); run again"
SURPLUS = "surplus"  # a trial started when the others already made the count: never run, never shown
LATENT = ".quantile"  # Optuna's name for a distribution's latent quantile: lr.quantile


# -- one trial ----------------------------------------------------------------------------------

class EpochReport(Callback):
    """Hand each epoch's metric to `report(value, epoch)`; a True answer stops the trial (pruned)."""

    order = 66  # after the epoch record and the checkpoint

    def __init__(self, metric: str, report):
        self.metric, self.report, self.pruned = metric, report, False

    def after_epoch(self) -> None:
        rec = self.learn.epoch_record
        if rec and self.report(float(rec.get(self.metric, math.nan)), int(rec["epoch"])):
            self.pruned = True
            raise CancelFitException()


def encode(value):
    """A parameter value as Optuna can store it (lists become "a,b,c"; fastinat parses them back)."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, FastinatError) else f"{type(e).__name__}: {text}"


def run_trial(sweep_dir: Path, cfg: SweepConfig, params: dict, name: str, report=None,
              console: Console | None = None) -> tuple[Path, dict, bool]:
    """Train one trial into SWEEP/runs/<name>; (run folder, metrics.json, pruned)."""
    from ..run_folder import METRICS
    from ..train import train_finetune, train_scratch

    train = {"scratch": train_scratch, "finetune": train_finetune}[cfg.command]
    options = {**cfg.fixed(), **{k.replace("-", "_"): v for k, v in params.items()}}
    cb = EpochReport(cfg.metric, report) if report is not None else None
    run_dir = train(**options, out=str(sweep_dir / "runs"), name=name, cbs=[cb] if cb else [],
                    console=console)
    return run_dir, read_json(run_dir / METRICS), bool(cb and cb.pruned)


# -- the sweep folder ---------------------------------------------------------------------------

def new_sweep(config: str | Path, out: str | Path, name: str | None, backend: str,
              overrides: dict, storage: str | None = None) -> tuple[Path, SweepConfig]:
    """Validate the config, make the sweep folder, and save what resuming needs."""
    cfg = load_sweep_config(config, overrides)
    beyond = [p for p in cfg.searched if cfg.method == "grid" and p.kind not in WANDB_GRID]
    if backend == "wandb" and beyond:
        raise SweepConfigError(cfg.path, f"W&B's grid takes values, value, int_uniform and q_uniform; "
                                         f"{beyond[0].key} is {beyond[0].kind} (--backend local grids it).")
    data = Path(cfg.fixed().get("data") or cfg.config_cls().data)
    if not data.is_dir():  # every trial would fail the same way
        from ..data.check import missing_dataset_message

        raise NotADatasetError(missing_dataset_message(data))
    from ..run_folder import check_name_free, claim_folder

    out = Path(out)
    check_name_free(out, name, "sweep")
    if storage is None and backend == "local":
        storage = env_storage()
    if storage is not None and backend == "local":
        open_storage(storage)  # a bad URL or a missing driver fails before the folder exists
    sweep_dir = claim_folder(out, name, cfg.path.stem, "sweep")  # one mkdir: of two at once, one wins
    try:
        atomic_write(sweep_dir / SWEEP_YAML, lambda tmp: shutil.copyfile(cfg.path, tmp), parents=False)
        save_meta(sweep_dir, parents=False, meta={
            "command": cfg.command, "backend": backend, "source": str(cfg.path),
            "overrides": {k: v for k, v in overrides.items() if v is not None},
            "storage": keep_password(storage) if storage else f"sqlite:///{(sweep_dir / STUDY_DB).resolve()}",
            "study": sweep_dir.name, "metric": cfg.metric, "goal": cfg.goal,
            "created": datetime.now().isoformat(timespec="seconds"), "wandb_sweep_id": None})
    except BaseException:  # a full disk, Ctrl-C: no half-made sweep folder is left
        shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    return sweep_dir, load_sweep_config(sweep_dir / SWEEP_YAML, overrides)


def save_meta(sweep_dir: Path, meta: dict, *, parents: bool = True) -> Path:
    """SWEEP/sweep.json, readable by its owner only (it names the study's storage), and with the
    storage URL's password left out: each process supplies it (`storage.connect_url`)."""
    storage = meta.get("storage")
    return write_json(sweep_dir / SWEEP_JSON, {**meta, "storage": storage and safe_url(storage)}, parents=parents,
                      mode=0o600)


def open_sweep(sweep_dir: str | Path) -> tuple[Path, SweepConfig, dict]:
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / SWEEP_JSON).is_file():
        raise UsageError(f"{sweep_dir} is not a sweep folder (it has no {SWEEP_JSON}).")
    try:
        meta = read_json(sweep_dir / SWEEP_JSON)
        overrides = meta["overrides"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FastinatError(f"{sweep_dir / SWEEP_JSON} is damaged ({type(e).__name__}), so the sweep cannot "
                            "continue; start a new one.") from None
    if isinstance(meta.get("storage"), str) and safe_url(meta["storage"]) != meta["storage"]:
        meta["storage"] = keep_password(meta["storage"])  # written by an older fastinat: not any more
        save_meta(sweep_dir, meta)
    return sweep_dir, load_sweep_config(sweep_dir / SWEEP_YAML, overrides), meta


@contextmanager
def _wandb_group(name: str):
    """Every trial's W&B run joins the group named after the sweep."""
    old = os.environ.get("WANDB_RUN_GROUP")
    os.environ["WANDB_RUN_GROUP"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WANDB_RUN_GROUP", None)
        else:
            os.environ["WANDB_RUN_GROUP"] = old


def finish(sweep_dir: Path, cfg: SweepConfig, records: list[TrialRecord], importances,
           console: Console) -> list[TrialRecord]:
    try:
        write_leaderboard(sweep_dir / "leaderboard.csv", records, cfg)
        write_summary(sweep_dir, records, cfg, importances)
    except WriteError as e:
        if type(e) is not WriteError:
            raise
        raise e.again(f"write them with: fastinat sweep --resume {sweep_dir} --count 0") from None
    print_leaderboard(records, cfg, console, title=f"Sweep {sweep_dir}")
    console.print(f"leaderboard.csv, param_summary.csv and params.png in {sweep_dir}", highlight=False)
    return records


# -- local: Optuna ------------------------------------------------------------------------------

def _study(cfg: SweepConfig, meta: dict, seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: our one line, not a traceback

    def sampler(seed: int):
        if cfg.method == "grid":
            return optuna.samplers.GridSampler({p.name: [encode(v) for v in p.values] for p in cfg.searched},
                                               seed=seed)
        if cfg.method == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    pruner = WandbHyperband(cfg) if cfg.hyperband else optuna.pruners.NopPruner()
    return optuna.create_study(study_name=meta["study"], storage=open_storage(meta["storage"]),
                               sampler=sampler(seed) if cfg.method == "grid" else PerTrialSeed(sampler, seed),
                               pruner=pruner, direction=cfg.goal, load_if_exists=True)


def _suggest(trial, cfg: SweepConfig) -> dict:
    """{key: the value W&B would draw}. Values lists and a grid's points are Optuna categoricals;
    every other distribution is its quantile u ~ U(0, 1) (`lr.quantile`) through W&B's inverse
    CDF: exactly W&B's distribution under RandomSampler, a model of the quantile under TPE."""
    params = {}
    for p in cfg.searched:
        if cfg.method == "grid" or p.kind == "categorical":
            params[p.key] = trial.suggest_categorical(p.name, [encode(v) for v in p.values])
        else:
            params[p.key] = p.draw(trial.suggest_float(p.name + LATENT, 0.0, 1.0))
    return params


def hyperband_stops(history: list[float], histories: list[list[float]], bands: list[int], eta: float,
                    strict: bool) -> bool:
    """W&B's hyperband rule (sweeps `hyperband_stopping.py`), lower is better: at the last band
    a trial has reached, it stops when its value there (strict) or its best so far (not strict)
    is worse than the top 1/eta of every trial's value at that band (its own included)."""
    reached = [b for b in bands if b <= len(history)]
    if not reached:
        return False
    band = reached[-1]
    at_band = sorted(h[band - 1] for h in histories if len(h) >= band)
    threshold = at_band[int((1.0 / eta) * len(at_band))]
    return (history[band - 1] if strict else min(history)) > threshold


class WandbHyperband:
    """`early_terminate: hyperband` as an Optuna pruner (Optuna calls `prune` after each report)."""

    def __init__(self, cfg: SweepConfig):
        self.hb, self.sign = cfg.hyperband, -1 if cfg.goal == "maximize" else 1

    def history(self, trial) -> list[float]:
        """A trial's metric per epoch, lower is better, non-finite values left out (as W&B)."""
        steps = sorted(trial.intermediate_values)
        return [self.sign * v for v in (trial.intermediate_values[s] for s in steps) if math.isfinite(v)]

    def prune(self, study, trial) -> bool:
        others = [self.history(t) for t in study.get_trials(deepcopy=False)]
        return hyperband_stops(self.history(trial), others, self.hb["bands"], self.hb["eta"], self.hb["strict"])


def local_records(study, cfg: SweepConfig) -> list[TrialRecord]:
    from optuna.trial import TrialState

    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
              TrialState.RUNNING: "running", TrialState.WAITING: "running"}
    return [TrialRecord(t.number, states[t.state], t.value if t.value is not None else t.user_attrs.get("value"),
                        ran_with(t, cfg), t.user_attrs.get("run"),
                        t.user_attrs.get("error") or (None if t.state != TrialState.FAIL else KILLED))
            for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]


def ran_with(trial, cfg: SweepConfig) -> dict:
    """{key: value} a trial ran with (saved by the objective; a study from before: Optuna's)."""
    if "params" in trial.user_attrs:
        return trial.user_attrs["params"]
    keys = {p.name: p.key for p in cfg.searched}
    return {keys.get(k, k): v for k, v in trial.params.items()}


def _importances(study, cfg: SweepConfig) -> dict | None:
    """Optuna's parameter importances over the values the complete trials ran with (not the
    quantiles), by the YAML's parameter names; a log scale for the log distributions."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    keys = [p.key for p in cfg.searched]
    done = [(ran_with(t, cfg), t.value) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    done = [(params, v) for params, v in done if all(k in params for k in keys)]
    if not done:  # no complete trial yet (a sweep started with --count 0)
        return None
    dists = {}
    for p in cfg.searched:
        seen = [params[p.key] for params, _ in done]
        if p.kind != "categorical" and seen and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in seen):
            dists[p.key] = FloatDistribution(min(seen), max(seen), log="log" in p.base and min(seen) > 0)
        else:
            dists[p.key] = CategoricalDistribution(sorted({encode(v) for v in seen}, key=str))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials" is visible in the numbers
            copy = optuna.create_study(direction=cfg.goal)
            for params, v in done:
                copy.add_trial(create_trial(params={k: encode(params[k]) for k in keys}, distributions=dists,
                                            value=v))
            found = optuna.importance.get_param_importances(copy)
        return {k: round(float(v), 4) for k, v in found.items()}
    except Exception:  # noqa: BLE001 - too few complete trials, or a single value per parameter
        return None


def _target_trial(study, cfg: SweepConfig):
    """The first complete trial whose value reached metric.target, or None."""
    from optuna.trial import TrialState

    if cfg.target is None:
        return None
    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if cfg.reached(t.value)), None)


def _finished(study) -> int:

    return sum(map(_counts, study.get_trials(deepcopy=False)))


def _counts(t) -> bool:
    """Whether trial `t` is one of the finished trials --count asks for: a failure counts when
    the trial itself failed; not when it was cut short or its process died (those run again)."""
    from optuna.trial import TrialState

    return (t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and t.user_attrs.get("error") not in (None, *CUT_SHORT)))


def _claimed_before(study, trial) -> int:
    """The trials numbered before `trial` that finished, or that some process runs or will run:
    with that many the sweep has its count, and `trial` is one too many. A second retry of the
    same cut trial (two processes queued it at once) counts as over."""
    from optuna.trial import TrialState

    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    retry = trial.user_attrs.get("retry_of")
    if retry is not None and any(t.user_attrs.get("retry_of") == retry for t in earlier):
        return math.inf
    return sum(_counts(t) or t.state in (TrialState.RUNNING, TrialState.WAITING) for t in earlier)


def _retry_cut_trials(study) -> None:
    """Fail the trials of killed processes (past the grace period); queue every trial cut short
    by Ctrl-C to run again with the same parameters (its quantiles give the same values)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials if not t.user_attrs.get(SURPLUS)}
    for t in trials:
        if t.user_attrs.get("error") in CUT_SHORT and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            if "grid_id" in t.system_attrs:  # a grid's point: GridSampler needs it on the retry too
                storage = study._storage  # noqa: SLF001 - Optuna's own retry of stale trials does this
                queued = max((q for q in study.get_trials(deepcopy=False) if q.user_attrs.get("retry_of") == t.number),
                             key=lambda q: q.number)
                for key in ("grid_id", "search_space"):
                    storage.set_trial_system_attr(queued._trial_id, key, t.system_attrs[key])


def _objective(study, cfg: SweepConfig, sweep_dir: Path, total: int, console: Console):
    """Optuna's objective: draw, record the values the trial runs with, train, report epochs."""
    import optuna

    def objective(trial) -> float:
        if _claimed_before(study, trial) >= total:  # the other processes run the rest
            trial.set_user_attr(SURPLUS, True)
            # a grid's point it was given stays unvisited (GridSampler skips other search spaces)
            study._storage.set_trial_system_attr(trial._trial_id, "search_space", {SURPLUS: []})  # noqa: SLF001
            raise _Stop(None)
        params = cfg.actual(_suggest(trial, cfg))
        trial.set_user_attr("params", params)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        console.rule(f"trial {trial.number} ({_finished(study) + 1} of {total}): {shown}")

        def report(value: float, epoch: int) -> bool:
            trial.report(value, epoch)
            return trial.should_prune()

        try:
            run_dir, metrics, pruned = run_trial(sweep_dir, cfg, params, f"trial-{trial.number:03d}", report,
                                                 console)
        except (KeyboardInterrupt, Interrupted):  # Ctrl-C (train() says Interrupted): stop the sweep
            trial.set_user_attr("error", INTERRUPTED)
            raise KeyboardInterrupt from None
        except WriteError as e:  # a full disk: every next trial would fail the same way
            trial.set_user_attr("error", NOT_WRITTEN)
            raise _Stop(e) from None
        except Exception as e:
            trial.set_user_attr("error", one_line(e))
            console.print(f"[red]trial {trial.number} failed:[/] {one_line(e)}", highlight=False)
            raise
        trial.set_user_attr("run", str(run_dir))
        value = float(metrics[cfg.metric])
        if pruned:
            trial.set_user_attr("value", value)
            raise optuna.TrialPruned()
        return value

    return objective


class _Stop(KeyboardInterrupt):
    """Stop the sweep from inside a trial: Optuna records the trial as failed and raises this
    again (an Exception would be caught: the next trial would start). `error`: the reason, or
    None when the trials that make the count are all taken."""

    def __init__(self, error: WriteError | None):
        super().__init__()
        self.error = error


def local_total(cfg: SweepConfig, count: int | None) -> int:
    """Finished trials wanted: --count, else run_cap, else the grid's size, else 10; a grid at most
    its size."""
    total = count if count is not None else (cfg.run_cap or cfg.grid_size() or 10)
    return min(total, cfg.grid_size()) if cfg.grid_size() is not None else total


def run_local(sweep_dir: Path, cfg: SweepConfig, meta: dict, count: int | None, *, seed: int = 0,
              console: Console | None = None) -> list[TrialRecord]:
    """Run trials until `count` have finished (complete, pruned or failed), or one reached
    metric.target; then report."""
    console = console or Console(soft_wrap=True)
    study = _study(cfg, meta, seed)
    total = local_total(cfg, count)
    _retry_cut_trials(study)

    def done(study, _=None) -> None:  # also when other processes sharing the study finished the rest
        if _finished(study) >= total or _target_trial(study, cfg) is not None:
            study.stop()

    note = sharing_note(meta["storage"], meta["study"])
    if note is not None:
        console.print(note, highlight=False)
    remaining = 0 if _target_trial(study, cfg) is not None else total - _finished(study)
    with _wandb_group(meta["study"]):
        if remaining > 0:
            try:  # n_trials for this process
                study.optimize(_objective(study, cfg, sweep_dir, total, console), n_trials=remaining,
                               catch=(Exception,), gc_after_trial=True, callbacks=[done])
            except _Stop as stop:
                if stop.error is not None:
                    raise stop.error.again(f"continue with: fastinat sweep --resume {sweep_dir}") from None
                console.print("The other processes on this sweep run its last trials; this one stops.",
                              highlight=False)
            except KeyboardInterrupt:
                raise Interrupted(f"Interrupted; continue with: fastinat sweep --resume {sweep_dir}") from None
    hit = _target_trial(study, cfg)
    if hit is not None:
        console.print(f"metric.target {cfg.target} reached by trial {hit.number} ({cfg.metric} {hit.value:.4f}): "
                      "the sweep is done.", highlight=False)
    return finish(sweep_dir, cfg, local_records(study, cfg), _importances(study, cfg), console)


def report_only(sweep_dir: Path, cfg: SweepConfig, meta: dict, *, seed: int = 0,
                console: Console | None = None) -> list[TrialRecord]:
    """Print and rewrite a sweep's results without running a trial."""
    console = console or Console(soft_wrap=True)
    if meta["backend"] == "local":
        study = _study(cfg, meta, seed)
        return finish(sweep_dir, cfg, local_records(study, cfg), _importances(study, cfg), console)
    return finish(sweep_dir, cfg, wandb_records(sweep_dir), None, console)


# -- wandb --------------------------------------------------------------------------------------

def wandb_sweep_config(cfg: SweepConfig) -> dict:
    """The YAML as W&B gets it, with the sweep's fixed options as `value` parameters."""
    config = {k: v for k, v in cfg.raw.items()}
    config["parameters"] = {p.key: ({"value": p.values[0]} if p.kind == "constant" else cfg.raw["parameters"][p.key])
                            for p in cfg.params}
    config["metric"] = {**(cfg.raw.get("metric") or {}), "name": cfg.metric, "goal": cfg.goal}
    return config


def _append(path: Path, record: dict) -> None:
    """One line onto trials.jsonl (a line is short: it is written whole or not at all)."""
    from ..io import write_error

    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError as e:
        raise write_error(path, e, then=f"continue with: fastinat sweep --resume {path.parent}") from None


def wandb_records(sweep_dir: Path) -> list[TrialRecord]:
    path = sweep_dir / TRIALS
    if not path.is_file():
        return []
    return [TrialRecord(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def run_wandb(sweep_dir: Path, cfg: SweepConfig, meta: dict, count: int | None, *, project: str = "fastinat",
              entity: str | None = None, sweep_id: str | None = None,
              console: Console | None = None) -> list[TrialRecord]:
    """Create (or join) the W&B sweep and run an agent here for `count` trials."""
    import wandb

    console = console or Console(soft_wrap=True)
    if sweep_id is None:
        sweep_id = meta.get("wandb_sweep_id") or wandb.sweep(wandb_sweep_config(cfg), project=project,
                                                             entity=entity)
        meta["wandb_sweep_id"] = sweep_id
        save_meta(sweep_dir, meta)
    console.print(f"W&B sweep {sweep_id}; more machines join with: fastinat sweep --join {sweep_id}",
                  highlight=False)
    searched = {p.key for p in cfg.searched}

    def trial() -> None:
        run = wandb.init(dir=str(sweep_dir), project=project, entity=entity)
        params = cfg.actual({k: v for k, v in dict(run.config).items() if k in searched})
        number = len(wandb_records(sweep_dir))
        record = {"number": number, "params": params, "run": None, "error": None}
        try:
            run_dir, metrics, _ = run_trial(sweep_dir, cfg, params, f"trial-{number:03d}-{run.id}",
                                            console=console)
            record.update(state="complete", value=float(metrics[cfg.metric]), run=str(run_dir))
        except (KeyboardInterrupt, Interrupted):  # Ctrl-C (train() says Interrupted): the agent stops
            _append(sweep_dir / TRIALS, {**record, "state": "failed", "value": None, "error": INTERRUPTED})
            raise KeyboardInterrupt from None
        except Exception as e:  # recorded; the agent goes on with the next trial
            record.update(state="failed", value=None, error=one_line(e))
            console.print(f"[red]trial {number} failed:[/] {one_line(e)}", highlight=False)
        _append(sweep_dir / TRIALS, record)
        if wandb.run is not None:
            wandb.finish()

    with _wandb_group(meta["study"]):
        try:
            wandb.agent(sweep_id, function=trial, count=count, project=project, entity=entity)
        except KeyboardInterrupt:
            raise Interrupted(f"Interrupted; continue with: fastinat sweep --resume {sweep_dir}") from None
    return finish(sweep_dir, cfg, wandb_records(sweep_dir), None, console)


def join_wandb(sweep_id: str, out: str | Path, count: int | None, console: Console | None = None):
    """Join a W&B sweep made elsewhere: its config comes from the W&B server."""
    import wandb
    import yaml

    api_sweep = wandb.Api().sweep(sweep_id)
    out = Path(out)
    sweep_dir = out / f"join-{sweep_id.replace('/', '-')}"
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from ..io import write_error

        raise write_error(sweep_dir, e) from None
    atomic_write(sweep_dir / SWEEP_YAML, lambda tmp: Path(tmp).write_text(yaml.safe_dump(dict(api_sweep.config))))
    meta = {"command": None, "backend": "wandb", "overrides": {}, "storage": None, "study": sweep_dir.name,
            "wandb_sweep_id": sweep_id}
    save_meta(sweep_dir, meta)
    cfg = load_sweep_config(sweep_dir / SWEEP_YAML)
    return run_wandb(sweep_dir, cfg, meta, count, project=api_sweep.project, entity=api_sweep.entity,
                     sweep_id=sweep_id, console=console)
