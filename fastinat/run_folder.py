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
from .errors import UsageError, plural
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
    return f"cpu ({plural(torch.get_num_threads(), 'thread')})"


def check_run_name(cfg: TrainConfig) -> None:
    """Fail early (before the data is read) when `--name` cannot be used.

    Raises:
        UsageError: the named folder exists already, or the name is `latest`.
    """
    if cfg.name == LATEST:
        raise UsageError(f"--name {LATEST} is taken by the link to the newest run; choose another.")
    check_name_free(Path(cfg.out), cfg.name, "run")


def check_name_free(out: Path, name: str | None, what: str) -> None:
    """A quick look, before the work starts, that `out/name` does not exist yet (the folder is
    claimed later, by `claim_folder`). `what`: "run" or "sweep".

    Raises:
        UsageError: it exists.
    """
    if name and (out / name).exists():
        raise folder_taken(out / name, what)


def folder_taken(folder: Path, what: str) -> UsageError:
    return UsageError(f"The {what} folder {folder} already exists; choose another --name, or continue "
                      f"it with --resume {folder}.")


def claim_folder(out: Path, name: str | None, stem: str, what: str = "run") -> Path:
    """Make and return `out/name`, or `out/<stem>-<timestamp>[-n]` without a name.

    The folder is made with one `mkdir` that fails if it exists, so of two processes started
    with the same name at once only one gets it; the other never writes into it.

    Raises:
        UsageError: the named folder exists already (`what`: "run" or "sweep" names the command).
        WriteError: `out` cannot be written (read-only, no space, no permission).
    """
    from .errors import NotAFolderError
    from .io import write_error

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = out / (name or f"{stem}-{stamp}"), 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(folder, e) from None
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            if not folder.is_dir():
                raise NotAFolderError(f"Could not make the {what} folder {folder}: a file of that name is "
                                      "there; choose another --name or --out.") from None
            if name:
                raise folder_taken(folder, what) from None
            folder, n = out / f"{stem}-{stamp}-{n}", n + 1  # two started in the same second
        except OSError as e:
            raise write_error(folder, e) from None


def new_run_dir(cfg: TrainConfig) -> Path:
    """Make and return `<out>/<name>`, or `<out>/<command>-<timestamp>` without a name.

    Raises:
        UsageError: the named folder exists already, or the name is `latest`.
        WriteError: `out` cannot be written.
    """
    check_run_name(cfg)
    return claim_folder(Path(cfg.out), cfg.name, cfg.command, "run")


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


def resolve_latest(run: str | Path) -> Path:
    """`runs/latest` as the run it points to (`runs/scratch-20261128-120000`), so messages and
    reports name the run itself; any other path as it is."""
    run = Path(run)
    if run.name == LATEST and run.is_symlink():
        try:
            return run.parent / os.readlink(run)
        except OSError:
            return run
    return run


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
