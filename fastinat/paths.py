"""Where fastinat looks for data and keeps its caches (never inside a dataset folder)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Default dataset location used when `--data` is not given.
DEFAULT_DATA = Path("data") / "inaturalist_12K"
#: Default location of the embedded demo dataset.
DEFAULT_DEMO = Path("data") / "digits"
#: Where `fastinat data download` puts nature_12K (as DEST/inaturalist_12K), and from where.
DEFAULT_DOWNLOAD = Path("data")
DATASET_URL = "https://storage.googleapis.com/wandb_datasets/nature_12K.zip"
DATASET_BYTES = 3_816_687_935


def cache_dir(*parts: str) -> Path:
    """The fastinat cache folder: `$FASTINAT_CACHE`, else `$XDG_CACHE_HOME/fastinat`, else `~/.cache/fastinat`."""
    root = os.environ.get("FASTINAT_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "fastinat")
    return Path(root, *parts)


def path_key(path: Path) -> str:
    """A short stable key for a dataset folder (its absolute, resolved path)."""
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]


def builtin_dir(kind: str) -> Path:
    """recipes/<kind>/ (`sweeps`, `presets`): YAML files shipped as package data of fastinat.recipes."""
    from importlib.resources import files

    return Path(str(files("fastinat.recipes") / kind))
