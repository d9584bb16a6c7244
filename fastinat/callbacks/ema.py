"""`EMA` (`--ema DECAY`): an exponential moving average of the weights, validated every epoch.

    learn.fit_one_cycle(10, cbs=EMA(learn.model, decay=0.999))

The average is timm's `ModelEmaV3` (parameters and buffers, with its decay warm-up:
decay_t = min(DECAY, 1 - (1 + t)^-2/3), so a short run is not stuck near its random start),
updated after every optimizer step. Each epoch's validation runs on the averaged weights:
before validating they are copied into the model, and the raw weights go back after the
epoch's other callbacks (history, best weights, early stop: order 63, before the resume
checkpoint) have seen them. So `valid_accuracy` in the history, the best weights saved to
`model.safetensors` and the weights evaluated at the end are all the average's, and the
resume checkpoint holds the raw weights plus the average (`state()`), so a resumed run
carries on exactly. Training itself (the loss, the optimizer) always sees the raw weights.
"""

from __future__ import annotations

import torch
from fastai.callback.core import Callback

from ..distributed import unwrap
from .record import skipped


class EMA(Callback):
    """Average the weights of `model` with `decay`; validate (and so save) the average."""

    order = 63  # after_epoch: after BestModel (61) and EarlyStop (62), before ResumeCheckpoint (65)

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        from timm.utils.model_ema import ModelEmaV3

        self.decay, self.steps = float(decay), 0
        self.ema = ModelEmaV3(unwrap(model), decay=decay, use_warmup=warmup)
        self._raw: dict | None = None

    def state(self) -> dict:
        return {"weights": self.ema.module.state_dict(), "steps": self.steps}

    def load_state(self, state: dict) -> None:
        self.ema.module.load_state_dict(state["weights"])
        self.steps = int(state["steps"])

    def before_fit(self) -> None:
        self.ema.module.to(next(unwrap(self.model).parameters()).device)

    def after_step(self) -> None:
        self.steps += 1
        self.ema.update(unwrap(self.model), step=self.steps)

    def before_validate(self) -> None:
        if skipped(self.learn):
            return
        model = unwrap(self.model)
        self._raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.ema.module.state_dict())

    def _put_back(self) -> None:
        if self._raw is not None:
            unwrap(self.model).load_state_dict(self._raw)
            self._raw = None

    def after_epoch(self) -> None:
        self._put_back()

    def after_cancel_fit(self) -> None:
        self._put_back()
