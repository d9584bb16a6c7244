"""Dataset layout and image checks, shared by `fastinat data check` and every loader.

A dataset is `ROOT/train/<class>/...` and `ROOT/val/<class>/...` with the same class folders
in both. A class is a folder directly under train/ (or val/); every file below it, in its
subfolders too, belongs to it (torchvision's ImageFolder rule). Which files count is decided
in one place, `images.walk_files` (hidden files and folders skipped, links followed) and
`images.is_image_name` (the extension). `scan_dataset` reads the layout (and raises
`DatasetError` when ROOT is not a dataset);
`verify_files` decodes every file in parallel and remembers the answers in a cache outside
the dataset (keyed by path, size and modification time), so the loaders skip broken files
without decoding the whole dataset again on every run. Nothing here writes into ROOT.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError, NotADatasetError, plural
from ..io import atomic_write
from ..paths import DEFAULT_DATA, cache_dir, path_key
from ..perf import decode_threads
from ..progress import progress_task
from .images import is_hidden_name, is_image_name, verify_image, walk_files

SPLITS = ("train", "val")
_CHECK_CACHE_VERSION = 1

ProgressFn = Callable[[int], None]


def missing_dataset_message(root: Path) -> str:
    """One line that says a dataset folder is missing and how to get one."""
    if Path(root) == DEFAULT_DATA:
        return (
            f"No dataset at {root}: download nature_12K with `fastinat data download`, "
            "or write the small demo dataset with `fastinat data demo` and point fastinat at "
            "data/digits (--data data/digits)."
        )
    return f"Dataset folder {root} does not exist (expected train/<class>/ and val/<class>/ inside it)."


def class_of(path: str | Path, root: str | Path) -> str:
    """The class of a dataset file: the folder right under train/ or val/ (ROOT/split/CLASS/...)."""
    parts = Path(path).relative_to(root).parts
    if len(parts) < 3:
        raise ValueError(f"{path} is not inside a class folder of {root}")
    return parts[1]


@dataclass
class DatasetScan:
    """What is on disk: every candidate file per split and class, and layout problems."""

    root: Path
    classes: list[str]
    files: dict[str, dict[str, list[Path]]]  # split -> class -> files (subfolders too), sorted
    layout_problems: list[str] = field(default_factory=list)
    stray: list[Path] = field(default_factory=list)  # files right in train/ or val/: in no class

    def stray_note(self) -> str | None:
        """One line about files outside the class folders (never used), or None."""
        if not self.stray:
            return None
        names = [p.relative_to(self.root).as_posix() for p in self.stray]
        verb = "belongs" if len(names) == 1 else "belong"
        return (f"{plural(len(names), 'file')} directly in train/ or val/ {verb} to no class folder and "
                f"{'is' if len(names) == 1 else 'are'} not used: {capped(names)}.")

    def all_files(self) -> list[Path]:
        return [f for split in SPLITS for cls in self.files[split].values() for f in cls]

    def raise_for_layout(self) -> None:
        """Raise `DatasetError` (exit 1) naming the first layout problem, if any."""
        if self.layout_problems:
            raise DatasetError(f"{self.root}: {self.layout_problems[0]}")


def capped(items: list[str], limit: int = 10) -> str:
    """'a, b, c' with at most `limit` items, then 'and N more'."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _entries(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """({class name: class folder}, [stray files]) of a split folder; hidden names skipped."""
    try:
        children = sorted(p for p in folder.iterdir() if not is_hidden_name(p.name))
    except OSError as e:
        raise DatasetError(f"Cannot list the folder {folder} ({e.strerror or e}).") from None
    dirs = {p.name: p for p in children if p.is_dir()}
    return dirs, [p for p in children if p.name not in dirs and (p.is_file() or p.is_symlink())]


def scan_dataset(root: str | Path) -> DatasetScan:
    """List the files of a dataset and check its layout (no image is opened).

    Raises:
        DatasetError: (exit 2) ROOT does not exist, is not a folder, or lacks train/ or val/.
    """
    root = Path(root)
    if not root.exists():
        raise NotADatasetError(missing_dataset_message(root))
    if not root.is_dir():
        raise NotADatasetError(f"{root} is a file, not a dataset folder (expected train/ and val/ inside it).")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise NotADatasetError(
                f"{root} is not a dataset: it has no {split}/ folder "
                "(expected train/<class>/ and val/<class>/)."
            )
    entries = {split: _entries(root / split) for split in SPLITS}
    dirs = {split: entries[split][0] for split in SPLITS}
    problems: list[str] = []
    if not dirs["train"]:
        problems.append("train/ has no class folders.")
    only_train = sorted(set(dirs["train"]) - set(dirs["val"]))
    only_val = sorted(set(dirs["val"]) - set(dirs["train"]))
    if only_train or only_val:
        parts = []
        if only_train:
            parts.append("only in train/: " + ", ".join(only_train))
        if only_val:
            parts.append("only in val/: " + ", ".join(only_val))
        problems.append("class folders differ between train/ and val/ (" + "; ".join(parts) + ").")
    classes = sorted(set(dirs["train"]) | set(dirs["val"]))
    files: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        files[split] = {}
        for cls, folder in dirs[split].items():
            files[split][cls] = walk_files(folder)
            if not files[split][cls]:
                problems.append(f"class folder {split}/{cls} is empty.")
    stray = [f for split in SPLITS for f in entries[split][1]]
    return DatasetScan(root=root, classes=classes, files=files, layout_problems=problems, stray=stray)


class _CheckCache:
    """{relative path: [size, mtime_ns, reason or None]} for one dataset, outside it."""

    def __init__(self, root: Path):
        self.root = root
        self.file = cache_dir("checks", path_key(root) + ".json")
        try:
            data = json.loads(self.file.read_text())
            ok = data.get("version") == _CHECK_CACHE_VERSION
            self.entries: dict[str, list] = data["entries"] if ok else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}

    def key(self, path: Path) -> tuple[str, list]:
        st = path.stat()
        return path.relative_to(self.root).as_posix(), [st.st_size, st.st_mtime_ns]

    def save(self) -> None:
        """Write the cache atomically; a cache that cannot be written is not an error."""
        data = {"version": _CHECK_CACHE_VERSION, "root": str(self.root.resolve()),
                "entries": self.entries}
        try:
            atomic_write(self.file, lambda tmp: Path(tmp).write_text(json.dumps(data)))
        except OSError:
            pass


def verify_files(
    root: str | Path,
    files: Iterable[Path],
    *,
    use_cache: bool = True,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[Path, str]:
    """Decode every file; return {path: reason} for the ones that are not usable images.

    Results are cached per file (size and mtime) outside the dataset, so a second call only
    decodes files that are new or changed. `progress(n)` is called as files are done.
    `workers` threads decode (default `perf.decode_threads()`).
    """
    root = Path(root)
    files = list(files)
    cache = _CheckCache(root) if use_cache else None
    bad: dict[Path, str] = {}
    todo: list[tuple[Path, str, list]] = []
    for f in files:
        if not is_image_name(f):  # the one rule (images.is_image_name): never decoded, never used
            bad[f] = not_an_image_reason(f)
            if progress:
                progress(1)
            continue
        rel, stamp = str(f), []
        if cache is not None:
            try:
                rel, stamp = cache.key(f)
            except OSError as e:  # vanished or unreadable between listing and checking
                bad[f] = f"cannot read file ({e.strerror or e})"
                continue
        hit = cache.entries.get(rel) if cache else None
        if hit is not None and hit[:2] == stamp:
            if hit[2]:
                bad[f] = hit[2]
            if progress:
                progress(1)
        else:
            todo.append((f, rel, stamp))
    if todo:
        with ThreadPoolExecutor(max_workers=workers or decode_threads()) as pool:
            reasons = pool.map(lambda t: verify_image(t[0]), todo)
            for (f, rel, stamp), reason in zip(todo, reasons, strict=True):
                if reason:
                    bad[f] = reason
                if cache is not None:
                    cache.entries[rel] = [*stamp, reason]
                if progress:
                    progress(1)
        if cache is not None:
            cache.save()
    return bad


def not_an_image_reason(path: Path) -> str:
    """Why a file without an image extension is not used."""
    return f"not an image file (extension {path.suffix})" if path.suffix else \
        "not an image file (no extension)"


@dataclass
class CheckReport:
    """The result of `check_dataset`: usable-image counts and every problem found."""

    root: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> usable images
    bad_files: dict[Path, str]
    layout_problems: list[str]
    notes: list[str] = field(default_factory=list)  # worth knowing, not a problem (exit 0)

    @property
    def ok(self) -> bool:
        return not self.bad_files and not self.layout_problems


def check_dataset(root: str | Path, *, use_cache: bool = True, progress: bool = True) -> CheckReport:
    """Check the layout and decode every image of a dataset (read-only).

    Raises:
        DatasetError: ROOT is missing or not a dataset (see `scan_dataset`).
    """
    scan = scan_dataset(root)
    files = scan.all_files()
    with progress_task(f"Decoding {len(files):,} files", len(files), progress) as advance:
        bad = verify_files(scan.root, files, use_cache=use_cache, progress=advance)
    counts = {
        split: {cls: sum(f not in bad for f in fs) for cls, fs in scan.files[split].items()}
        for split in SPLITS
    }
    layout = list(scan.layout_problems)
    for split in SPLITS:
        for cls, n in counts[split].items():
            if n == 0 and scan.files[split][cls]:
                layout.append(f"class folder {split}/{cls} has no readable image.")
    notes = [n for n in (scan.stray_note(),) if n]
    return CheckReport(scan.root, scan.classes, counts, bad, layout, notes)
