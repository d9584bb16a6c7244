"""Optional presize cache: every image resized once, stored outside the dataset.

Decoding a 500-1024 px JPEG is most of the cost of a training step on a CPU. With
`presize=True` the loaders read small copies instead: shorter side `presize_side(size)`,
upright RGB, stored as raw pixels (`.npy`, uint8 height x width x 3), so reading one is a
copy from the page cache and nothing is decoded at all (a JPEG copy still cost 0.4 ms per
image here). The price is disk: about 0.27 MB per image at size 224 (3.2 GB for nature_12K;
the JPEGs are 3.8 GB). A copy's name is a hash of the source's relative path, size and
modification time, so a changed or replaced image gets a new copy and copies of images that
are gone are removed. The cache lives in `cache_dir("presize", <dataset key>, <side>-raw)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FastinatError
from ..io import atomic_write
from ..paths import cache_dir, path_key
from ..perf import decode_threads
from .images import open_rgb

#: Copies keep this much more than the training size on the shorter side, so random
#: resized crops still have detail to zoom into.
PRESIZE_FACTOR = 1.15
SUFFIX = ".npy"


def presize_side(size: int) -> int:
    return int(math.ceil(size * PRESIZE_FACTOR))


def _copy_name(root: Path, path: Path) -> str:
    st = path.stat()
    key = f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest() + SUFFIX


def _write_copy(src: Path, dest: Path, side: int) -> None:
    try:
        img = open_rgb(src, min_side=side)
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # changed since it was checked
        raise FastinatError(f"Cannot presize {src}: it is no longer a readable image ({e}); "
                            "run `fastinat data check` on the dataset.") from None
    w, h = img.size
    scale = side / min(w, h)
    if scale < 1:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR,
                         reducing_gap=None)
    pixels = np.asarray(img)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, pixels, allow_pickle=False)

    atomic_write(dest, write)  # a full or read-only cache: WriteError, an OSError


def read_copy(path: str | Path) -> np.ndarray:
    """A presized copy's pixels: uint8, height x width x 3."""
    return np.load(path, allow_pickle=False)


def presize(
    root: str | Path, files: list[Path], size: int, *, workers: int | None = None,
    progress: Callable[[int], None] | None = None, prune: bool = False,
) -> dict[str, str]:
    """Make (or reuse) small copies of `files`; return {str(original): str(copy)}.

    With `prune`, copies that belong to no file of `files` are deleted (pass every file of
    the dataset then). `workers` threads decode (default `perf.decode_threads()`).

    A cache that cannot be written (no space, read-only, no permission) is no error: one
    warning, and {} (every image is read from the dataset).

    Raises:
        FastinatError: an image can no longer be read.
    """
    root = Path(root)
    side = presize_side(size)
    folder = cache_dir("presize", path_key(root), f"{side}-raw")
    mapping = {str(f): str(folder / _copy_name(root, f)) for f in files}
    todo = [(Path(src), Path(dst)) for src, dst in mapping.items() if not os.path.exists(dst)]
    if progress:
        progress(len(files) - len(todo))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=workers or decode_threads()) as pool:
            for _ in pool.map(lambda t: _write_copy(t[0], t[1], side), todo):
                if progress:
                    progress(1)
    except OSError as e:  # the cache's disk is full or read-only: go on without it
        import warnings

        why = getattr(e, "reason", None) or e.strerror or e
        warnings.warn(f"Not presizing: cannot write the presize cache {folder} ({why}); reading the "
                      "original images.", stacklevel=2)
        return {}
    if prune:
        keep = {Path(d).name for d in mapping.values()}
        for old in folder.iterdir():  # copies of images that changed or are gone
            if old.name not in keep and old.suffix in (SUFFIX, ".tmp"):
                with contextlib.suppress(OSError):  # a read-only cache keeps them
                    old.unlink(missing_ok=True)
    return mapping
