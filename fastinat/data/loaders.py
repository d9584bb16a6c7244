"""fastai DataLoaders for nature_12K-shaped folders: `inat_dataloaders` and `test_dataloader`.

    dls = inat_dataloaders("data/digits", size=32, bs=64)      # train/valid from train/
    test = test_dataloader(dls)                                # labelled TEST set from val/

The DataBlock is ImageBlock-like (our opener: RGB, EXIF-upright, JPEG draft decoding) +
CategoryBlock (label = the class folder under train/ or val/, whose subfolders belong to it;
vocabulary = the class folders), split by `stratified_split`. Broken files are left out;
what a user should know about the data (skipped files, a batch size above the number of
training images, a class with no validation image) is in `dls.inat.notices()`, one line
each, and printed on stderr unless `notify=False` (`fastinat.train` prints them itself,
with the run folder that holds the full list of skipped files).

Normalisation is one `ToFloatNormalize` shared by every loader of the DataLoaders (and the
test loaders made from them); `dls.inat.stats` reads it, so the statistics reported (the
model card) are the ones applied. It is fixed once chosen: by `inat_dataloaders(normalize=...)`,
or, with the default `normalize="auto"`, by the first learner built on the loaders
(`fix_normalize`, fastai's rule: a learner adds its normalisation only where the data has none).
"""

from __future__ import annotations

import hashlib
import json
import random
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
)

from ..config import DataConfig
from ..errors import DatasetError, UsageError
from ..io import write_json
from ..options import resolve
from ..paths import cache_dir, path_key
from ..perf import compute_workers
from ..progress import progress_task
from .augment import InatAugment, OpenImage, ToFloatNormalize, eval_pixels
from .check import SPLITS, capped, class_of, scan_dataset, verify_files
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
    norm: ToFloatNormalize = field(default_factory=ToFloatNormalize)  # the loaders' own transform
    redirect: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one line each (see `notices`)

    @property
    def stats(self) -> tuple[list[float], list[float]] | None:
        """The (mean, std) the loaders' batches are normalised with (None: x / 255), read from
        their normalisation transform: what is reported is what is applied."""
        return self.norm.stats

    def save_split(self, dest: str | Path) -> Path:
        """Write the validation file list (reusable with `inat_dataloaders(split_file=...)`)."""
        return save_split(self.valid_files, self.root, dest)

    def notices(self, run_dir: str | Path | None = None) -> list[str]:
        """What a user should know about the data, one line each: the skipped files first.

        With `run_dir`, the full list of skipped files (path, tab, reason) is written to
        RUN/skipped_files.txt and the line names it.
        """
        listing = None if run_dir is None else write_skipped(self.skipped, Path(run_dir) / SKIPPED_LIST)
        line = skipped_line(self.skipped, self.root, listing)
        return ([line] if line else []) + list(self.notes)


#: Where a run folder lists the files its data left out, with the reasons.
SKIPPED_LIST = "skipped_files.txt"


def skipped_line(skipped: dict[Path, str], root: Path, listing: Path | None = None) -> str | None:
    """'Skipping 3 unusable file(s) in ROOT: a, b, c; ...' (at most ten named), or None if none."""
    if not skipped:
        return None
    names = []
    for f in sorted(skipped):
        try:
            names.append(Path(f).relative_to(root).as_posix())
        except ValueError:
            names.append(str(f))
    where = f"; the full list, with the reasons: {listing}" if listing else \
        "; `fastinat data check` lists them with the reasons"
    return f"Skipping {len(names)} unusable file(s) in {root}: {capped(names)}{where}."


def write_skipped(skipped: dict[Path, str], dest: Path) -> Path | None:
    """Write 'path<TAB>reason' lines for the skipped files to `dest` and return it; with none
    skipped, remove a `dest` left by an earlier run (of a resumed run) and return None."""
    from ..io import atomic_write

    if not skipped:
        dest.unlink(missing_ok=True)
        return None
    text = "".join(f"{f}\t{reason}\n" for f, reason in sorted(skipped.items()))
    return atomic_write(dest, lambda tmp: Path(tmp).write_text(text))


def print_notices(lines: list[str], console=None) -> None:
    """Print data notices as one 'Warning:' line each (stderr by default)."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console(stderr=True, soft_wrap=True)
    for line in lines:
        console.print(f"[yellow]Warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


@dataclass
class ClassLabel:
    """fastai's get_y: a file's class is its folder right under ROOT/train or ROOT/val."""

    root: Path

    def __call__(self, path) -> str:
        try:
            return class_of(path, self.root)
        except ValueError:  # a file from elsewhere (a user's own test_dl): its parent folder
            return Path(path).parent.name


def usable_files(root: str | Path, *, progress: bool = True) -> tuple[list[str], dict, dict]:
    """Check the layout, decode-check every file (cached), and drop the broken ones.

    Returns (classes, {split: {class: [usable files]}}, {left-out file: reason}); the left-out
    files are the unreadable ones, those without an image extension and those directly in
    train/ or val/ (in no class folder). Nothing is printed: `skipped_line` says it.

    Raises:
        DatasetError: ROOT is missing, not a dataset, or its layout is wrong.
    """
    scan = scan_dataset(root)
    scan.raise_for_layout()
    files = scan.all_files()
    with progress_task(f"Checking {len(files)} images", len(files), progress) as advance:
        bad = verify_files(scan.root, files, progress=advance)
    bad.update({f: "not in a class folder" for f in scan.stray})
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


def _normalizer(normalize, root: Path, train_files: list[Path]) -> ToFloatNormalize:
    """The loaders' normalisation transform for `inat_dataloaders(normalize=...)`."""
    if normalize is None or normalize is False:
        return ToFloatNormalize()
    if isinstance(normalize, str):
        if normalize in ("auto", "dataset"):  # auto: open, a learner may fix its own (fix_normalize)
            return ToFloatNormalize(*dataset_stats(root, train_files), fixed=normalize == "dataset")
        if normalize == "imagenet":
            return ToFloatNormalize(*imagenet_stats)
        raise UsageError("normalize must be 'auto', 'dataset', 'imagenet', None or (mean, std), "
                         f"got {normalize!r}.")
    mean, std = normalize
    return ToFloatNormalize(mean, std)


def inat_dataloaders(path: str | Path | None = None, cfg: DataConfig | None = None, *,
                     split_file: str | Path | None = None, normalize="auto", progress: bool = True,
                     device=None, notify: bool = True, num_workers: int | None = None, **options):
    """Train/valid DataLoaders over `path/train/<class>/`; `path/val/` is kept as the TEST set.

    Args:
        path: dataset root holding train/<class>/ and val/<class>/ (None: `cfg.data`).
        cfg, options: a `DataConfig` (or a run's config; None: the defaults) with `options`
            (its fields: size, bs, augment, augment_policy, valid_pct, seed, workers,
            presize) applied. See
            `fastinat.config.DataConfig` for what each does and its default.
        split_file: a validation list; reused when the file exists, written when it does not.
        normalize: "dataset" (statistics of a sample of train/, for models from scratch),
            "imagenet", a (mean, std) pair (a pretrained backbone's own), None (x / 255), or
            "auto" (the default): the dataset's statistics until the first learner built on
            these loaders fixes them (`finetune_learner` with pretrained weights: the
            backbone's; see `fix_normalize`). Any other value is fixed here: no learner
            changes it. `dls.inat.stats` is always what the batches are normalised with.
        progress: show progress bars for the first check of the images.
        device: where batches go (fastai's default: the GPU if there is one).
        notify: print `dls.inat.notices()` on stderr (skipped files, a smaller batch, a class
            with no validation image), one line each.
        num_workers: fastai's and torch's name for `workers` (the same option).

    With fewer training images than `bs`, the batch size is the number of training images
    (fastai drops a last incomplete training batch, so there would be no batch at all).

    Raises:
        NotADatasetError: missing dataset or wrong layout. DatasetError: a class with no
        readable image, or no training image at all. UsageError: bad option value, or
        `workers` and `num_workers` that differ.
    """
    options["workers"] = _workers_option(options.get("workers"), num_workers)
    opts = resolve(DataConfig, overrides={"data": None if path is None else str(path), **options}, base=cfg)
    info = _dataset(Path(opts.data), opts, split_file, normalize, progress)
    bs = _batch_size(info, opts.bs)
    if notify:
        print_notices(info.notices())
    opener = OpenImage(opts.size, info.redirect)
    augmenter = InatAugment(opts.size, augment=opts.augment, policy=opts.augment_policy)
    block = DataBlock(
        blocks=(TransformBlock(type_tfms=opener,
                               batch_tfms=info.norm),  # one object, shared by every loader
                CategoryBlock(vocab=info.classes)),
        get_y=ClassLabel(info.root),
        splitter=IndexSplitter(list(range(len(info.train_files), len(info.train_files) + len(info.valid_files)))),
        item_tfms=augmenter,
        dl_type=InatDL,
    )
    workers = compute_workers() if opts.workers is None else opts.workers
    kwargs = {"device": device} if device is not None else {}
    if (device is not None and torch.device(device).type == "cuda") or (device is None and torch.cuda.is_available()):
        kwargs["pin_memory"] = True  # page-locked batches copy to the GPU asynchronously
    dls = block.dataloaders(info.train_files + info.valid_files, bs=bs, num_workers=workers, **kwargs)
    for dl in dls.loaders:
        dl.fuse_items(opener, augmenter)
    dls.inat = info
    return dls


def _workers_option(workers: int | None, num_workers: int | None) -> int | None:
    """`workers`, or its other name `num_workers` (None: not given)."""
    if workers is not None and num_workers is not None and workers != num_workers:
        raise UsageError(f"Bad options: workers={workers} and num_workers={num_workers} are the same "
                         "option (num_workers is fastai's and torch's name): pass one.")
    return num_workers if workers is None else workers


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
    if len(train) < 2:  # batch norm needs two images in a training batch
        raise DatasetError(f"{root}: only {len(train)} image(s) of train/ left for training "
                           f"({len(valid)} in the validation split); a batch needs at least 2: add "
                           "images or lower --valid-pct.")
    notes = _split_notes(root, classes, train, valid, opts.valid_pct)
    redirect: dict[str, str] = {}
    if opts.presize:
        everything = train + valid + test
        with progress_task("Presizing images", len(everything), progress) as advance:
            redirect = make_presize(root, everything, opts.size, progress=advance, prune=True)
    norm = _normalizer(normalize, root, train)
    return InatData(root, classes, opts.size, train, valid, test, skipped, norm, redirect, notes)


def _split_notes(root: Path, classes: list[str], train: list[Path], valid: list[Path],
                 valid_pct: float) -> list[str]:
    """One line for the classes the split leaves with no validation (or no training) image."""
    notes = []
    for files, part, effect in ((valid, "validation", "validated"), (train, "training", "learnt")):
        if part == "validation" and not valid_pct:
            continue  # no validation set at all (--valid-pct 0): the user's choice
        have = {class_of(f, root) for f in files}
        missing = [c for c in classes if c not in have]
        if len(missing) == 1:
            notes.append(f"Class {missing[0]} has no {part} image (too few images in train/ for the "
                         f"split), so it is not {effect} during training.")
        elif missing:
            notes.append(f"{len(missing)} classes have no {part} image (too few images in train/ for the "
                         f"split), so they are not {effect} during training: {capped(missing)}.")
    return notes


def _batch_size(info: InatData, bs: int) -> int:
    """`bs`, or the number of training images when there are fewer (said in `info.notes`)."""
    n = len(info.train_files)
    if n >= bs:
        return bs
    info.notes.append(f"Only {n} training image(s), fewer than the batch size {bs}: "
                      f"each epoch trains on one batch of {n}.")
    return n


def fix_normalize(dls, stats: tuple | None = None) -> tuple[list[float], list[float]] | None:
    """Fix the normalisation of `dls` for good and return it (fastai's rule: a learner adds its
    normalisation only where the data has none).

    Loaders made with `normalize="auto"` whose statistics no learner has fixed yet take `stats`
    ((mean, std); None: keep their dataset statistics); any other loaders keep theirs. Every
    loader of `dls`, and every test loader made from it, before or after, shares the one
    transform, so the returned statistics are `dls.inat.stats` and what each batch gets.
    """
    return dls.inat.norm.fix(stats)


def test_dataloader(dls, bs: int | None = None, files: list[Path] | None = None):
    """A labelled DataLoader over the TEST set (`val/`) with the evaluation transform.

    Labels come from the val/ class folders; never use this loader for model selection.
    """
    info: InatData = dls.inat
    files = info.test_files if files is None else files
    if not files:
        raise DatasetError(f"{info.root}: the TEST set (val/) has no readable image.")
    return dls.test_dl(files, with_labels=True, bs=bs or dls.bs)
