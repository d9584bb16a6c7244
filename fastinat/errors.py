"""Errors a user can cause. The CLI prints their message as one line and exits with `exit_code`."""

from __future__ import annotations


class FastinatError(Exception):
    """A mistake the user can fix (bad path, bad option value, broken file).

    The message is one sentence that says what is wrong and, where possible, how to fix it.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class DatasetError(FastinatError):
    """The dataset folder is missing or is not laid out as `train/<class>/`, `val/<class>/`."""

    exit_code = 2


class DownloadError(FastinatError):
    """A download failed (network error, wrong size, bad archive)."""
