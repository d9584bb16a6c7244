"""`fastinat finetune`: Part B, a timm backbone with a new head, fine-tuned through fastai."""

from __future__ import annotations

from pathlib import Path

from fastinat.config import FinetuneConfig

from ._options import CONFIG, RESUME, with_options
from ._util import call


@with_options(FinetuneConfig)
def finetune(resume: Path = RESUME, config: Path = CONFIG, **options) -> None:
    """Fine-tune a timm backbone (Part B) with a new fastai head.

    The backbone's pretrained mean/std normalise the images whenever its weights are
    pretrained (--pretrained or --weights); the dataset's own statistics otherwise. The run
    prints trainable / total parameters and writes the same run folder as `fastinat scratch`:
    config.json, valid_files.txt, history.csv, model.safetensors + model.json (the full
    network, naming the timm architecture), metrics.json (valid and TEST)."""
    from fastinat.train import train_finetune

    call(train_finetune, config_file=config, resume=resume, **options)
