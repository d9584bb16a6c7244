"""Hyperparameter sweeps over `fastinat scratch` / `fastinat finetune` (see `run.py`)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..errors import UsageError
from ..io import write_json

BACKENDS = ("local", "wandb")


def default_backend() -> str:
    """wandb when W&B credentials are configured and W&B is online, else local (Optuna)."""
    from ..callbacks.wandb import has_credentials, wandb_mode

    return "wandb" if has_credentials() and wandb_mode() == "online" else "local"


def _need_wandb_online() -> None:
    from ..callbacks.wandb import has_credentials, wandb_mode

    if not has_credentials() or wandb_mode() != "online":
        raise UsageError("The wandb backend needs the W&B server: log in with `wandb login` (and "
                            "WANDB_MODE unset or online), or run the sweep offline with --backend local.")


def sweep(config: str | Path | None = None, *, backend: str | None = None, count: int | None = None,
          data: str | None = None, epochs: int | None = None, size: int | None = None,
          out: str | Path | None = None, name: str | None = None, storage: str | None = None,
          resume: str | Path | None = None, join: str | None = None, seed: int = 0,
          project: str = "fastinat", entity: str | None = None, console: Console | None = None):
    """Start, resume or join a sweep; returns its trial records (the leaderboard's rows).

    Raises:
        FastinatError: a bad config (before any trial runs), a bad sweep folder, or options
            that do not go together.
    """
    from .run import join_wandb, new_sweep, open_sweep, report_only, run_local, run_wandb

    console = console or Console(soft_wrap=True)
    if count is not None and count < 0:
        raise UsageError("--count must be 0 or more.")
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"Unknown backend {backend!r}; use local or wandb.")
    if join is not None:
        _need_wandb_online()
        return join_wandb(join, out, count, console)
    if resume is not None:
        given = [f"--{k}" for k, v in (("data", data), ("epochs", epochs), ("size", size), ("name", name),
                                       ("backend", backend), ("storage", storage)) if v is not None]
        if config is not None or given:
            raise UsageError("--resume continues a sweep with its saved config and options; drop "
                                + ", ".join(given or ["CONFIG"]) + ".")
        sweep_dir, cfg, meta = open_sweep(resume)
        if count is None:
            count = meta.get("count")  # the total asked for when the sweep started
        elif count:
            meta["count"] = count
            write_json(sweep_dir / "sweep.json", meta)
        if count == 0:  # only the results
            return report_only(sweep_dir, cfg, meta, seed=seed, console=console)
    else:
        if config is None:
            raise UsageError("Give a sweep config (a YAML file, or scratch / finetune), "
                                "or --resume SWEEP_DIR, or --join SWEEP_ID.")
        backend = backend or default_backend()
        overrides = {"data": data, "epochs": epochs, "size": size}
        sweep_dir, cfg = new_sweep(config, out, name, backend, overrides, storage)
        meta = open_sweep(sweep_dir)[2]
        meta["count"] = count
        write_json(sweep_dir / "sweep.json", meta)
        console.print(f"Sweep {sweep_dir}: {cfg.method} over {', '.join(p.key for p in cfg.searched)} "
                      f"({cfg.command}, {backend}, {cfg.metric} {cfg.goal})", highlight=False)
    if meta["backend"] == "local":
        return run_local(sweep_dir, cfg, meta, count, seed=seed, console=console)
    _need_wandb_online()
    return run_wandb(sweep_dir, cfg, meta, count, project=project, entity=entity, console=console)
