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
from .layout import guard_layout
from .models.cnn import ScratchCNN, cnn_config, count_parameters
from .options import resolve
from .run_folder import MODEL_FORMAT


def default_metrics() -> list:
    return [accuracy, F1Score(average="macro")]


def model_card(kind: str, arch: str, model: dict, dls, **extra) -> dict:
    """What `model.json` records: enough to rebuild the network and its input without pickle.

    Its normalisation is what the loaders apply, fixed from now on (`fix_normalize`): a later
    learner on the same loaders cannot change it under this card.
    """
    from .data.loaders import fix_normalize

    info = dls.inat
    stats = fix_normalize(dls)
    mean, std = stats if stats else (None, None)
    return {
        "format": MODEL_FORMAT, "kind": kind, "arch": arch, "model": model, **extra,
        "classes": list(dls.vocab),
        "input_size": info.size,
        "normalize": {"mean": mean, "std": std},
        "eval_transform": "decode RGB (EXIF upright), take the centre square, resize to "
                          "input_size x input_size (integer box-average when >= 2x, then bilinear; "
                          "OpenCV), scale to 0-1, normalise",
    }


def loss_func(cfg: TrainConfig):
    """Cross-entropy, label-smoothed by `cfg.label_smoothing` (fastai's losses)."""
    from fastai.losses import LabelSmoothingCrossEntropyFlat

    return LabelSmoothingCrossEntropyFlat(eps=cfg.label_smoothing) if cfg.label_smoothing \
        else CrossEntropyLossFlat()


def scratch_learner(dls, cfg: ScratchConfig | None = None, **options) -> Learner:
    """A Learner for the Part A CNN on `dls` (from `inat_dataloaders`).

    Args:
        cfg: a `ScratchConfig` (None: its defaults); `options` (its fields) override it.
            `l2` is a coupled L2 penalty: `l2 * w` is added to the gradient of *every*
            trainable parameter (conv, batch norm, dense, classifier, biases) before Adam's
            update, classic L2 regularisation as in the original Keras models, not decoupled
            weight decay. The CNN options: see `fastinat.models.cnn.build_cnn`.

    Raises:
        UsageError: a bad model option, or images too small for the network.
    """
    cfg = resolve(ScratchConfig, overrides=options, base=cfg)
    shape = cnn_config(len(dls.vocab), cfg)
    for size in (dls.inat.size, *(cfg.progressive or ())):  # progressive resizing's sizes train too
        shape.check_input_size(size)
    learn = Learner(dls, ScratchCNN(shape), loss_func=loss_func(cfg), metrics=default_metrics(),
                    opt_func=partial(Adam, decouple_wd=False), wd=cfg.l2, wd_bn_bias=True, train_bn=True)
    guard_layout(learn.model)  # its batches come channels_last: NCHW where oneDNN needs it
    learn.card = model_card("scratch", "cnn", shape.to_dict(), dls)
    return learn


OFFLINE = ("Cannot get the pretrained weights of {arch}: no network, and they are not in the "
           "Hugging Face cache; pass a local file with --weights FILE, or train from random weights "
           "with --no-pretrained.")


def finetune_normalize(cfg: FinetuneConfig):
    """The normalisation `cfg`'s backbone wants (`inat_dataloaders(normalize=...)`): the backbone's
    mean/std for pretrained weights (from the hub or --weights), else the dataset's own
    statistics ("dataset")."""
    from .models.backbones import backbone_stats

    return backbone_stats(cfg.arch) if cfg.pretrained or cfg.weights else "dataset"


def finetune_learner(dls, arch: str | None = None, cfg: FinetuneConfig | None = None, *,
                     timm_kwargs: dict | None = None, **options) -> Learner:
    """A fastai `vision_learner` over the timm backbone `arch`, frozen as `cfg.freeze` says.

    Args:
        arch, cfg, options: a `FinetuneConfig` (None: its defaults) with `arch` and `options`
            (its fields) applied. The fields used here: `pretrained` (ImageNet weights through
            timm and the Hugging Face cache), `weights` (a local safetensors file or PyTorch
            state dict, loaded the timm way, `pretrained_cfg_overlay=dict(file=...,
            num_classes=-1)`; its classifier, if any, is dropped), `dense_units` and `dropout`
            (fastai's head, `lin_ftrs` and `ps`, after fastai's concat pooling of a CNN's NCHW
            map, or after timm's own pooling for token and channels-last models: ViT, Swin;
            see `fastinat.models.backbones.POOLINGS`), `drop_path` (timm's drop_path_rate,
            when not 0), `freeze` (`head`: only
            the new head trains, plus batch-norm layers when `train_bn`; `last:K`: the head and
            the last K stages, from timm's feature_info; `none`; `gradual`: starts as `head`,
            the training path unfreezes later), `wd` (decoupled weight decay), `train_bn`
            (fastai's: batch-norm layers of a frozen backbone still train; False keeps them
            frozen and in eval mode).
        timm_kwargs: passed to `timm.create_model` (e.g. drop_path_rate). A fixed-input-size
            model (ViT) gets `img_size` = the loaders' size.

    Normalisation (fastai's rule: a learner adds its normalisation only where the data has
    none): loaders made with `normalize="auto"` (the default) and not yet used by a learner are
    fixed to what `finetune_normalize` says (with pretrained weights, the backbone's mean/std);
    loaders whose normalisation is already fixed (by `inat_dataloaders(normalize=...)` or an
    earlier learner) keep it, with a warning if pretrained weights expect other statistics.
    Either way `dls.inat.stats` and `learn.card["normalize"]` are what the batches get.

    The parameter groups are [backbone before the last K stages, last K stages, head] for
    `last:K` and [backbone, head] otherwise, so `slice(lr/100, lr)` gives discriminative rates.

    Raises:
        UsageError: unknown architecture or freeze mode, mismatched weights file, no
            pretrained weights. FastinatError: pretrained weights out of reach.
    """
    from .models.backbones import check_arch, size_options

    cfg = resolve(FinetuneConfig, overrides={"arch": arch, **options}, base=cfg)
    check_arch(cfg.arch)
    _fix_normalize(dls, cfg)
    drop_path = {"drop_path_rate": cfg.drop_path} if cfg.drop_path else {}  # 0: the model's own default
    timm_kwargs = {**size_options(cfg.arch, dls.inat.size), **drop_path, **(timm_kwargs or {})}
    learn = _timm_learner(dls, cfg, timm_kwargs)
    mode = cfg.freeze_mode[0]
    {"none": learn.unfreeze, "last": lambda: learn.freeze_to(-2)}.get(mode, learn.freeze)()
    source = str(Path(cfg.weights).resolve()) if cfg.weights else ("timm" if cfg.pretrained else None)
    pooling, features = learn.pooling
    learn.card = model_card("finetune", cfg.arch, {
        "arch": cfg.arch, "dense_units": cfg.head_units, "dropout": cfg.dropout,
        "concat_pool": pooling == "concat", "pooling": pooling, "features": features,
        "timm_kwargs": timm_kwargs}, dls, pretrained_weights=source)
    return learn


def _fix_normalize(dls, cfg: FinetuneConfig) -> None:
    """Fix the loaders' normalisation to the backbone's when still open; warn when fixed otherwise."""
    import warnings

    from .data.loaders import fix_normalize

    wanted = finetune_normalize(cfg)
    stats = fix_normalize(dls, None if wanted == "dataset" else wanted)
    if wanted != "dataset" and stats != tuple(list(map(float, v)) for v in wanted):
        applied = "no normalisation (x / 255)" if stats is None else f"mean {stats[0]}, std {stats[1]}"
        warnings.warn(f"The loaders keep their normalisation ({applied}), fixed before this learner; "
                      f"the pretrained weights of {cfg.arch} expect mean {wanted[0]}, std {wanted[1]}. "
                      "For those, build the loaders with inat_dataloaders(..., normalize='auto').",
                      stacklevel=3)


def _timm_learner(dls, cfg: FinetuneConfig, timm_kwargs: dict) -> Learner:
    """fastai's vision_learner over timm, the weights file checked, parameter groups per freeze mode."""
    from fastai.callback.training import BnFreeze
    from fastai.vision.learner import default_split

    from .models.backbones import first_mismatch, stage_split, weight_shapes

    mode, k = cfg.freeze_mode
    shapes = weight_shapes(cfg.weights) if cfg.weights else None
    overlay = {"pretrained_cfg_overlay": {"file": str(Path(cfg.weights).resolve()), "num_classes": -1}} \
        if cfg.weights else {}

    def splitter(model):
        if mode != "last":
            return default_split(model)
        early, late = stage_split(model[0].model, k)
        return [early, late, list(model[1].parameters())]

    learn = _vision_learner(
        dls, cfg.arch, cfg.weights, shapes, {**timm_kwargs, **overlay}, pretrained=cfg.pretrained,
        lin_ftrs=cfg.head_units, ps=cfg.dropout, loss_func=loss_func(cfg),
        metrics=default_metrics(), splitter=splitter, wd=cfg.wd, train_bn=cfg.train_bn,
        cbs=None if cfg.train_bn else [BnFreeze()])
    if shapes is not None:  # timm loads non-strictly once it drops the classifier: check it all came
        body = {k: tuple(v.shape) for k, v in learn.model[0].model.state_dict().items()}
        why = first_mismatch(body, shapes, check_shapes=False)  # resampled shapes (ViT) are fine
        if why is not None:
            raise UsageError(f"The weights file {cfg.weights} does not fit {cfg.arch}: {why}.")
    return learn


def _vision_learner(dls, arch: str, weights, shapes, timm_kwargs: dict, *, pretrained: bool,
                    lin_ftrs, ps, **kwargs) -> Learner:
    """fastai's vision_learner over `timm_classifier` (the pooling the backbone's features allow),
    with timm's weight-loading failures turned into one clear line. `learn.pooling` is
    (pooling, pooled width)."""
    from .models.backbones import backbone_shapes, first_mismatch, timm_classifier

    try:
        model, *pooling = timm_classifier(arch, len(dls.vocab), size=dls.inat.size, lin_ftrs=lin_ftrs, ps=ps,
                                          pretrained=pretrained, **timm_kwargs)
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
        raise FastinatError(f"Cannot read the weights file {weights}: {e}.") from None
    guard_layout(model)  # its batches come channels_last: NCHW where oneDNN needs it
    learn = Learner(dls, model, opt_func=Adam, moms=(0.95, 0.85, 0.95), **kwargs)  # vision_learner's
    learn.arch, learn.pretrained, learn.pooling = arch, pretrained, tuple(pooling)
    return learn


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
    return scratch_learner(dls, cfg)


SCRATCH = Recipe(ScratchConfig, lambda cfg: "dataset", _scratch_learner)


def _finetune_learner(dls, cfg: FinetuneConfig, console: Console):
    learn = finetune_learner(dls, cfg=cfg)
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


FINETUNE = Recipe(FinetuneConfig, finetune_normalize, _finetune_learner, _finetune_fit)
