"""Download and extract the nature_12K dataset (`fastinat data download`).

`download_dataset(DEST)` fetches nature_12K.zip into `DEST/nature_12K.zip.part` with
`requests` (resuming a partial file with an HTTP Range request), checks its size, renames it
to `DEST/nature_12K.zip`, extracts the folder that holds train/ and val/ into
`DEST/.inaturalist_12K.partial` and renames that to `DEST/inaturalist_12K` once it is whole.
A marker `DEST/.inaturalist_12K.complete` (JSON: file count, source URL) sits next to the
dataset folder, never inside it. A complete dataset folder is left alone; an incomplete one
that is already there is never changed or deleted (the user is asked to move it away).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
import urllib3

from ..errors import DatasetError, DownloadError, UsageError
from ..io import write_error, write_json
from ..paths import DATASET_BYTES, DATASET_URL, DEFAULT_DOWNLOAD
from ..progress import progress_task
from .check import scan_dataset

ZIP_NAME = "nature_12K.zip"
DATASET_DIR = "inaturalist_12K"
_MARKER_VERSION = 1
_SPLITS = ("train", "val")


@dataclass
class DownloadResult:
    """What `download_dataset` did."""

    path: Path  # DEST/inaturalist_12K, the dataset folder (train/ and val/ inside)
    downloaded: bool  # bytes were fetched from the server in this call
    extracted: bool  # the archive was extracted in this call
    bytes_downloaded: int  # bytes fetched in this call (0 when nothing was fetched)
    files: int  # files in train/<class>/ and val/<class>/ of the dataset folder
    zip_path: Path | None = None  # the archive, when it was kept (keep_zip)

    @property
    def changed(self) -> bool:
        return self.downloaded or self.extracted


# --- paths and the "already complete" check ------------------------------------------------


def _marker_path(dest: Path) -> Path:
    return dest / f".{DATASET_DIR}.complete"


def _read_marker(dest: Path) -> dict | None:
    try:
        data = json.loads(_marker_path(dest).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), int) else None


def _write_marker(dest: Path, files: int, url: str, size: int) -> None:
    write_json(_marker_path(dest),
               {"version": _MARKER_VERSION, "files": files, "url": url, "zip_bytes": size})


def _existing_dataset(dest: Path) -> int | None:
    """File count of a complete `DEST/inaturalist_12K`, None when there is no such folder.

    Raises:
        UsageError: DEST or DEST/inaturalist_12K is a file, or that folder holds no train/ and
            val/ (it is someone else's folder; it is left as it is).
        DownloadError: DEST/inaturalist_12K is a dataset, but an incomplete one (left as it is).
    """
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file; choose a folder to download the dataset into.")
    target = dest / DATASET_DIR
    if not target.exists() and not target.is_symlink():
        return None
    move_away = "move it away (or pass another destination) and run the same command again."
    if not target.is_dir():
        raise UsageError(f"{target} exists but is not a dataset folder; {move_away}")
    never = "fastinat never changes an existing folder, so " + move_away
    try:
        scan = scan_dataset(target)
    except DatasetError:
        raise UsageError(f"{target} exists but is not a complete dataset (it has no train/ and "
                         f"val/ folders); {never}") from None
    problem = scan.layout_problems[0].rstrip(".") if scan.layout_problems else ""
    if not problem:
        count = len(scan.all_files())
        marker = _read_marker(dest)
        if marker is None or marker["files"] == count:
            return count
        problem = f"it holds {count} files but {marker['files']} were extracted"
    raise DownloadError(f"{target} exists but is not a complete dataset ({problem}); {never}")


# --- errors --------------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps (causes, contexts, urllib3 reasons, exception args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__, getattr(e, "reason", None))
                 if isinstance(c, BaseException)]
        todo += [a for a in e.args if isinstance(a, BaseException)]


def _network_reason(exc: BaseException, timeout: float) -> str:
    """A short, single-line reason for a requests/urllib3 error (no reprs, no addresses)."""
    chain = list(_causes(exc))
    refused = urllib3.exceptions.NewConnectionError  # a subclass of ConnectTimeoutError
    if any(isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))
           and not isinstance(e, (refused, requests.ConnectionError)) for e in chain):
        return f"the server did not answer within {timeout:g} s"
    if any(isinstance(e, urllib3.exceptions.NameResolutionError) for e in chain):
        return "the host name could not be resolved"
    for e in reversed(chain):  # the innermost operating-system error says it best
        if isinstance(e, OSError) and e.strerror and not isinstance(
                e, (requests.RequestException, urllib3.exceptions.HTTPError)):
            return e.strerror[0].lower() + e.strerror[1:]
    if any(isinstance(e, urllib3.exceptions.ProtocolError) for e in chain):
        return "the connection was closed early"
    text = re.sub(r"<[^<>]*>", "", str(chain[-1])).replace("\n", " ").strip(" :;,.()")
    return text[:200] or type(chain[-1]).__name__


def _cannot_download(url: str, reason: str, network: bool = True) -> DownloadError:
    if not network:  # the address itself is wrong: retrying the same URL will not help
        return DownloadError(f"Could not download {url}: {reason}; check the address.")
    return DownloadError(
        f"Could not download {url}: {reason}; check the address or your connection, "
        "then run the same command again to resume."
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n:,} bytes"


def _check_free_space(folder: Path, needed: int, what: str) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise DownloadError(
            f"Not enough disk space in {folder} to {what}: it needs {_gb(needed)} but only "
            f"{_gb(free)} is free; free some space and run the same command again."
        )


# --- download ------------------------------------------------------------------------------


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _content_range(resp: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, total length) of a Content-Range header; None where unknown."""
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _content_length(resp: requests.Response) -> int | None:
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _part_size(part: Path, expected: int | None) -> int:
    """Bytes already in `part`, after removing one longer than the expected file."""
    have = part.stat().st_size if part.exists() else 0
    if expected is not None and have > expected:
        part.unlink(missing_ok=True)
        return 0
    return have


def _request(url: str, have: int, timeout: float) -> requests.Response:
    """GET `url` from byte `have` on (a Range request when `have` > 0), streamed."""
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return requests.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema):
        raise UsageError(f"Cannot download {url}: it is not a valid http(s) URL; check the "
                         "address.") from None
    except requests.RequestException as e:
        raise _cannot_download(url, _network_reason(e, timeout)) from None


def _resume_from(resp: requests.Response, url: str, have: int,
                 expected: int | None) -> tuple[str, int, int | None] | None:
    """How to use the answer to a request for the bytes from `have` on: (mode, bytes already
    there, total size or None). Mode "done": the .part already holds the whole file; "ab": append
    the body to it; "wb": the body is the whole file. None: the .part was unusable and is deleted,
    ask again.

    Raises:
        DownloadError: an error status, or a size other than `expected`.
    """
    start, total = _content_range(resp)
    status = resp.status_code
    if status == 416 and have:
        if (total is None or total == have) and (expected is None or have == expected):
            return "done", have, total
        part_unusable = True  # the .part is longer than the file: start over
    elif status == 206 and have and start == have:
        length = _content_length(resp)
        total = total if total is not None else (None if length is None else have + length)
        part_unusable = False
    elif status == 200 or (status == 206 and start == 0):  # the server ignored the Range
        total = _content_length(resp) if status == 200 else total
        have, part_unusable = 0, False
    elif status == 206:  # a range we did not ask for
        part_unusable = True
    else:
        reason = f"the server answered {status} {resp.reason or ''}".rstrip()
        raise _cannot_download(url, reason, network=status >= 500)
    if part_unusable:
        return None
    if expected is not None and total is not None and total != expected:
        raise DownloadError(
            f"The server offers {total:,} bytes at {url} but {expected:,} were "
            "expected; check the address (the file may have changed on the server)."
        )
    return ("ab" if have else "wb"), have, total


def _stream(resp: requests.Response, part: Path, mode: str, have: int, size: int | None, *,
            url: str, progress: bool, chunk_size: int, timeout: float) -> int:
    """Write the body of `resp` to `part` (append or overwrite); return the bytes written."""
    if size is not None:
        _check_free_space(part.parent, size - have, f"download {ZIP_NAME}")
    fetched = 0
    try:
        with open(part, mode) as out, progress_task(f"Downloading {ZIP_NAME}", size, progress,
                                                    completed=have, unit="bytes") as advance:
            for chunk in resp.iter_content(chunk_size):
                out.write(chunk)
                have += len(chunk)
                fetched += len(chunk)
                advance(len(chunk))
                if size is not None and have > size:
                    break
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        got = part.stat().st_size if part.exists() else 0
        of = f" of {size:,}" if size is not None else ""
        raise DownloadError(
            f"The download of {url} broke off after {got:,}{of} bytes "
            f"({_network_reason(e, timeout)}); run the same command again to resume."
        ) from None
    except OSError as e:
        raise write_error(part, e, then="run the same command again to resume") from None
    return fetched


def _keep_whole(part: Path, zip_path: Path, url: str, size: int | None) -> None:
    """Rename a complete `part` to `zip_path`; a short one is kept to resume, a long one removed."""
    got = part.stat().st_size if part.exists() else 0
    if size is not None and got < size:
        raise DownloadError(
            f"The download of {url} stopped after {got:,} of {size:,} bytes; "
            f"{part.name} is kept, run the same command again to resume."
        )
    if size is not None and got > size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"The download of {url} has {got:,} bytes but {size:,} were expected, so it was "
            "removed; check the address, then run the same command again."
        )
    if got == 0:
        part.unlink(missing_ok=True)
        raise _cannot_download(url, "the server sent an empty file")
    try:
        os.replace(part, zip_path)
    except OSError as e:
        raise write_error(zip_path, e) from None


def _fetch(url: str, zip_path: Path, expected: int | None, *, progress: bool,
           chunk_size: int, timeout: float) -> int:
    """Download `url` to `zip_path` via `zip_path.part` (resuming it); return bytes fetched."""
    part = zip_path.with_name(zip_path.name + ".part")
    fetched, total = 0, None
    for _attempt in range(2):  # a second try only after throwing away an unusable .part
        have = _part_size(part, expected)
        if expected is not None and have == expected > 0:
            break  # complete, but not yet renamed (an interrupted earlier run)
        with _request(url, have, timeout) as resp:
            answer = _resume_from(resp, url, have, expected)
            if answer is None:
                part.unlink(missing_ok=True)
                continue
            mode, have, total = answer
            if mode != "done":
                fetched = _stream(resp, part, mode, have, expected if expected is not None else total,
                                  url=url, progress=progress, chunk_size=chunk_size, timeout=timeout)
        break
    else:
        raise _cannot_download(url, "the server did not send the requested part of the file")
    _keep_whole(part, zip_path, url, expected if expected is not None else total)
    return fetched


# --- extraction ----------------------------------------------------------------------------


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The path parts of a zip member; None when it would land outside the folder (zip-slip)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return None
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    return None if ".." in parts else parts


def _dataset_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The folder inside the archive that holds train/ and val/: the top or one top folder."""

    def has_splits(prefix: tuple[str, ...]) -> bool:
        n = len(prefix)
        return all(any(len(p) > n + 1 and p[:n] == prefix and p[n] == s for p in paths)
                   for s in _SPLITS)

    if has_splits(()):
        return ()
    tops = sorted({p[0] for p in paths if len(p) > 1 and not p[0].startswith((".", "__MACOSX"))})
    found = [(top,) for top in tops if has_splits((top,))]
    return found[0] if len(found) == 1 else None


def _bad_zip(zip_path: Path, why: str) -> DownloadError:
    return DownloadError(
        f"{zip_path} is not a valid nature_12K archive ({why}); delete it and run the same "
        "command again to download it anew."
    )


def _discard(folder: Path, error: Exception) -> Exception:
    """Remove the half-made `folder` (an extraction that failed); return `error` to raise."""
    shutil.rmtree(folder, ignore_errors=True)
    return error


def _dataset_members(zf: zipfile.ZipFile, zip_path: Path) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """(member, path inside the dataset folder) for every member of the folder with train/ and val/.

    Raises:
        DownloadError: a member would land outside the folder (zip-slip), or no folder in the
            archive holds both train/ and val/.
    """
    members = []
    for info in zf.infolist():
        parts = _member_parts(info.filename)
        if parts is None:
            raise DownloadError(
                f"{zip_path} holds an unsafe path ({info.filename!r} would be written "
                "outside the dataset folder), so nothing was extracted; check the source "
                "of the archive."
            )
        if parts and not parts[0].startswith("__MACOSX"):
            members.append((info, parts))
    prefix = _dataset_prefix([p for _, p in members])
    if prefix is None:
        raise _bad_zip(zip_path, "no folder in it holds both train/ and val/")
    n = len(prefix)
    return [(i, p[n:]) for i, p in members if p[:n] == prefix and len(p) > n]


def _copy_members(zf: zipfile.ZipFile, todo: list, staging: Path, progress: bool) -> None:
    """Write each (member, relative path) of `todo` under `staging`, with a progress bar."""
    files = sum(not info.is_dir() for info, _ in todo)
    with progress_task(f"Extracting {Path(str(zf.filename)).name}", files, progress) as advance:
        for info, rel in todo:
            out = staging.joinpath(*rel)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            advance(1)


def _extract(zip_path: Path, dest: Path, progress: bool) -> Path:
    """Extract the dataset folder of `zip_path` to `DEST/.inaturalist_12K.partial`."""
    staging = dest / f".{DATASET_DIR}.partial"
    try:
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging)  # left by an interrupted extraction
        elif staging.exists() or staging.is_symlink():
            staging.unlink()
    except OSError as e:
        raise write_error(staging, e) from None
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
        raise _bad_zip(zip_path, str(e).rstrip(".") or "unreadable") from None
    with zf:
        todo = _dataset_members(zf, zip_path)
        _check_free_space(dest, sum(i.file_size for i, _ in todo), f"extract {zip_path.name}")
        try:
            staging.mkdir()
            _copy_members(zf, todo, staging, progress)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
            raise _discard(staging, _bad_zip(zip_path, str(e).rstrip(".") or type(e).__name__)) from None
        except OSError as e:
            raise _discard(staging, write_error(dest, e)) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return staging


# --- the command ---------------------------------------------------------------------------


def _check_request(url: str | None, expected_bytes: int | None) -> tuple[str, int | None]:
    """The address to download and the size it must have (None: the size the server announces)."""
    if expected_bytes is None and (url is None or url == DATASET_URL):
        expected_bytes = DATASET_BYTES
    return url or DATASET_URL, expected_bytes


def _archive(url: str, zip_path: Path, expected: int | None, **fetch) -> int:
    """Make sure `zip_path` holds the archive: a kept one of the right size, or a download;
    return the bytes fetched."""
    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(zip_path.parent, e) from None
    if not zip_path.is_file():
        return _fetch(url, zip_path, expected, **fetch)
    size = zip_path.stat().st_size
    if expected is not None and size != expected:
        raise DownloadError(
            f"{zip_path} has {size:,} bytes but {expected:,} were expected; delete it "
            "and run the same command again to download it anew."
        )
    return 0


def _install(zip_path: Path, dest: Path, url: str, progress: bool) -> int:
    """Extract `zip_path`, check the dataset and move it to DEST/inaturalist_12K; return its file count."""
    marker = _marker_path(dest)
    try:
        marker.unlink(missing_ok=True)  # a stale marker must not describe the new folder
    except OSError as e:
        raise write_error(marker, e) from None
    staging = _extract(zip_path, dest, progress)
    try:
        scan = scan_dataset(staging)
        problems = scan.layout_problems
    except DatasetError as e:
        problems = [str(e)]
    if problems:
        why = "the dataset in it is incomplete: " + problems[0].rstrip(".")
        raise _discard(staging, _bad_zip(zip_path, why))
    target = dest / DATASET_DIR
    try:
        os.rename(staging, target)
    except OSError as e:
        raise _discard(staging, DownloadError(
            f"Could not move the extracted dataset to {target}: {e.strerror or e}; "
            "move that folder away and run the same command again.")) from None
    count = len(scan.all_files())
    with contextlib.suppress(OSError):  # the marker only sharpens the completeness check
        _write_marker(dest, count, url, zip_path.stat().st_size)
    return count


def download_dataset(
    dest: str | Path = DEFAULT_DOWNLOAD,
    *,
    progress: bool = True,
    chunk_size: int = 1 << 16,
    timeout: float = 30,
    **options,
) -> DownloadResult:
    """Download nature_12K.zip into `dest` and extract it to `dest/inaturalist_12K`.

    `options`: `fastinat.config.DownloadOptions` fields (url, expected_bytes, keep_zip). Does
    nothing when `dest/inaturalist_12K` is already complete. A partial download
    (`dest/nature_12K.zip.part`) is resumed with an HTTP Range request. `url` overrides the
    default address (a mirror); the expected size is `expected_bytes`, else DATASET_BYTES for
    the default URL, else the size the server announces. The zip is deleted after a
    successful extraction unless `keep_zip`.

    Raises:
        UsageError: `expected_bytes` is not positive, `url` is not an http(s) URL, `dest` (or
            `dest/inaturalist_12K`) is a file, or `dest/inaturalist_12K` is someone else's folder.
        DownloadError: network error, wrong size, bad or unsafe archive, or
            `dest/inaturalist_12K` is an incomplete dataset.
        WriteError: not enough disk space, or a file that cannot be written.
    """
    from ..config import DownloadOptions
    from ..options import resolve

    opts = resolve(DownloadOptions, overrides=options)
    url, expected_bytes = _check_request(opts.url, opts.expected_bytes)
    dest = Path(dest)
    target, zip_path = dest / DATASET_DIR, dest / ZIP_NAME
    count = _existing_dataset(dest)
    if count is not None:
        return DownloadResult(path=target, downloaded=False, extracted=False,
                              bytes_downloaded=0, files=count,
                              zip_path=zip_path if zip_path.is_file() else None)
    fetched = _archive(url, zip_path, expected_bytes, progress=progress, chunk_size=chunk_size,
                       timeout=timeout)
    count = _install(zip_path, dest, url, progress)
    if not opts.keep_zip:
        with contextlib.suppress(OSError):  # the dataset is ready; a leftover zip is reported
            zip_path.unlink(missing_ok=True)
    return DownloadResult(path=target, downloaded=fetched > 0, extracted=True,
                          bytes_downloaded=fetched, files=count,
                          zip_path=zip_path if zip_path.exists() else None)
