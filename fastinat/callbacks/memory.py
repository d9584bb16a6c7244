"""`TrimBeforeFork`: hand free memory back just before loader workers are forked.

See `fastinat.perf`: without it, the memory that `tune_malloc` keeps is shared with the
freshly forked workers and every write to it copies a page. fastinat's loaders keep their
workers across epochs, so this trims only when a loader is about to start them (fastai's
own loaders, e.g. the distributed `ShardedDL`, fork every epoch, and get a trim every time).
"""

from __future__ import annotations

from fastai.callback.core import Callback

from ..perf import trim_malloc


class TrimBeforeFork(Callback):
    order = -10  # before anything that starts iterating the loader

    def _trim(self) -> None:
        if getattr(self.dl, "num_workers", 0) and not getattr(self.dl, "workers_running", False):
            trim_malloc()

    def before_train(self) -> None:
        self._trim()

    def before_validate(self) -> None:
        self._trim()
