"""MixUp and CutMix (`--mixup ALPHA`, `--cutmix ALPHA`): fastai's callbacks, one per batch.

    learn.fit_one_cycle(5, cbs=MixUpCutMix(mixup=0.2, cutmix=1.0))

With one of the two set this is exactly fastai's `MixUp` or `CutMix`. With both, each training
batch takes one of them at random (probability 1/2 each, drawn from torch's generator, as
timm's `Mixup` does with its default `switch_prob`), so a batch is never mixed twice.
Validation batches are never mixed, and the loss the history records is the mixed loss
(fastai's `MixHandler.lf`: the loss against both targets, weighted by the mixing share).
"""

from __future__ import annotations

import torch
from fastai.callback.mixup import CutMix, MixHandler, MixUp
from torch.distributions.beta import Beta


class MixUpCutMix(MixHandler):
    """fastai's MixUp (`mixup` alpha) and CutMix (`cutmix` alpha); 0 turns one off."""

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0):
        if not (mixup > 0 or cutmix > 0):
            raise ValueError("MixUpCutMix needs mixup > 0 or cutmix > 0")
        super().__init__(mixup or cutmix)
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self._beta = {name: Beta(torch.tensor(a), torch.tensor(a))
                      for name, a in (("mixup", mixup), ("cutmix", cutmix)) if a > 0}
        self.last = None  # "mixup" or "cutmix": what the latest training batch got

    def before_batch(self) -> None:
        kinds = list(self._beta)
        kind = kinds[0] if len(kinds) == 1 else kinds[int(torch.randint(0, 2, ()).item())]
        self.distrib, self.last = self._beta[kind], kind
        (MixUp if kind == "mixup" else CutMix).before_batch(self)

    rand_bbox = CutMix.rand_bbox
