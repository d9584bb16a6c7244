"""Process-level speed settings, and the one set of rules for how many workers to start.

Process-wide settings (the allocator, OpenCV's threads, cuDNN's flags, warnings filters) are
set once, by whoever owns the process: the `fastinat` command does it before a command that
trains or evaluates runs (`recipes/_util.TunedCommand`; `python -m fastinat` and
`torchrun -m fastinat` take the same path), a script calls `fastinat.tune_process()` first
thing:

    import fastinat
    fastinat.tune_process()  # optional: the command line's speed settings, for this process
    fastinat.train_scratch(data="data/digits", size=32, epochs=5)

Library functions (`train_scratch`, `train_finetune`, `sweep`, `predict`, `load_model`,
`evaluate`, `inat_dataloaders`, `explain`) never change the allocator, torch's or OpenCV's
thread count, cuDNN's flags or the warnings filters of their caller; where they need another
setting for a moment they use a scoped one (`opencv_threads`, `warnings.catch_warnings`),
which puts the caller's value back. So a script that wants bitwise-repeatable GPU runs sets
`torch.backends.cudnn.deterministic = True` (and `benchmark = False`) itself, and every run it
makes, sweep trials included, keeps it.

cuDNN (`tune_process`): `benchmark=True` lets cuDNN time its kernels for each new input shape
and keep the fastest, and `deterministic=False` leaves it free to pick a non-deterministic
one: faster, but two GPU runs with the same seed may differ in their last digits. On a CPU
neither flag matters; a CPU run with the same seed repeats exactly either way.

`tune_malloc()`: glibc returns every freed block above its mmap threshold (at most 32 MiB)
to the kernel, so each training step page-faults its large activations and batches in again
(measured here: nearly half of a CPU training step was kernel time). Raising the thresholds
keeps that memory in the process; a model step at 224 px ran about 1.7x faster. The cost:
memory freed after the peak stays reserved by the process. Linux/glibc only; a no-op
elsewhere or with FASTINAT_NO_MALLOC_TUNING=1. Loader workers forked afterwards inherit it.

`trim_malloc()`: loader workers are forked from the training process; after a fork, each
page the training process writes that it still shares with a worker is copied (a
copy-on-write fault). With the memory kept by `tune_malloc` that was several GB of copies per
epoch, which ate the gain on short epochs. Handing the free memory back just before the fork
(`callbacks.memory.TrimBeforeFork`) leaves only the live pages shared.

OpenCV: the loader workers are the parallelism, so OpenCV runs on one thread in them. Its
thread pool does not survive a fork (a child that reconfigures a pool its parent started
hangs), so workers are forked while the parent's count is 1 (`opencv_threads(1)`) and
inherit it without touching the pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from contextlib import contextmanager

from .config import MAX_WORKERS  # the most loader processes (or threads) started by default

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done = False
_libc = None


def _cores() -> int:
    return os.cpu_count() or 1


def compute_workers() -> int:
    """Processes or threads that compute (loader workers, prediction threads): the machine's
    cores shared by the training processes on it (LOCAL_WORLD_SIZE), at least 1, at most
    MAX_WORKERS."""
    from .distributed import local_world_size

    return max(1, min(MAX_WORKERS, _cores() // max(1, local_world_size())))


def decode_threads() -> int:
    """Threads that decode files (checks, presizing; the decoders release the GIL while they
    wait on the disk): two per core, at least 2, at most MAX_WORKERS."""
    return max(2, min(MAX_WORKERS, _cores() * 2))


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


def malloc_tuned() -> bool:
    """Whether `tune_malloc` has changed this process's allocator settings."""
    return _done


def trim_malloc() -> None:
    """Give free heap memory back to the kernel (only after `tune_malloc` applied)."""
    if _done and _glibc():
        _libc.malloc_trim(0)


def tune_process() -> bool:
    """Speed settings for a process that fastinat owns; call it once, first thing, before any loader.

    Tunes malloc (`tune_malloc`); runs OpenCV on one thread, so the process never starts an
    OpenCV thread pool before it forks loader workers; lets cuDNN pick its fastest kernels
    (`benchmark=True`, `deterministic=False`: see the module's docstring); and hides the
    FutureWarning fastai's modules trigger at import by calling `torch.jit.script` (not the
    user's concern). The `fastinat` command calls it; library functions never do. Returns
    whether the malloc settings applied.
    """
    import warnings

    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.backends.cudnn.benchmark = True  # fixed input sizes: cuDNN times its kernels once per shape
    torch.backends.cudnn.deterministic = False
    return tune_malloc()


@contextmanager
def opencv_threads(n: int):
    """OpenCV on `n` threads inside the block, the caller's count again after it."""
    import cv2

    before = cv2.getNumThreads()
    if before != n:
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        if before != n:
            cv2.setNumThreads(before)


def release_memory() -> None:
    """Between runs in one process (presets, sweep trials): collect the last run's objects
    (fastai's Learner and loaders sit in reference cycles) and hand the GPU memory they held
    back to the driver, so the next run starts from an empty GPU."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
