"""`fastinat scratch`: Part A, a CNN trained from random initialisation."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as o
from ._util import call

PANEL_MODEL = "Model (Part A CNN)"


def scratch(
    # data
    data: Path = o.DATA, size: int = o.SIZE, bs: int = o.BS, augment: bool = o.AUGMENT,
    valid_pct: float = o.VALID_PCT, seed: int = o.SEED, workers: int = o.WORKERS,
    presize: bool = o.PRESIZE,
    # model
    filters: str = typer.Option(None, help="Filter count per block, e.g. 32,64,128,256,512. "
                                "\\[default: 32,64,128,256,512]", rich_help_panel=PANEL_MODEL),
    filter_base: int = typer.Option(None, min=1, help="Base filter count for --filter-org "
                                    "(instead of --filters). \\[default: 32]", rich_help_panel=PANEL_MODEL),
    filter_org: str = typer.Option(None, help="Filter organisation over --depth blocks: same, double "
                                   "or halve (e.g. 32 double 5 -> 32,64,128,256,512). \\[default: double]",
                                   rich_help_panel=PANEL_MODEL),
    depth: int = typer.Option(None, min=1, help="Number of conv blocks for --filter-org. \\[default: 5]",
                              rich_help_panel=PANEL_MODEL),
    kernel_sizes: str = typer.Option(None, help="Kernel size, one for all blocks or one per block, "
                                     "e.g. 3,5,3,5,3. \\[default: 3]", rich_help_panel=PANEL_MODEL),
    activation: str = typer.Option(None, help="relu, elu, silu, gelu or mish. \\[default: relu]",
                                   rich_help_panel=PANEL_MODEL),
    batchnorm: bool = typer.Option(None, "--batchnorm/--no-batchnorm", help="Batch norm after every "
                                   "conv. \\[default: on]", rich_help_panel=PANEL_MODEL),
    dropout: float = typer.Option(None, help="Dropout before the classifier, 0 to <1. \\[default: 0.2]",
                                  rich_help_panel=PANEL_MODEL),
    dense_units: int = typer.Option(None, help="Width of the dense layer. \\[default: 256]",
                                    rich_help_panel=PANEL_MODEL),
    padding: str = typer.Option(None, help="same, or valid (no padding, as in the original "
                                "assignment). \\[default: same]", rich_help_panel=PANEL_MODEL),
    l2: float = typer.Option(None, help="Coupled L2 penalty (classic L2 regularisation, not "
                             "decoupled weight decay): l2*w is added to the gradient of every "
                             "trainable parameter, head and biases included. Original space: 0, "
                             "5e-5, 5e-4. \\[default: 0]", rich_help_panel=PANEL_MODEL),
    # training
    epochs: int = o.EPOCHS, lr: str = o.LR, patience: int = o.PATIENCE, precision: str = o.PRECISION,
    # output
    out: Path = o.OUT, name: str = o.NAME, resume: Path = o.RESUME, config: Path = o.CONFIG,
    wandb: bool = o.WANDB, project: str = o.PROJECT, entity: str = o.ENTITY,
) -> None:
    """Train the Part A CNN from scratch (random initialisation).

    One block per filter count (conv -> batch norm -> activation -> 2x2 max-pool), then a
    dense layer -> activation -> dropout -> classifier, trained with fit_one_cycle.
    Writes runs/<name>/: config.json, valid_files.txt, history.csv, model.safetensors +
    model.json (best valid accuracy), metrics.json (valid and TEST)."""
    options = {k: v for k, v in locals().items() if k not in ("resume", "config")}
    from fastinat.train import train_scratch

    call(train_scratch, config_file=config, resume=resume, **o.to_library(options))
