"""fastinat: image classifiers for iNaturalist 12K on fastai and timm.

    import fastinat
    dls = fastinat.inat_dataloaders("data/digits", size=32, bs=64)
    test = fastinat.test_dataloader(dls)

Names are imported lazily, so `import fastinat` (and `fastinat --help`) stays fast: fastai
and torch load only when a function that needs them is first used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ._version import __version__
from .errors import (
    DatasetError,
    DownloadError,
    FastinatError,
    Interrupted,
    NotADatasetError,
    UsageError,
)

_LAZY = {
    "resolve": "fastinat.options",
    "DataConfig": "fastinat.config",
    "ScratchConfig": "fastinat.config",
    "FinetuneConfig": "fastinat.config",
    "inat_dataloaders": "fastinat.data.loaders",
    "test_dataloader": "fastinat.data.loaders",
    "usable_files": "fastinat.data.loaders",
    "InatData": "fastinat.data.loaders",
    "check_dataset": "fastinat.data.check",
    "scan_dataset": "fastinat.data.check",
    "write_demo": "fastinat.data.demo",
    "download_dataset": "fastinat.data.download",
    "open_rgb": "fastinat.data.images",
    "stratified_split": "fastinat.data.split",
    "build_cnn": "fastinat.models.cnn",
    "scratch_learner": "fastinat.learner",
    "finetune_learner": "fastinat.learner",
    "cached_learner": "fastinat.features",
    "load_model": "fastinat.inference",
    "predict": "fastinat.inference",
    "evaluate": "fastinat.report",
    "sweep": "fastinat.sweeps",
    "export_onnx": "fastinat.export",
    "explain": "fastinat.explain",
    "train_scratch": "fastinat.train",
    "train_finetune": "fastinat.train",
    "tune_malloc": "fastinat.perf",
    "tune_process": "fastinat.perf",
}

__all__ = ["__version__", "FastinatError", "UsageError", "Interrupted", "DatasetError", "NotADatasetError",
           "DownloadError", *_LAZY]


# A source checkout used without an install (`PYTHONPATH=. python -m fastinat`, the GPU check on a
# machine with no package registry): `fastinat.recipes` is the repository's recipes/, as
# pyproject's package-dir maps it for an install.
_checkout = Path(__file__).resolve().parent.parent
if not Path(__file__).with_name("recipes").exists() and (_checkout / "recipes" / "cli.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821  (the package's own __path__)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastinat' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
