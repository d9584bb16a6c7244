"""The seeded, stratified train/valid split of `train/`, and saving it for reuse.

`val/` is the held-out TEST set and is never split or used for model selection; the
validation set is `valid_pct` of every class of `train/`, chosen with `seed`.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import FastinatError, plural


def stratified_split(
    files_by_class: dict[str, list[Path]], valid_pct: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Split every class into train/valid: round(valid_pct * n) of each class goes to valid.

    A class with at least two images keeps at least one in each part (when valid_pct > 0).
    The result depends only on the file names (paths under the class folder where
    subfolders hold equal names), `valid_pct` and `seed`.
    """
    if not 0 <= valid_pct < 1:
        raise FastinatError(f"valid_pct must be at least 0 and below 1, got {valid_pct}.")
    train, valid = [], []
    for cls in sorted(files_by_class):
        # by name (the order of every saved split), then by path for equal names in subfolders
        files = sorted(files_by_class[cls], key=lambda p: (p.name, p.as_posix()))
        rng = random.Random(f"{seed}:{cls}")
        rng.shuffle(files)
        n_valid = round(valid_pct * len(files))
        if valid_pct > 0 and len(files) >= 2:
            n_valid = min(max(n_valid, 1), len(files) - 1)
        valid += files[:n_valid]
        train += files[n_valid:]
    return sorted(train), sorted(valid)  # canonical order: the same items as load_split gives


def save_split(valid_files: list[Path], root: Path, dest: str | Path) -> Path:
    """Write the validation files, one path relative to `root` per line, to `dest`."""
    from ..io import atomic_write

    lines = sorted(Path(f).relative_to(root).as_posix() for f in valid_files)
    text = "".join(line + "\n" for line in lines)
    return atomic_write(dest, lambda tmp: Path(tmp).write_text(text))


def load_split(
    split_file: str | Path, root: Path, files_by_class: dict[str, list[Path]]
) -> tuple[list[Path], list[Path]]:
    """Reuse a split saved by `save_split`: the files it lists are valid, the rest train.

    Raises:
        FastinatError: the file cannot be read, or lists files that are not in train/.
    """
    split_file = Path(split_file)
    try:
        names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise FastinatError(f"Cannot read the validation list {split_file}: {e.strerror or e}.") from e
    wanted = set(names)
    everything = [f for cls in sorted(files_by_class) for f in files_by_class[cls]]
    rel = {f: f.relative_to(root).as_posix() for f in everything}
    missing = wanted - set(rel.values())
    if missing:
        example = sorted(missing)[0]
        raise FastinatError(
            f"The validation list {split_file} names {plural(len(missing), 'file')} that are not usable "
            f"images in {root}/train (for example {example}); was it saved for another dataset?"
        )
    valid = sorted(f for f in everything if rel[f] in wanted)
    train = sorted(f for f in everything if rel[f] not in wanted)
    return train, valid
