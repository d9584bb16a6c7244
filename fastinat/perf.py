"""Process-level speed settings for CPU training.

`tune_malloc()`: glibc returns every freed block above its mmap threshold (at most 32 MiB)
to the kernel, so each training step page-faults its large activations and batches in again
(measured here: nearly half of a CPU training step was kernel time). Raising the thresholds
keeps that memory in the process; a model step at 224 px ran about 1.7x faster. The cost:
memory freed after the peak stays reserved by the process. Linux/glibc only; a no-op
elsewhere or with FASTINAT_NO_MALLOC_TUNING=1. Loader workers forked afterwards inherit it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def tune_malloc() -> bool:
    """Keep large freed blocks in the process (glibc); return True when the settings applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("FASTINAT_NO_MALLOC_TUNING"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    big = 2**31 - 1
    ok = mallopt(_M_MMAP_THRESHOLD, big) and mallopt(_M_TRIM_THRESHOLD, big) \
        and mallopt(_M_TOP_PAD, 1 << 30)
    _done = bool(ok)
    return _done
