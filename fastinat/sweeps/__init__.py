"""Hyperparameter sweeps over `fastinat scratch` / `fastinat finetune` (see `run.py`)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..config import SweepOptions
from ..errors import UsageError
from ..io import write_json
from ..options import resolve


def default_backend() -> str:
    """wandb when W&B credentials are configured and W&B is online, else local (Optuna)."""
    from ..callbacks.wandb import has_credentials, wandb_mode

    return "wandb" if has_credentials() and wandb_mode() == "online" else "local"


def _need_wandb_online() -> None:
    from ..callbacks.wandb import has_credentials, wandb_mode

    if not has_credentials() or wandb_mode() != "online":
        raise UsageError("The wandb backend needs the W&B server: log in with `wandb login` (and "
                         "WANDB_MODE unset or online), or run the sweep offline with --backend local.")


def sweep(config: str | Path | None = None, *, console: Console | None = None, **options):
    """Start, resume or join a sweep; returns its trial records (the leaderboard's rows).

    `options`: `fastinat.config.SweepOptions` fields (backend, count, data, epochs, size, out,
    name, storage, resume, seed, join, project, entity); None or absent means the default.

    Raises:
        UsageError: a bad config (before any trial runs), a bad sweep folder, or options
            that do not go together.
    """
    from .run import join_wandb, new_sweep, open_sweep, report_only, run_local, run_wandb

    console = console or Console(soft_wrap=True)
    opts = resolve(SweepOptions, overrides=options)
    if opts.join is not None:
        _need_wandb_online()
        return join_wandb(opts.join, opts.out, opts.count, console)
    if opts.resume is not None:
        sweep_dir, cfg, meta = _resume(config, opts)
        if opts.count == 0:  # only the results
            return report_only(sweep_dir, cfg, meta, seed=opts.seed, console=console)
    else:
        if config is None:
            raise UsageError("Give a sweep config (a YAML file, or scratch / finetune), "
                             "or --resume SWEEP_DIR, or --join SWEEP_ID.")
        backend = opts.backend or default_backend()
        overrides = {"data": opts.data, "epochs": opts.epochs, "size": opts.size}
        sweep_dir, cfg = new_sweep(config, opts.out, opts.name, backend, overrides, opts.storage)
        meta = open_sweep(sweep_dir)[2]
        meta["count"] = opts.count
        write_json(sweep_dir / "sweep.json", meta)
        console.print(f"Sweep {sweep_dir}: {cfg.method} over {', '.join(p.key for p in cfg.searched)} "
                      f"({cfg.command}, {backend})", highlight=False)
    _print_resolved(cfg, meta["backend"], console)
    if meta["backend"] == "local":
        return run_local(sweep_dir, cfg, meta, meta["count"], seed=opts.seed, console=console)
    _need_wandb_online()
    return run_wandb(sweep_dir, cfg, meta, meta["count"], project=opts.project, entity=opts.entity,
                     console=console)


def _print_resolved(cfg, backend: str, console: Console) -> None:
    """The metric and goal the sweep optimises (W&B's default goal is minimize), then the notes."""
    why = "" if cfg.goal_given else " (W&B's default: the config gives no metric.goal)"
    console.print(f"metric: {cfg.metric}, goal: {cfg.goal}{why}", highlight=False)
    for note in cfg.notes:
        console.print(note, highlight=False)
    if backend == "local" and cfg.wandb_only:
        console.print(f"note: {', '.join(cfg.wandb_only)}: W&B-only, ignored by the local backend",
                      highlight=False)


def _resume(config, opts: SweepOptions):
    """(folder, config, sweep.json) of the sweep to continue; a new --count is saved in it."""
    from .run import open_sweep

    given = [f"--{k}" for k in ("data", "epochs", "size", "name", "backend", "storage")
             if getattr(opts, k) is not None]
    if config is not None or given:
        raise UsageError("--resume continues a sweep with its saved config and options; drop "
                         + ", ".join(given or ["CONFIG"]) + ".")
    sweep_dir, cfg, meta = open_sweep(opts.resume)
    if opts.count:  # else: the total asked for when the sweep started
        meta["count"] = opts.count
        write_json(sweep_dir / "sweep.json", meta)
    return sweep_dir, cfg, meta
