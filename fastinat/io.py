"""Atomic file writes (temp file + rename), CSV/JSON files, and pickle-free weights (safetensors).

A write that fails for lack of space or permission raises `WriteError` (exit 1) naming the file;
one that fails because a folder on the way is a file raises `NotAFolderError` (exit 2). Both are
also `OSError`s, so a caller that treats a failed cache write as harmless (`except OSError`) still
does. Every byte goes through Python's own file writes (safetensors are serialised in memory,
`torch.save` gets a file object), so a full disk is always an `OSError` here, never a writer's
own exception. `atomic_folder` does for a folder of files (a report) what `atomic_write` does for
one; `parents=False` refuses to make the folder again when it vanished (a deleted run folder).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import FastinatError, NotAFolderError, WriteError


def write_error(path: str | Path, e: OSError, then: str = "run the same command again") -> FastinatError:
    """The one-line error for `e`, raised while writing `path`; `then` says how to carry on."""
    if isinstance(e, FastinatError):
        return e
    path = Path(path)
    if isinstance(e, FileNotFoundError) and not path.parent.is_dir():
        return WriteError(f"Could not write {path}: the folder {path.parent} is gone (deleted, or its "
                          "drive unmounted?); bring it back", then, path=path, reason="gone")
    if isinstance(e, IsADirectoryError):
        return NotAFolderError(f"Could not write {path}: it is a folder; choose another name for the file.")
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), "a folder on its way")
        return NotAFolderError(f"Could not write {path}: {blocker} is a file, not a folder; choose "
                               "another place for it.")
    reason = e.strerror or str(e) or type(e).__name__
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota)",
           errno.EROFS: "choose a writable place (the disk is read-only)",
           errno.EACCES: "fix its permissions or choose another place",
           errno.EPERM: "fix its permissions or choose another place"}.get(e.errno, "free some space or fix the folder")
    return WriteError(f"Could not write {path}: {reason}; {fix}", then, path=path, reason=reason)


def atomic_write(dest: str | Path, write: Callable[[str], None], *, parents: bool = True,
                 mode: int | None = None) -> Path:
    """Call `write(tmp_path)` then rename onto `dest`: a kill mid-write never leaves half a file.

    With `parents=False` the folder of `dest` must exist (a run folder that vanished mid-run
    is an error, not silently made again with a few files in it). `mode`: the file's permission
    bits (0o600: its owner's only, from the moment it exists); None: those of the file it
    replaces, else the usual (0666 less the umask), so a rewrite never opens up a private file.

    Raises:
        WriteError: no space left, no permission, the folder is gone (the temporary file is
            removed).
        NotAFolderError: a folder on the way to `dest` is a file, or `dest` is a folder.
    """
    dest = Path(dest)
    try:
        if parents:
            dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(dest, e) from e
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode(dest) if mode is None else mode)  # mkstemp makes 0600 files
        os.replace(tmp, dest)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(dest, e) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


@contextmanager
def atomic_folder(dest: str | Path, *, parents: bool = True) -> Iterator[Path]:
    """Yield a new hidden folder next to `dest` to fill; when the block ends it takes the place
    of `dest` (the old one is removed). An error or Ctrl-C in the block removes it and leaves
    `dest` as it was: a report is never half old, half new, or half written.

    Raises:
        WriteError: the folder next to `dest` cannot be made (no space, no permission, gone).
    """
    dest = Path(dest)
    try:
        if parents:
            dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    except OSError as e:
        raise write_error(dest, e) from e
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give the usual mode
        old = None
        if dest.is_dir() and not dest.is_symlink():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".old"))
            os.replace(dest, old)  # onto the empty folder just made
        os.replace(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if type(e) is WriteError and e.path is not None:  # name the file where it belongs, not in tmp
            raise WriteError(e.what.replace(str(tmp), str(dest)), e.then, path=dest / Path(e.path).name,
                             reason=e.reason) from e
        raise write_error(dest, e) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _mode(dest: Path) -> int:
    """The permission bits of the file at `dest`, else the usual ones for a new file."""
    try:
        return stat.S_IMODE(os.stat(dest).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(dest: str | Path, data: bytes, *, parents: bool = True) -> Path:
    """`data` into `dest`, atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(dest, write, parents=parents)


def write_json(dest: str | Path, data, *, parents: bool = True, mode: int | None = None) -> Path:
    """`data` as indented JSON, atomically; `mode` as in `atomic_write`."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")

    return atomic_write(dest, write, parents=parents, mode=mode)


def write_csv(dest: str | Path, rows: Iterable[Mapping | Sequence], columns: Sequence[str], *,
              parents: bool = True) -> Path:
    """A CSV file: a header of `columns`, then one line per row. A row is a dict (its values in
    column order; a missing key is empty, other keys are left out) or a sequence in column order."""
    lines = [[row.get(c, "") for c in columns] if isinstance(row, Mapping) else row for row in rows]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(columns)
            out.writerows(lines)

    return atomic_write(dest, write, parents=parents)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def save_safetensors(tensors: dict, dest: str | Path, metadata: dict | None = None, *,
                     parents: bool = True) -> Path:
    """`tensors` as a safetensors file, atomically. The bytes are written by Python, so a full
    disk is an `OSError` (WriteError), not the Rust writer's SafetensorError."""
    from safetensors.torch import save

    return write_bytes(dest, save({k: v.contiguous() for k, v in tensors.items()}, metadata),
                       parents=parents)


def save_torch(obj, dest: str | Path, *, parents: bool = True) -> Path:
    """`torch.save(obj)` atomically, through a Python file (a full disk is a WriteError)."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            try:
                torch.save(obj, fh)
            except RuntimeError as e:  # torch's zip writer hides the OSError of a short write
                cause = e.__cause__ or e.__context__
                if not isinstance(cause, OSError):
                    raise
                raise cause from None

    return atomic_write(dest, write, parents=parents)


def save_weights(model, dest: str | Path, *, parents: bool = True) -> Path:
    """The model's state dict as safetensors (contiguous copies; no pickle)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_safetensors(state, dest, parents=parents)


def load_weights(model, path: str | Path, strict: bool = True):
    """Load safetensors weights into `model` (in place) and return it."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=strict)
    return model
