"""`fastinat finetune`: Part B, a timm backbone with a new head, fine-tuned through fastai."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as o
from ._util import call

PANEL_MODEL = "Model (Part B backbone and head)"


def finetune(
    # model
    arch: str = typer.Option(None, help="Any timm architecture: resnet50, legacy_xception, "
                             "inception_v3, efficientnet_b0, convnext_tiny, vit_small_patch16_224 "
                             "... \\[default: resnet50]", rich_help_panel=PANEL_MODEL),
    pretrained: bool = typer.Option(None, "--pretrained/--no-pretrained", help="Start from ImageNet "
                                    "weights (downloaded by timm, or from the Hugging Face cache "
                                    "offline). \\[default: on]", rich_help_panel=PANEL_MODEL),
    weights: Path = typer.Option(None, help="Load the backbone from a local safetensors file or "
                                 "PyTorch state dict instead (its classifier, if any, is dropped).",
                                 rich_help_panel=PANEL_MODEL),
    freeze: str = typer.Option(None, help="head: only the new head trains (plus the backbone's "
                               "batch-norm layers, see --train-bn); last:K: the head and the "
                               "backbone's last K stages; none: everything; gradual: head only for "
                               "--freeze-epochs, then everything with lr slice(lr/100, lr). "
                               "\\[default: head]", rich_help_panel=PANEL_MODEL),
    freeze_epochs: int = typer.Option(None, help="gradual: head-only epochs before unfreezing; "
                                      "--epochs more follow. \\[default: 1]", rich_help_panel=PANEL_MODEL),
    train_bn: bool = typer.Option(None, "--train-bn/--no-train-bn", help="Batch-norm layers of a "
                                  "frozen backbone still train (fastai's train_bn); off keeps the "
                                  "frozen backbone exactly as loaded. \\[default: on]",
                                  rich_help_panel=PANEL_MODEL),
    dense_units: list[int] = typer.Option(None, help="Hidden layer widths of the head; repeat for "
                                          "more layers (--dense-units 512 --dense-units 256), 0 for "
                                          "none. \\[default: 512]", rich_help_panel=PANEL_MODEL),
    dropout: float = typer.Option(None, help="Dropout before the head's last layer (half of it "
                                  "before the others). \\[default: 0.5]", rich_help_panel=PANEL_MODEL),
    wd: float = typer.Option(None, help="Decoupled weight decay (AdamW-style). \\[default: 0.01]",
                             rich_help_panel=PANEL_MODEL),
    cache_features: bool = typer.Option(None, "--cache-features/--no-cache-features", help="With "
                                        "--freeze head: run the backbone once, cache its pooled "
                                        "features outside the dataset, and train the head on them "
                                        "(backbone batch norm stays frozen). \\[default: off]",
                                        rich_help_panel=PANEL_MODEL),
    feature_views: int = typer.Option(None, help="With --cache-features and --augment: augmented "
                                      "views cached per training image; epoch e uses view e mod N. "
                                      "\\[default: 1]", rich_help_panel=PANEL_MODEL),
    # data
    data: Path = o.DATA,
    size: int = typer.Option(None, "--size", help="Square input size in pixels. \\[default: the "
                             "backbone's own, e.g. 224 for resnet50, 299 for inception_v3 and "
                             "xception]", rich_help_panel=o.DATA_PANEL),
    bs: int = o.BS, augment: bool = o.AUGMENT, valid_pct: float = o.VALID_PCT, seed: int = o.SEED,
    workers: int = o.WORKERS, presize: bool = o.PRESIZE,
    # training
    epochs: int = o.EPOCHS, lr: str = o.LR, patience: int = o.PATIENCE, precision: str = o.PRECISION,
    # output
    out: Path = o.OUT, name: str = o.NAME, resume: Path = o.RESUME, config: Path = o.CONFIG,
    wandb: bool = o.WANDB, project: str = o.PROJECT, entity: str = o.ENTITY,
) -> None:
    """Fine-tune a timm backbone (Part B) with a new fastai head.

    The backbone's pretrained mean/std normalise the images whenever its weights are
    pretrained (--pretrained or --weights); the dataset's own statistics otherwise. The run
    prints trainable / total parameters and writes the same run folder as `fastinat scratch`:
    config.json, valid_files.txt, history.csv, model.safetensors + model.json (the full
    network, naming the timm architecture), metrics.json (valid and TEST)."""
    options = {k: v for k, v in locals().items() if k not in ("resume", "config")}
    if dense_units is not None:  # typer gives [] for a list option not given
        options["dense_units"] = [u for u in dense_units if u] if dense_units else None
    from fastinat.train import train_finetune

    call(train_finetune, config_file=config, resume=resume, **o.to_library(options))
