"""Errors a user can cause, and the exit code each kind ends in (the one policy, everywhere).

    UsageError        exit 2   a usage mistake: a bad value, an unknown name, an impossible
                               combination, a path that does not exist or is not the kind of
                               folder the command needs
    FastinatError     exit 1   a problem found in the content: corrupt or truncated files,
                               unreadable weights, no space left, a failed download
    Interrupted       exit 130 Ctrl-C

The CLI prints the message as one line and exits with the class's `exit_code`
(`recipes/_util.py`); no call site chooses a code of its own.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FastinatError(Exception):
    """A problem found in the content (exit 1). The message is one sentence that says what is
    wrong and, where possible, how to fix it."""

    exit_code = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.message = str(args[0]) if args else ""

    def __str__(self) -> str:
        # fastai rewrites the args of an error raised in a callback ("Exception occured in
        # `BestModel` ..."); the message a user sees stays ours, one line
        return self.message


class UsageError(FastinatError):
    """A usage mistake (exit 2): bad value, unknown name, impossible combination, wrong path."""

    exit_code = 2


class Interrupted(FastinatError):
    """Ctrl-C (exit 130); the message says how to carry on."""

    exit_code = 130


class DatasetError(FastinatError):
    """The dataset's content is unusable (empty class folders, no readable image)."""


class NotADatasetError(UsageError, DatasetError):
    """The dataset folder is missing or is not laid out as `train/<class>/`, `val/<class>/`."""


class WriteError(FastinatError, OSError):
    """A file could not be written: no space left, no permission, a read-only disk. Also an
    OSError, so a cache write that may fail (`except OSError`) still may.

    `WriteError(what, then)`: "what, then then." (`then`: how to carry on once it is fixed;
    `again(then)` says it another way); `path` is the file, `reason` the system's word for it.
    """

    def __init__(self, message: str, then: str | None = None, *, path=None, reason: str | None = None):
        super().__init__(f"{message}, then {then}." if then else message)
        self.what, self.then, self.path, self.reason = message, then, path, reason

    def again(self, then: str) -> WriteError:
        """The same error, with another way to carry on."""
        return WriteError(self.what, then, path=self.path, reason=self.reason)


class NotAFolderError(UsageError, WriteError):
    """A file could not be written because a folder on its way is a file, or it is a folder."""


class DownloadError(FastinatError):
    """A download failed (network error, wrong size, bad archive)."""


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 epoch', '3 epochs', '0 files' ('1 process', '2 processes' with `many`)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def did_you_mean(name: str, known: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """' (did you mean a, b?)' with the closest of `known` to `name`, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(close)}?)" if close else ""
