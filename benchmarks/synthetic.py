"""Synthetic iNaturalist-12K-shaped JPEGs for the benchmarks, made once and cached.

    from benchmarks.synthetic import synthetic_dataset
    root = synthetic_dataset(images=600)   # benchmarks/.cache/synthetic/<key>/
    # root/train/<class>/*.jpg (600 in all) and root/val/<class>/*.jpg (3 per class)

10 classes; `train/<class>/*.jpg` holds `images` files in all (spread evenly), `val/<class>/`
a few per class (fastinat's loaders need the TEST split to exist). Each image is 500-1024 px
on its longer side with a mixed aspect ratio (4:3, 3:2, 16:9 both ways and 1:1), and looks
like a photo to a JPEG codec: smooth low-frequency colour fields, mid-frequency texture,
soft-edged shapes and mild sensor-like noise, saved at quality 90, so file sizes and decoding
cost are close to real photos (white noise would be far bigger and slower to decode).

Everything is seeded by (seed, image index), so the same parameters give the same bytes no
matter how many processes make them. A finished dataset has `params.json`; a folder with the
same parameters is reused as it is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Bump when the generator changes, so old caches are not reused.
VERSION = 2
CACHE = Path(__file__).resolve().parent / ".cache"
CLASSES = 10
ASPECTS = ((4, 3), (3, 4), (1, 1), (16, 9), (9, 16), (3, 2), (2, 3))
MIN_SIDE, MAX_SIDE = 500, 1024
QUALITY = 90


def _field(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """A smooth random RGB field in 0..1: `cells` random values on the longer side, bicubic."""
    if w >= h:
        gw, gh = cells, max(2, round(cells * h / w))
    else:
        gw, gh = max(2, round(cells * w / h)), cells
    small = rng.integers(0, 256, (gh, gw, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def make_image(index: int, seed: int = 0) -> Image.Image:
    """The synthetic photo number `index` (deterministic for a given seed)."""
    rng = np.random.default_rng([seed, index])
    aw, ah = ASPECTS[rng.integers(len(ASPECTS))]
    long_side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    if aw >= ah:
        w, h = long_side, round(long_side * ah / aw)
    else:
        w, h = round(long_side * aw / ah), long_side
    # Colour: a broad gradient (sky, background), tinted, plus finer texture (foliage, fur).
    tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    img = 0.55 * _field(rng, w, h, int(rng.integers(2, 5))) * tint + 0.2
    img += 0.25 * (_field(rng, w, h, int(rng.integers(10, 24))) - 0.5)
    img += 0.12 * (_field(rng, w, h, int(rng.integers(60, 140))) - 0.5)
    img += 0.10 * (_field(rng, w, h, long_side // int(rng.integers(3, 6))) - 0.5)
    pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8))
    # A few shapes (the "subject"), softened like an out-of-focus photo.
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.04, 0.25) * min(w, h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r), fill=colour)
        else:
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = r * rng.uniform(0.5, 1.0, n)
            points = [(cx + a * math.cos(t), cy + a * math.sin(t))
                      for t, a in zip(angles, radii, strict=True)]
            draw.polygon(points, fill=colour)
    pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 2.0))))
    # Mild fine noise (sensor grain), which is what makes real JPEGs cost what they do.
    arr = np.asarray(pil, dtype=np.float32)
    arr += rng.normal(0.0, float(rng.uniform(2.0, 6.0)), (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _write(job: tuple[Path, int, int]) -> int:
    path, index, seed = job
    make_image(index, seed).save(path, "JPEG", quality=QUALITY)
    return path.stat().st_size


def _params(images: int, val_per_class: int, seed: int, unique: int | None) -> dict:
    params = {"version": VERSION, "classes": CLASSES, "images": images,
              "val_per_class": val_per_class, "seed": seed, "sides": [MIN_SIDE, MAX_SIDE],
              "quality": QUALITY}
    return params if unique is None else {**params, "unique": unique}


def synthetic_dataset(images: int = 600, val_per_class: int = 3, seed: int = 0,
                      cache: Path = CACHE, workers: int | None = None, log=print,
                      unique: int | None = None) -> Path:
    """Return the dataset root for these parameters, generating it first if needed.

    `unique`: generate only that many distinct images and hard-link the rest to them (file
    i is image i % unique): a 12,000-file dataset for a timed run in seconds instead of
    minutes. Decoding costs the same; the page cache holds fewer distinct bytes.
    """
    unique = None if unique is None or unique >= images + val_per_class * CLASSES else unique
    params = _params(images, val_per_class, seed, unique)
    root = cache / "synthetic" / (f"n{images}-v{val_per_class}-s{seed}-g{VERSION}"
                                  + (f"-u{unique}" if unique else ""))
    try:
        if json.loads((root / "params.json").read_text()) == params:
            return root
    except (OSError, ValueError):
        pass
    classes = [f"class_{i:02d}" for i in range(CLASSES)]
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = []
    per_class = [images // CLASSES + (i < images % CLASSES) for i in range(CLASSES)]
    for split, counts in (("train", per_class), ("val", [val_per_class] * CLASSES)):
        for cls, n in zip(classes, counts, strict=True):
            folder = tmp / split / cls
            folder.mkdir(parents=True)
            start = len(jobs)
            jobs += [(folder / f"{split}_{cls}_{k:05d}.jpg", start + k, seed) for k in range(n)]
    log(f"Generating {len(jobs)} synthetic JPEGs in {root}"
        + (f" ({unique} distinct, the rest hard links) ..." if unique else " ..."))
    made = jobs[:unique] if unique else jobs
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        sizes = list(pool.map(_write, made, chunksize=8))
    for path, index, _ in jobs[len(made):]:
        os.link(made[index % len(made)][0], path)
        sizes.append(sizes[index % len(made)])
    (tmp / "params.json").write_text(json.dumps(params))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    log(f"  {len(jobs)} files, {sum(sizes) / 2**20:.1f} MiB, mean {np.mean(sizes) / 1024:.0f} KiB")
    return root


def warm_page_cache(root: Path) -> int:
    """Read every file once, so no timed pass pays for the first read from disk."""
    total = 0
    for f in sorted(Path(root).rglob("*.jpg")):
        total += len(f.read_bytes())
    return total
