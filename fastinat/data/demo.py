"""The embedded demo dataset: scikit-learn's handwritten digits in the nature_12K layout.

1,797 real 8x8 greyscale scans (10 classes) ship with scikit-learn. `write_demo` upscales
them to 32x32 RGB PNGs and writes `DEST/train/<digit>/` and `DEST/val/<digit>/`, a fixed,
seeded 20% of each class in val/. It is what `make demo` and the tests train on.
`copy_subset` makes smaller copies of a dataset (`fastinat reproduce --quick`, the tests).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..io import write_error
from ..paths import DEFAULT_DEMO

DEMO_SIZE = 32
DEMO_VAL_PCT = 0.2
DEMO_SEED = 0


def demo_layout() -> dict[str, dict[str, list[tuple[str, np.ndarray]]]]:
    """{split: {class: [(file name, 8x8 image 0-16)]}} with the seeded 20% per class in val."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    layout: dict[str, dict[str, list]] = {"train": {}, "val": {}}
    for digit in range(10):
        idx = [i for i, t in enumerate(digits.target) if t == digit]
        random.Random(f"{DEMO_SEED}:{digit}").shuffle(idx)
        n_val = round(DEMO_VAL_PCT * len(idx))
        for split, part in (("val", idx[:n_val]), ("train", idx[n_val:])):
            layout[split][str(digit)] = [(f"{i:04d}.png", digits.images[i]) for i in sorted(part)]
    return layout


def _to_png(image: np.ndarray) -> Image.Image:
    grey = Image.fromarray((image * (255.0 / 16.0)).round().astype(np.uint8), "L")
    return grey.resize((DEMO_SIZE, DEMO_SIZE), Image.BICUBIC).convert("RGB")


def write_demo(dest: str | Path = DEFAULT_DEMO) -> tuple[Path, dict[str, dict[str, int]], bool]:
    """Write the demo dataset to `dest`; return (dest, counts per split and class, written).

    A folder that already holds the complete demo is left as it is (written is False).

    Raises:
        UsageError: `dest` is a file, or a folder that holds something other than the demo dataset.
        WriteError: no space left or no permission (what was written is completed next time).
    """
    dest = Path(dest)
    layout = demo_layout()
    counts = {s: {c: len(v) for c, v in per.items()} for s, per in layout.items()}
    expected = {Path(s, c, name) for s, per in layout.items() for c, items in per.items() for name, _ in items}
    if dest.exists():
        if not dest.is_dir():
            raise UsageError(f"{dest} is a file; choose another folder for the demo data.")
        present = {p.relative_to(dest) for p in dest.rglob("*") if p.is_file()}
        if present == expected:
            return dest, counts, False
        if not present <= expected:  # a partial demo (interrupted write) is completed
            raise UsageError(
                f"{dest} already holds other files; choose an empty or new folder for the demo data."
            )
    try:
        for split, per in layout.items():
            for cls, items in per.items():
                folder = dest / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for name, image in items:
                    if not (folder / name).exists():
                        _to_png(image).save(folder / name)
    except OSError as e:
        raise write_error(dest, e) from None
    return dest, counts, True



def copy_subset(source: str | Path, dest: str | Path, take: Callable[[str, list[Path]], list[Path]]) -> Path:
    """A smaller copy of the dataset `source`: of each class folder of train/ and val/, the images
    (`images.find_images`, sorted) that `take(split, images)` keeps, at their relative paths.

    `dest` is made beside itself and renamed into place (an older copy is replaced); `source`
    is only read. Used by `fastinat reproduce --quick` and the recipe benchmark.
    """
    import shutil

    from .images import find_images, is_hidden_name

    source, dest = Path(source), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in ("train", "val"):
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir() and not is_hidden_name(p.name)):
            (tmp / split / folder.name).mkdir(parents=True, exist_ok=True)
            for f in take(split, find_images(folder)):
                target = tmp / f.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
