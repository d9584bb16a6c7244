"""Learner factories, data first (like fastai's `vision_learner`): `scratch_learner(dls, ...)`.

Each factory returns a fastai `Learner` with cross-entropy loss, accuracy and macro-F1
metrics, and `learn.card`: what `model.json` records so the model can be rebuilt without
pickle (architecture, classes, input size, normalisation).
"""

from __future__ import annotations

from functools import partial

from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import F1Score, accuracy
from fastai.optimizer import Adam

from .models.cnn import ScratchCNN, cnn_config


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
                          "input_size x input_size (bilinear), scale to 0-1, normalise",
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


def finetune_learner(dls, arch: str = "resnet50", *, pretrained: bool = True, dense_units=(512,),
                     dropout: float = 0.5, freeze: str = "head", wd: float | None = None,
                     **timm_kwargs) -> Learner:
    """A fastai `vision_learner` over a timm backbone, frozen as `freeze` says.

    freeze: `head` (only the new head trains, plus batch-norm layers: fastai's train_bn),
    `last:K` (the head and the last K stages of the backbone, from timm's feature_info),
    `none` (everything), `gradual` (starts as `head`; the training path unfreezes later).
    The parameter groups are [backbone before the last K stages, last K stages, head] for
    `last:K` and [backbone, head] otherwise, so `slice(lr/100, lr)` gives discriminative rates.

    Groundwork for Part B (issue 4): the CLI, `--weights`, gradual unfreezing in the training
    path and cached features are still to come.

    Raises:
        FastinatError: unknown architecture or freeze mode.
    """
    from fastai.vision.learner import default_split, vision_learner

    from .models.backbones import check_arch, parse_freeze, stage_split

    check_arch(arch)
    mode, k = parse_freeze(freeze)

    def splitter(model):
        if mode != "last":
            return default_split(model)
        early, late = stage_split(model[0].model, k)
        return [early, late, list(model[1].parameters())]

    learn = vision_learner(dls, arch, pretrained=pretrained, normalize=False, n_out=len(dls.vocab),
                           lin_ftrs=list(dense_units), ps=dropout, loss_func=CrossEntropyLossFlat(),
                           metrics=default_metrics(), splitter=splitter, wd=wd, **timm_kwargs)
    if mode == "none":
        learn.unfreeze()
    elif mode == "last":
        learn.freeze_to(-2)
    else:
        learn.freeze()
    learn.card = {"format": "fastinat-model/1", "kind": "finetune", "arch": arch,
                  "model": {"arch": arch, "dense_units": list(dense_units), "dropout": dropout},
                  **data_card(dls)}
    return learn
