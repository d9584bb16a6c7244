"""Process-level speed settings for CPU training.

`tune_malloc()`: glibc returns every freed block above its mmap threshold (at most 32 MiB)
to the kernel, so each training step page-faults its large activations and batches in again
(measured here: nearly half of a CPU training step was kernel time). Raising the thresholds
keeps that memory in the process; a model step at 224 px ran about 1.7x faster. The cost:
memory freed after the peak stays reserved by the process. Linux/glibc only; a no-op
elsewhere or with FASTINAT_NO_MALLOC_TUNING=1. Loader workers forked afterwards inherit it.

`trim_malloc()`: loader workers are forked from the training process; after a fork, each
page the training process writes that it still shares with a worker is copied (a
copy-on-write fault).
With the memory kept by `tune_malloc` that was several GB of copies per epoch, which ate the
gain on short epochs. Handing the free memory back just before the fork
(`callbacks.memory.TrimBeforeFork`) leaves only the live pages shared.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from contextlib import contextmanager

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done = False
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.mallopt, _libc.malloc_trim  # noqa: B018  (both exist: glibc)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            _libc = False
    return _libc


def tune_malloc() -> bool:
    """Keep large freed blocks in the process (glibc); return True when the settings applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("FASTINAT_NO_MALLOC_TUNING"):
        return False
    libc = _glibc()
    if not libc:
        return False
    mallopt = libc.mallopt
    big = 2**31 - 1
    ok = mallopt(_M_MMAP_THRESHOLD, big) and mallopt(_M_TRIM_THRESHOLD, big) \
        and mallopt(_M_TOP_PAD, 1 << 30)
    _done = bool(ok)
    return _done


def trim_malloc() -> None:
    """Give free heap memory back to the kernel (only after `tune_malloc` applied)."""
    if _done and _glibc():
        _libc.malloc_trim(0)


@contextmanager
def one_torch_thread(on: bool = True):
    """Run the block on one torch thread (then restore the count).

    For memory-bound element-wise work on a CPU whose other cores run loader workers: a
    second intra-op thread there mostly spin-waits, burning a core the workers need.
    """
    import torch

    n = torch.get_num_threads() if on else 1
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)
