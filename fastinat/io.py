"""Atomic file writes (temp file + rename), CSV/JSON files, and pickle-free weights (safetensors).

A write that fails for lack of space or permission raises `WriteError` (exit 1) naming the file;
one that fails because a folder on the way is a file raises `NotAFolderError` (exit 2). Both are
also `OSError`s, so a caller that treats a failed cache write as harmless (`except OSError`) still
does.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .errors import FastinatError, NotAFolderError, WriteError


def write_error(path: str | Path, e: OSError, then: str = "run the same command again") -> FastinatError:
    """The one-line error for `e`, raised while writing `path`; `then` says how to carry on."""
    if isinstance(e, FastinatError):
        return e
    path = Path(path)
    if isinstance(e, IsADirectoryError):
        return NotAFolderError(f"Could not write {path}: it is a folder; choose another name for the file.")
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), "a folder on its way")
        return NotAFolderError(f"Could not write {path}: {blocker} is a file, not a folder; choose "
                               "another place for it.")
    reason = e.strerror or str(e) or type(e).__name__
    return WriteError(f"Could not write {path}: {reason}; free some space or fix the folder, then {then}.")


def atomic_write(dest: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` then rename onto `dest`: a kill mid-write never leaves half a file.

    Raises:
        WriteError: no space left, no permission (the temporary file is removed).
        NotAFolderError: a folder on the way to `dest` is a file, or `dest` is a folder.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(dest, e) from e
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, dest)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(dest, e) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(dest: str | Path, data) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")

    return atomic_write(dest, write)


def write_csv(dest: str | Path, rows: Iterable[Mapping | Sequence], columns: Sequence[str]) -> Path:
    """A CSV file: a header of `columns`, then one line per row. A row is a dict (its values in
    column order; a missing key is empty, other keys are left out) or a sequence in column order."""
    lines = [[row.get(c, "") for c in columns] if isinstance(row, Mapping) else row for row in rows]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(columns)
            out.writerows(lines)

    return atomic_write(dest, write)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def save_weights(model, dest: str | Path) -> Path:
    """The model's state dict as safetensors (contiguous copies; no pickle)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(dest, lambda tmp: save_file(state, tmp))


def load_weights(model, path: str | Path, strict: bool = True):
    """Load safetensors weights into `model` (in place) and return it."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=strict)
    return model
