"""W&B logging through fastai's `WandbCallback`: online with credentials, offline without.

Never a login prompt: without an API key (`WANDB_API_KEY` or a netrc entry for the W&B
host) the run is logged offline into `RUN/wandb/`, to upload later with
`wandb sync RUN/wandb/offline-run-*`. `WANDB_MODE` wins when it is set
(`disabled` turns W&B off completely).
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return bool(netrc.netrc().authenticators(host or "api.wandb.ai"))
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """`WANDB_MODE` if set, else online with credentials and offline without."""
    return os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")


def start_wandb(run_dir: Path, config: dict, *, project: str, entity: str | None, name: str,
                run_id: str | None = None, group: str | None = None):
    """Start (or resume, with `run_id`) a W&B run; return (fastai callback, run id) or (None, None)."""
    mode = wandb_mode()
    if mode == "disabled":
        return None, None
    import wandb
    from fastai.callback.wandb import WandbCallback

    if wandb.run is not None:  # a W&B sweep agent's run: log into it
        wandb.run.config.update(config, allow_val_change=True)
        return WandbCallback(log=None, log_preds=False, log_model=False), wandb.run.id
    run = wandb.init(project=project, entity=entity, name=name, group=group, config=config,
                     dir=str(run_dir), mode=mode, id=run_id, resume="allow" if run_id else None,
                     settings=wandb.Settings(silent=True, console="off"))
    return WandbCallback(log=None, log_preds=False, log_model=False), run.id


def finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
