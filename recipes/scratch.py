"""`fastinat scratch`: Part A, a CNN trained from random initialisation."""

from __future__ import annotations

from pathlib import Path

from fastinat.config import ScratchConfig

from ._options import CONFIG, RESUME, with_options
from ._util import call


@with_options(ScratchConfig)
def scratch(resume: Path = RESUME, config: Path = CONFIG, **options) -> None:
    """Train the Part A CNN from scratch (random initialisation).

    One block per filter count (conv -> batch norm -> activation -> 2x2 max-pool), then a
    dense layer -> activation -> dropout -> classifier, trained with fit_one_cycle.
    Writes runs/<name>/: config.json, valid_files.txt, history.csv, model.safetensors +
    model.json (best valid accuracy), metrics.json (valid and TEST)."""
    from fastinat.train import train_scratch

    call(train_scratch, config_file=config, resume=resume, **options)
