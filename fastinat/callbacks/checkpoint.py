"""`ResumeCheckpoint`: after every finished epoch, everything needed to carry on exactly.

`RUN/checkpoint.pt` holds the model and optimizer state, the epoch, the RNG states (fastai's
`get_random_states`: Python, NumPy, torch CPU/CUDA, cuDNN flags; and the loaders' own
shuffling RNGs) and the other callbacks' state.
It is written atomically, loaded with `torch.load(weights_only=True)` (no pickle), and
restored at the start of the first epoch that a resumed run really trains, which is the
same point in the random streams as in an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.torch_core import get_random_states, set_random_states

from ..distributed import unwrap
from ..errors import FastinatError
from ..io import save_torch
from .record import skipped


def _rng_state(dls) -> dict:
    """fastai's `get_random_states()` (NumPy's key as a tensor, for `weights_only` loading)
    plus each loader's own shuffling RNG."""
    state = get_random_states()
    kind, key, *rest = state["numpy_state"]
    state["numpy_state"] = [kind, torch.from_numpy(key.copy()), *rest]
    state["loaders"] = [dl.rng.getstate() for dl in dls.loaders]
    return state


#: The keys a checkpoint written before fastai's `get_random_states` was used holds.
_OLD_KEYS = {"python": "random_state", "numpy": "numpy_state", "torch": "torch_state",
             "cuda": "torch_cuda_state"}


def _set_rng_state(state: dict, dls) -> None:
    state = {_OLD_KEYS.get(k, k): v for k, v in state.items()}
    kind, key, *rest = state["numpy_state"]
    set_random_states(
        random_state=_tuples(state["random_state"]), numpy_state=(kind, key.numpy(), *rest),
        torch_state=state["torch_state"],
        torch_cuda_state=state.get("torch_cuda_state", []) if torch.cuda.is_available() else [],
        torch_deterministic=state.get("torch_deterministic", torch.backends.cudnn.deterministic),
        torch_benchmark=state.get("torch_benchmark", torch.backends.cudnn.benchmark))
    for dl, s in zip(dls.loaders, state["loaders"], strict=False):
        dl.rng.setstate(_tuples(s))


def _tuples(x):
    """random.setstate needs tuples where a round trip may have produced lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _plain(x):
    """fastai's L, tuples and NumPy scalars -> lists and numbers, so `torch.load(weights_only=True)` accepts the file."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) or type(x).__name__ == "L":
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def opt_state(opt) -> dict:
    return _plain(opt.state_dict())


def load_opt_state(opt, state: dict) -> None:
    from fastcore.foundation import L

    opt.load_state_dict({"state": state["state"], "hypers": L(state["hypers"])})


def load_checkpoint(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FastinatError(f"{path} does not exist: the run has no finished epoch to resume from.") from None
    except Exception as e:  # a damaged file: say which one
        raise FastinatError(f"Cannot read the checkpoint {path} ({e}).") from None


class ResumeCheckpoint(Callback):
    """Save `checkpoint.pt` after each epoch; with `resume=`, restore it at the right moment."""

    order = 65  # after the record, history and trackers have taken in the epoch

    def __init__(self, path: str | Path, stateful: dict[str, Callback], resume: dict | None = None):
        self.path, self.stateful, self.resume = Path(path), stateful, resume

    def before_epoch(self) -> None:
        if self.resume is not None and not skipped(self.learn):
            _set_rng_state(self.resume["rng"], self.dls)
            self.resume = None

    def after_epoch(self) -> None:
        if skipped(self.learn) or not self.learn.epoch_record:
            return
        state = {
            "epoch": self.epoch + 1,  # epochs finished
            "model": unwrap(self.model).state_dict(),  # without a DDP wrapper's "module." prefix
            "opt": opt_state(self.opt),
            "rng": _rng_state(self.dls),
            "callbacks": {name: cb.state() for name, cb in self.stateful.items()},
        }
        save_torch(state, self.path, parents=False)  # the run folder vanished: an error, not a new one
