"""Options shared by `fastinat scratch` and `fastinat finetune`, grouped in help panels.

Every option defaults to None here, so only the flags a user typed reach the library,
whose config dataclasses hold the one set of defaults (shown in each help text).
"""

from __future__ import annotations

from pathlib import Path

import typer

DATA_PANEL, TRAIN_PANEL, OUT_PANEL = "Data", "Training", "Output and logging"

DATA = typer.Option(None, "--data", help="Dataset folder with train/<class>/ and val/<class>/ "
                    "(val/ is the TEST set). \\[default: data/inaturalist_12K]", rich_help_panel=DATA_PANEL)
SIZE = typer.Option(None, "--size", help="Square input size in pixels. \\[default: 224]",
                    rich_help_panel=DATA_PANEL)
BS = typer.Option(None, "--bs", help="Batch size (per process). \\[default: 64]",
                  rich_help_panel=DATA_PANEL)
AUGMENT = typer.Option(None, "--augment/--no-augment", help="Random resized crop, small rotation, "
                       "flip and lighting on the training set. \\[default: on]", rich_help_panel=DATA_PANEL)
VALID_PCT = typer.Option(None, "--valid-pct", help="Share of every class of train/ held out for "
                         "validation (seeded, stratified). \\[default: 0.2]", rich_help_panel=DATA_PANEL)
SEED = typer.Option(None, "--seed", help="Seed of the split, weights, augmentation and shuffling. "
                    "\\[default: 42]", rich_help_panel=DATA_PANEL)
WORKERS = typer.Option(None, "--workers", help="Loader processes. \\[default: one per CPU core, "
                       "at most 8]", rich_help_panel=DATA_PANEL)
PRESIZE = typer.Option(None, "--presize/--no-presize", help="Read small copies of the images, made "
                       "once in a cache outside the dataset. \\[default: off]", rich_help_panel=DATA_PANEL)

EPOCHS = typer.Option(None, "--epochs", help="Epochs of the one-cycle schedule. \\[default: 10]",
                      rich_help_panel=TRAIN_PANEL)
LR = typer.Option(None, "--lr", help="Peak learning rate, or 'auto' to run lr_find and use its "
                  "suggestion. \\[default: 1e-3]", rich_help_panel=TRAIN_PANEL)
PATIENCE = typer.Option(None, "--patience", help="Stop after this many epochs without a better "
                        "valid accuracy. \\[default: off]", rich_help_panel=TRAIN_PANEL)
PRECISION = typer.Option(None, "--precision", help="auto (fp16 mixed precision on CUDA, fp32 on "
                         "CPU), fp32, fp16 or bf16. \\[default: auto]", rich_help_panel=TRAIN_PANEL)

OUT = typer.Option(None, "--out", help="Parent folder of run folders. \\[default: runs]",
                   rich_help_panel=OUT_PANEL)
NAME = typer.Option(None, "--name", help="Run folder name. \\[default: <command>-<timestamp>]",
                    rich_help_panel=OUT_PANEL)
RESUME = typer.Option(None, "--resume", help="Continue an interrupted run folder with its saved "
                      "options.", rich_help_panel=OUT_PANEL)
CONFIG = typer.Option(None, "--config", help="YAML file of options (same names as the flags); "
                      "flags override it.", rich_help_panel=OUT_PANEL)
WANDB = typer.Option(None, "--wandb/--no-wandb", help="Log to Weights & Biases: online with "
                     "credentials, else offline into RUN/wandb (upload later with `wandb sync`); "
                     "never a login prompt. \\[default: on]", rich_help_panel=OUT_PANEL)
PROJECT = typer.Option(None, "--project", help="W&B project. \\[default: fastinat]",
                       rich_help_panel=OUT_PANEL)
ENTITY = typer.Option(None, "--entity", help="W&B entity (user or team). \\[default: yours]",
                      rich_help_panel=OUT_PANEL)


def to_library(options: dict) -> dict:
    """Drop the options not given and turn paths into strings."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if v is not None}
