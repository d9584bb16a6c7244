"""Dataset layout and image checks, shared by `fastinat data check` and every loader.

A dataset is `ROOT/train/<class>/*` and `ROOT/val/<class>/*` with the same class folders in
both. `scan_dataset` reads the layout (and raises `DatasetError` when ROOT is not a dataset);
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

from ..errors import DatasetError, NotADatasetError
from ..io import atomic_write
from ..paths import DEFAULT_DATA, cache_dir, path_key
from ..perf import decode_threads
from ..progress import progress_task
from .images import verify_image

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


@dataclass
class DatasetScan:
    """What is on disk: every candidate file per split and class, and layout problems."""

    root: Path
    classes: list[str]
    files: dict[str, dict[str, list[Path]]]  # split -> class -> files, sorted
    layout_problems: list[str] = field(default_factory=list)

    def all_files(self) -> list[Path]:
        return [f for split in SPLITS for cls in self.files[split].values() for f in cls]

    def raise_for_layout(self) -> None:
        """Raise `DatasetError` (exit 1) naming the first layout problem, if any."""
        if self.layout_problems:
            raise DatasetError(f"{self.root}: {self.layout_problems[0]}")


def _list_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files directly inside `folder`, sorted by name."""
    return sorted(
        p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()
    )


def _class_dirs(folder: Path) -> dict[str, Path]:
    return {
        p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }


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
    dirs = {split: _class_dirs(root / split) for split in SPLITS}
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
            files[split][cls] = _list_files(folder)
            if not files[split][cls]:
                problems.append(f"class folder {split}/{cls} is empty.")
    return DatasetScan(root=root, classes=classes, files=files, layout_problems=problems)


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


@dataclass
class CheckReport:
    """The result of `check_dataset`: usable-image counts and every problem found."""

    root: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> usable images
    bad_files: dict[Path, str]
    layout_problems: list[str]

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
    return CheckReport(scan.root, scan.classes, counts, bad, layout)
