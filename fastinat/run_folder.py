"""The run folder: what `fastinat scratch|finetune` writes, how it is named, how it is read back.

    runs/scratch-20261128-120000/     # <out>/<command>-<timestamp>, or <out>/<--name>
        config.json                   # resolved options, lr used, versions, device
        valid_files.txt               # the validation split (reused on resume)
        history.csv                   # one row per epoch
        model.safetensors, model.json # best weights and the model card (fastinat.load_model)
        checkpoint.pt                 # while training: the resume state (removed at the end)
        metrics.json                  # valid and TEST metrics: there once the run has finished
        report/                       # the TEST report (fastinat.report)
        wandb/                        # the W&B run (offline without credentials)
    runs/latest -> scratch-20261128-120000

In a distributed run only rank 0 writes here. The README's "Run folders" table says more.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime
from pathlib import Path

from ._version import __version__
from .config import TrainConfig
from .errors import UsageError
from .io import read_json
from .options import resolve

CONFIG, HISTORY, WEIGHTS, CARD = "config.json", "history.csv", "model.safetensors", "model.json"
CHECKPOINT, METRICS, SPLIT, REPORT = "checkpoint.pt", "metrics.json", "valid_files.txt", "report"
LATEST = "latest"  # <out>/latest -> the newest run folder
MODEL_FORMAT = "fastinat-model/1"  # model.json's "format": what inference.read_card accepts


def versions() -> dict:
    """The library versions a run records in config.json."""
    import fastai
    import torch

    out = {"fastinat": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "fastai": fastai.__version__}
    try:
        import timm

        out["timm"] = timm.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def new_run_dir(cfg: TrainConfig) -> Path:
    """Make and return `<out>/<name>`, or `<out>/<command>-<timestamp>` without a name.

    Raises:
        UsageError: the named folder exists already, or the name is `latest`.
    """
    out = Path(cfg.out)
    if cfg.name == LATEST:
        raise UsageError(f"--name {LATEST} is taken by the link to the newest run; choose another.")
    if cfg.name:
        run_dir = out / cfg.name
        if run_dir.exists():
            raise UsageError(f"The run folder {run_dir} already exists; choose another --name, "
                             f"or continue it with --resume {run_dir}.")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir, n = out / f"{cfg.command}-{stamp}", 2
        while run_dir.exists():
            run_dir, n = out / f"{cfg.command}-{stamp}-{n}", n + 1
    run_dir.mkdir(parents=True)
    return run_dir


def point_latest(run_dir: Path) -> None:
    """Make `<out>/latest` a symlink to the newest run (`fastinat evaluate runs/latest`).

    Best effort: a file system without symlinks, or a real folder named `latest`, is left alone.
    """
    link = run_dir.parent / LATEST
    if link.exists() and not link.is_symlink():
        return
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def load_run_config(run_dir: str | Path, cls: type[TrainConfig]) -> tuple[TrainConfig, dict]:
    """(the run's resolved config, its whole config.json) to resume a `cls.command` run."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise UsageError(f"{run_dir} is not a fastinat run folder (it has no {CONFIG}).")
    saved = read_json(run_dir / CONFIG)
    if saved.get("command") != cls.command:
        raise UsageError(f"{run_dir} is a `fastinat {saved.get('command')}` run; resume it with "
                         f"`fastinat {saved.get('command')} --resume {run_dir}`.")
    return resolve(cls, overrides=saved["config"]), saved


def run_data(run_dir: str | Path) -> str | None:
    """The dataset folder a run was trained on, as its config.json says (None if it does not)."""
    path = Path(run_dir) / CONFIG
    return read_json(path).get("config", {}).get("data") if path.is_file() else None
