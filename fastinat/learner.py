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
