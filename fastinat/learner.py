"""Learner factories, data first (like fastai's `vision_learner`): `scratch_learner(dls, ...)`
for Part A, `finetune_learner(dls, "resnet50", ...)` for Part B.

Each factory returns a fastai `Learner` with cross-entropy loss, accuracy and macro-F1
metrics, and `learn.card`: what `model.json` records so the model can be rebuilt without
pickle (architecture, classes, input size, normalisation).

`SCRATCH` and `FINETUNE` are the two recipes `fastinat.train.train` runs: a part's config
class, its normalisation, its factory call and its fit (Part B: gradual unfreezing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import F1Score, accuracy
from fastai.optimizer import Adam
from rich.console import Console

from .config import FinetuneConfig, ScratchConfig, TrainConfig
from .errors import FastinatError, UsageError
from .models.cnn import ScratchCNN, cnn_config, count_parameters


def default_metrics() -> list:
    return [accuracy, F1Score(average="macro")]


def data_card(dls) -> dict:
    info = dls.inat
    mean, std = info.stats if info.stats else (None, None)
    return {
        "classes": list(dls.vocab),
        "input_size": info.size,
        "normalize": {"mean": mean, "std": std},
        "eval_transform": "decode RGB (EXIF upright), take the centre square, resize to "
                          "input_size x input_size (integer box-average when >= 2x, then bilinear; "
                          "OpenCV), scale to 0-1, normalise",
    }


def scratch_learner(dls, *, l2: float = 0.0, filters=None, kernel_sizes=3, activation: str = "relu",
                    batchnorm: bool = True, dropout: float = 0.2, dense_units: int = 256,
                    padding: str = "same", filter_base: int | None = None,
                    filter_org: str | None = None, depth: int | None = None) -> Learner:
    """A Learner for the Part A CNN on `dls` (from `inat_dataloaders`).

    Args:
        l2: coupled L2 penalty: `l2 * w` is added to the gradient of *every* trainable
            parameter (conv, batch norm, dense, classifier, biases) before Adam's update —
            classic L2 regularisation as in the original Keras models, not decoupled
            weight decay.
        the rest: see `fastinat.models.cnn.build_cnn`.

    Raises:
        FastinatError: a bad model option, or images too small for the network.
    """
    cfg = cnn_config(len(dls.vocab), filters, kernel_sizes, activation, batchnorm, dropout,
                     dense_units, 3, padding, filter_base, filter_org, depth)
    cfg.check_input_size(dls.inat.size)
    model = ScratchCNN(cfg)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=default_metrics(),
                    opt_func=partial(Adam, decouple_wd=False), wd=float(l2), wd_bn_bias=True,
                    train_bn=True)
    learn.card = {"format": "fastinat-model/1", "kind": "scratch", "arch": "cnn",
                  "model": cfg.to_dict(), **data_card(dls)}
    return learn


OFFLINE = ("Cannot get the pretrained weights of {arch}: no network, and they are not in the "
           "Hugging Face cache; pass a local file with --weights FILE, or train from random weights "
           "with --no-pretrained.")


def finetune_learner(dls, arch: str = "resnet50", *, pretrained: bool = True,
                     weights: str | Path | None = None, dense_units=(512,), dropout: float = 0.5,
                     freeze: str = "head", wd: float | None = None, train_bn: bool = True,
                     **timm_kwargs) -> Learner:
    """A fastai `vision_learner` over the timm backbone `arch`, frozen as `freeze` says.

    Args:
        pretrained: ImageNet weights through timm and the Hugging Face cache (online, or
            offline when already cached).
        weights: a local safetensors file or PyTorch state dict for the backbone, loaded the
            timm way (`pretrained_cfg_overlay=dict(file=..., num_classes=-1)`); its classifier
            tensors, if any, are dropped. Implies pretrained weights.
        dense_units, dropout: fastai's head (`lin_ftrs`, `ps`) after concat pooling.
        freeze: `head` (only the new head trains, plus batch-norm layers when `train_bn`),
            `last:K` (the head and the last K stages of the backbone, from timm's
            feature_info), `none` (everything), `gradual` (starts as `head`; the training
            path unfreezes everything after its head-only epochs).
        wd: decoupled weight decay (fastai's default, 0.01, when None).
        train_bn: fastai's `train_bn`: batch-norm layers of a frozen backbone still train.
            False keeps them frozen and in eval mode, so a frozen backbone stays exactly as loaded.
        timm_kwargs: passed to `timm.create_model` (e.g. drop_path_rate). A fixed-input-size
            model (ViT) gets `img_size` = the loaders' size.

    Normalisation: with pretrained weights (hub or file) the loaders are switched to the
    backbone's mean/std (`dls.inat.stats` follows); otherwise they keep what they have.
    The parameter groups are [backbone before the last K stages, last K stages, head] for
    `last:K` and [backbone, head] otherwise, so `slice(lr/100, lr)` gives discriminative rates.

    Raises:
        FastinatError: unknown architecture or freeze mode, unreadable or mismatched weights
            file, pretrained weights out of reach.
    """
    from fastai.callback.training import BnFreeze
    from fastai.vision.learner import default_split

    from .data.loaders import set_normalize
    from .models.backbones import (
        backbone_stats,
        check_arch,
        first_mismatch,
        parse_freeze,
        size_options,
        stage_split,
        weight_shapes,
    )

    check_arch(arch)
    mode, k = parse_freeze(freeze)
    timm_kwargs = {**size_options(arch, dls.inat.size), **timm_kwargs}
    shapes = None
    if weights is not None:
        shapes, pretrained = weight_shapes(weights), True
        overlay = {"file": str(Path(weights).resolve()), "num_classes": -1}
    if pretrained:
        stats = backbone_stats(arch)
        if dls.inat.stats != stats:
            set_normalize(dls, stats)

    def splitter(model):
        if mode != "last":
            return default_split(model)
        early, late = stage_split(model[0].model, k)
        return [early, late, list(model[1].parameters())]

    learn = _vision_learner(
        dls, arch, weights, shapes, timm_kwargs, pretrained=pretrained, normalize=False, n_out=len(dls.vocab),
        lin_ftrs=list(dense_units), ps=dropout, loss_func=CrossEntropyLossFlat(),
        metrics=default_metrics(), splitter=splitter, wd=wd, train_bn=train_bn,
        cbs=None if train_bn else [BnFreeze()],
        **({"pretrained_cfg_overlay": overlay} if weights is not None else {}))
    if shapes is not None:  # timm loads non-strictly once it drops the classifier: check it all came
        body = {k: tuple(v.shape) for k, v in learn.model[0].model.state_dict().items()}
        why = first_mismatch(body, shapes, check_shapes=False)  # resampled shapes (ViT) are fine
        if why is not None:
            raise UsageError(f"The weights file {weights} does not fit {arch}: {why}.")
    if mode == "none":
        learn.unfreeze()
    elif mode == "last":
        learn.freeze_to(-2)
    else:
        learn.freeze()
    source = str(Path(weights).resolve()) if weights is not None else ("timm" if pretrained else None)
    learn.card = {"format": "fastinat-model/1", "kind": "finetune", "arch": arch,
                  "model": {"arch": arch, "dense_units": list(dense_units), "dropout": float(dropout),
                            "concat_pool": True, "timm_kwargs": timm_kwargs},
                  "pretrained_weights": source, **data_card(dls)}
    return learn


def _vision_learner(dls, arch: str, weights, shapes, timm_kwargs: dict, *, pretrained: bool,
                    **kwargs) -> Learner:
    """fastai's vision_learner, with timm's weight-loading failures turned into one clear line."""
    from fastai.vision.learner import vision_learner

    from .models.backbones import backbone_shapes, first_mismatch

    try:
        return vision_learner(dls, arch, pretrained=pretrained, **timm_kwargs, **kwargs)
    except RuntimeError as e:
        if weights is not None and "size mismatch" in str(e):
            why = first_mismatch(backbone_shapes(arch, **timm_kwargs), shapes) or str(e).splitlines()[-1].strip()
            raise UsageError(f"The weights file {weights} does not fit {arch}: {why}.") from None
        if "No pretrained weights exist" in str(e):
            raise UsageError(f"timm has no pretrained weights for {arch}; pass --weights FILE "
                                "or --no-pretrained.") from None
        raise
    except OSError as e:  # hub / URL / connection errors are all OSErrors
        if pretrained and weights is None:
            raise FastinatError(OFFLINE.format(arch=arch)) from None
        raise UsageError(f"Cannot read the weights file {weights}: {e}.") from None


# -- the two recipes: what `fastinat.train.train` does differently for Part A and Part B -----------

def trainable_parameters(learn) -> tuple[int, int]:
    """(trainable, total) parameters of the model a run saves."""
    return count_parameters(getattr(learn, "saved_model", learn.model))


def fit_one_cycle(learn, cfg: TrainConfig, lr: float, cbs, start_epoch: int, console: Console) -> None:
    """Part A's fit (and Part B's without gradual unfreezing): fastai's one-cycle schedule."""
    learn.fit_one_cycle(cfg.epochs, lr, cbs=cbs, start_epoch=start_epoch)


@dataclass
class Recipe:
    """What differs between Part A and Part B: the config class, normalisation, the Learner, the fit."""

    config_cls: type[TrainConfig]
    normalize: Callable[[TrainConfig], object]  # cfg -> inat_dataloaders(normalize=...)
    learner: Callable  # (dls, cfg, console) -> Learner with `learn.card`
    fit: Callable = fit_one_cycle  # (learn, cfg, lr, cbs, start_epoch, console)


def _scratch_learner(dls, cfg: ScratchConfig, console: Console):
    return scratch_learner(dls, l2=cfg.l2, **cfg.model_options())


SCRATCH = Recipe(ScratchConfig, lambda cfg: "dataset", _scratch_learner)


def _finetune_normalize(cfg: FinetuneConfig):
    from .models.backbones import backbone_stats

    return backbone_stats(cfg.arch) if cfg.pretrained or cfg.weights else "dataset"


def _finetune_learner(dls, cfg: FinetuneConfig, console: Console):
    learn = finetune_learner(dls, cfg.arch, pretrained=cfg.pretrained, weights=cfg.weights,
                             dense_units=cfg.dense_units, dropout=cfg.dropout, freeze=cfg.freeze,
                             wd=cfg.wd, train_bn=cfg.train_bn)
    if cfg.cache_features:
        from .features import cached_learner

        learn = cached_learner(learn, views=cfg.feature_views, seed=cfg.seed, console=console)
    return learn


def _finetune_fit(learn, cfg: FinetuneConfig, lr: float, cbs, start_epoch: int, console: Console) -> None:
    from .callbacks.unfreeze import fit_gradual

    if not cfg.gradual:
        return fit_one_cycle(learn, cfg, lr, cbs, start_epoch, console)

    def announce(learn) -> None:
        trainable, total = trainable_parameters(learn)
        console.print(f"Unfreezing the backbone: {trainable:,} of {total:,} parameters train from "
                      f"epoch {cfg.freeze_epochs + 1}, lr slice({lr / 100:.1e}, {lr:.1e}).", highlight=False)

    fit_gradual(learn, cfg.freeze_epochs, cfg.epochs, lr, cbs, start_epoch, announce=announce)


FINETUNE = Recipe(FinetuneConfig, _finetune_normalize, _finetune_learner, _finetune_fit)
