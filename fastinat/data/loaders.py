"""fastai DataLoaders for nature_12K-shaped folders: `inat_dataloaders` and `test_dataloader`.

    dls = inat_dataloaders("data/digits", size=32, bs=64)      # train/valid from train/
    test = test_dataloader(dls)                                # labelled TEST set from val/

The DataBlock is ImageBlock-like (our opener: RGB, EXIF-upright, JPEG draft decoding) +
CategoryBlock (label = parent folder, vocabulary = the class folders), split by
`stratified_split`. Broken files are skipped with one warning that lists them.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from fastai.vision.all import (
    CategoryBlock,
    DataBlock,
    IndexSplitter,
    TransformBlock,
    imagenet_stats,
    parent_label,
)

from ..config import DataConfig
from ..errors import DatasetError, UsageError
from ..io import write_json
from ..options import resolve
from ..paths import cache_dir, path_key
from ..perf import compute_workers
from ..progress import progress_task
from .augment import InatAugment, OpenImage, ToFloatNormalize, eval_pixels
from .check import SPLITS, scan_dataset, verify_files
from .images import open_pixels
from .presize import presize as make_presize
from .split import load_split, save_split, stratified_split
from .workers import InatDL


@dataclass
class InatData:
    """What a fastinat DataLoaders was built from; attached to it as `dls.inat`."""

    root: Path
    classes: list[str]
    size: int
    train_files: list[Path]
    valid_files: list[Path]
    test_files: list[Path]
    skipped: dict[Path, str] = field(default_factory=dict)
    stats: tuple[list[float], list[float]] | None = None
    redirect: dict[str, str] = field(default_factory=dict)

    def save_split(self, dest: str | Path) -> Path:
        """Write the validation file list (reusable with `inat_dataloaders(split_file=...)`)."""
        return save_split(self.valid_files, self.root, dest)


def usable_files(root: str | Path, *, progress: bool = True) -> tuple[list[str], dict, dict]:
    """Check the layout, decode-check every file (cached), and drop the broken ones.

    Returns (classes, {split: {class: [usable files]}}, {broken file: reason}).

    Raises:
        DatasetError: ROOT is missing, not a dataset, or its layout is wrong.
    """
    scan = scan_dataset(root)
    scan.raise_for_layout()
    files = scan.all_files()
    with progress_task(f"Checking {len(files)} images", len(files), progress) as advance:
        bad = verify_files(scan.root, files, progress=advance)
    if bad:
        listing = "\n".join(f"  {p} ({why})" for p, why in sorted(bad.items()))
        warnings.warn(f"Skipping {len(bad)} unreadable file(s):\n{listing}", stacklevel=2)
    usable = {s: {c: [f for f in fs if f not in bad] for c, fs in scan.files[s].items()} for s in SPLITS}
    for split in SPLITS:
        for cls, fs in usable[split].items():
            if not fs:
                raise DatasetError(f"{scan.root}: class folder {split}/{cls} has no readable image.")
    return scan.classes, usable, bad


def dataset_stats(root: Path, files: list[Path], n: int = 256, side: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0-1 scale) over a fixed sample of `files`, cached."""
    sample = sorted(files, key=lambda p: p.as_posix())
    sample = random.Random(0).sample(sample, min(n, len(sample)))
    h = hashlib.sha1()
    for f in sample:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}|{side}\n".encode())
    cached = cache_dir("stats", f"{path_key(root)}-{h.hexdigest()[:16]}.json")
    try:
        data = json.loads(cached.read_text())
        return data["mean"], data["std"]
    except (OSError, ValueError, KeyError):
        pass
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for f in sample:
        a = eval_pixels(open_pixels(f, min_side=side), side).reshape(-1, 3) / 255.0
        total += a.sum(0)
        total_sq += (a**2).sum(0)
        count += len(a)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    stats = [round(float(v), 6) for v in mean], [round(float(max(v, 1e-3)), 6) for v in std]
    try:
        write_json(cached, {"mean": stats[0], "std": stats[1]})
    except OSError:
        pass
    return stats


def _resolve_normalize(normalize, root: Path, train_files: list[Path]):
    if normalize is None or normalize is False:
        return None
    if isinstance(normalize, str):
        if normalize == "dataset":
            return dataset_stats(root, train_files)
        if normalize == "imagenet":
            return tuple(list(v) for v in imagenet_stats)
        raise UsageError(f"normalize must be 'dataset', 'imagenet', None or (mean, std), got {normalize!r}.")
    mean, std = normalize
    return list(mean), list(std)


def inat_dataloaders(path: str | Path | None = None, cfg: DataConfig | None = None, *,
                     split_file: str | Path | None = None, normalize="dataset", progress: bool = True,
                     device=None, **options):
    """Train/valid DataLoaders over `path/train/<class>/`; `path/val/` is kept as the TEST set.

    Args:
        path: dataset root holding train/<class>/ and val/<class>/ (None: `cfg.data`).
        cfg, options: a `DataConfig` (or a run's config; None: the defaults) with `options`
            (its fields: size, bs, augment, augment_policy, valid_pct, seed, workers,
            presize) applied. See
            `fastinat.config.DataConfig` for what each does and its default.
        split_file: a validation list; reused when the file exists, written when it does not.
        normalize: "dataset" (statistics of a sample of train/, for models from scratch),
            "imagenet", a (mean, std) pair (a pretrained backbone's own), or None.
        progress: show progress bars for the first check of the images.
        device: where batches go (fastai's default: the GPU if there is one).

    Raises:
        NotADatasetError: missing dataset or wrong layout. DatasetError: a class with no
        readable image. UsageError: bad option value.
    """
    opts = resolve(DataConfig, overrides={"data": None if path is None else str(path), **options}, base=cfg)
    info = _dataset(Path(opts.data), opts, split_file, normalize, progress)
    opener = OpenImage(opts.size, info.redirect)
    augmenter = InatAugment(opts.size, augment=opts.augment, policy=opts.augment_policy)
    block = DataBlock(
        blocks=(TransformBlock(type_tfms=opener,
                               batch_tfms=ToFloatNormalize(*(info.stats or (None, None)))),
                CategoryBlock(vocab=info.classes)),
        get_y=parent_label,
        splitter=IndexSplitter(list(range(len(info.train_files), len(info.train_files) + len(info.valid_files)))),
        item_tfms=augmenter,
        dl_type=InatDL,
    )
    workers = compute_workers() if opts.workers is None else opts.workers
    kwargs = {"device": device} if device is not None else {}
    if (device is not None and torch.device(device).type == "cuda") or (device is None and torch.cuda.is_available()):
        kwargs["pin_memory"] = True  # page-locked batches copy to the GPU asynchronously
    dls = block.dataloaders(info.train_files + info.valid_files, bs=opts.bs, num_workers=workers, **kwargs)
    for dl in dls.loaders:
        dl.fuse_items(opener, augmenter)
    dls.inat = info
    return dls


def _dataset(root: Path, opts: DataConfig, split_file, normalize, progress: bool) -> InatData:
    """The usable files split into train / valid / TEST, presized copies and normalisation."""
    classes, usable, skipped = usable_files(root, progress=progress)
    if split_file is not None and Path(split_file).exists():
        train, valid = load_split(split_file, root, usable["train"])
    else:
        train, valid = stratified_split(usable["train"], opts.valid_pct, opts.seed)
        if split_file is not None:
            save_split(valid, root, split_file)
    test = [f for cls in classes for f in usable["val"][cls]]
    redirect: dict[str, str] = {}
    if opts.presize:
        everything = train + valid + test
        with progress_task("Presizing images", len(everything), progress) as advance:
            redirect = make_presize(root, everything, opts.size, progress=advance, prune=True)
    stats = _resolve_normalize(normalize, root, train)
    return InatData(root, classes, opts.size, train, valid, test, skipped, stats, redirect)


def set_normalize(dls, stats: tuple[list[float], list[float]] | None) -> None:
    """Make every loader of `dls` (and test loaders made from it later) normalise with `stats`."""
    for dl in dls.loaders:
        for tfm in dl.after_batch.fs:
            if isinstance(tfm, ToFloatNormalize):
                tfm.mean, tfm.std, tfm._stats = *(stats or (None, None)), {}
    dls.inat.stats = (list(stats[0]), list(stats[1])) if stats else None


def test_dataloader(dls, bs: int | None = None, files: list[Path] | None = None):
    """A labelled DataLoader over the TEST set (`val/`) with the evaluation transform.

    Labels come from the val/ class folders; never use this loader for model selection.
    """
    info: InatData = dls.inat
    files = info.test_files if files is None else files
    if not files:
        raise DatasetError(f"{info.root}: the TEST set (val/) has no readable image.")
    return dls.test_dl(files, with_labels=True, bs=bs or dls.bs)
