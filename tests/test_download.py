"""`download_dataset` against a loopback HTTP server (Range support, cut and ignore switches)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastinat.data.download import DownloadResult, download_dataset
from fastinat.errors import DownloadError, UsageError, WriteError

CLASSES = ("Aves", "Fungi")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, seed * 70 % 256, 90)).save(buf, "PNG")
    return buf.getvalue()


def _dataset_members(top: str = "inaturalist_12K/") -> dict[str, bytes]:
    """{member name: content}: 2 classes, 4 train and 2 val images each, under `top`."""
    members: dict[str, bytes] = {}
    seed = 0
    for split, n in (("train", 4), ("val", 2)):
        for cls in CLASSES:
            for i in range(n):
                seed += 1
                members[f"{top}{split}/{cls}/{i}.png"] = _png(seed)
    return members


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


class _Server:
    """What the handler serves and what it saw."""

    def __init__(self, httpd: ThreadingHTTPServer):
        self.httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}/nature_12K.zip"
        self.data = _zip(_dataset_members())
        self.cut_after: int | None = None  # send this many body bytes once, then hang up
        self.ignore_range = False  # answer 200 with the whole file even to a Range request
        self.send_length = True  # False: no Content-Length, the body ends when it closes
        self.status: int | None = None  # answer every request with this error status
        self.requests: list[dict[str, str | None]] = []
        self.lock = threading.Lock()

    @property
    def ranges(self) -> list[str | None]:
        return [r["range"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: _Server = self.server.state  # type: ignore[attr-defined]
        with state.lock:
            state.requests.append({"path": self.path, "range": self.headers.get("Range")})
            cut, state.cut_after = state.cut_after, None
        if state.status:
            self.send_error(state.status)
            return
        data, start, status = state.data, 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and not state.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if state.send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTINAT_CACHE", str(tmp_path / "cache"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = _Server(httpd)
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _get(server: _Server, dest: Path, **kw) -> DownloadResult:
    kw.setdefault("progress", False)
    kw.setdefault("timeout", 5)
    return download_dataset(dest, url=server.url, **kw)


def _tree(root: Path) -> dict[str, str]:
    """{relative path: sha1 or 'dir'} of everything under root (hidden files included)."""
    return {
        p.relative_to(root).as_posix(): "dir" if p.is_dir() else
        hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _expected_tree() -> dict[str, str]:
    return {
        name.removeprefix("inaturalist_12K/"): hashlib.sha1(data).hexdigest()
        for name, data in _dataset_members().items()
    }


def _files(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if v != "dir"}


def test_full_download_and_extract(server, tmp_path):
    dest = tmp_path / "data"
    result = _get(server, dest)

    target = dest / "inaturalist_12K"
    assert result.path == target
    assert result.downloaded and result.extracted and result.changed
    assert result.bytes_downloaded == len(server.data)
    assert result.files == 12 and result.zip_path is None
    assert _files(_tree(target)) == _expected_tree()
    assert sorted(p.name for p in dest.iterdir()) == [".inaturalist_12K.complete",
                                                     "inaturalist_12K"]
    marker = json.loads((dest / ".inaturalist_12K.complete").read_text())
    assert marker["files"] == 12 and marker["url"] == server.url
    assert server.ranges == [None]


def test_second_call_makes_no_request(server, tmp_path):
    dest = tmp_path / "data"
    _get(server, dest)
    before = _tree(dest)
    result = _get(server, dest)
    assert len(server.requests) == 1
    assert not result.downloaded and not result.extracted and not result.changed
    assert result.bytes_downloaded == 0 and result.files == 12
    assert _tree(dest) == before


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "data"
    server.cut_after = len(server.data) // 2
    with pytest.raises(DownloadError, match="run the same command again to resume") as err:
        _get(server, dest, chunk_size=1024)
    assert "\n" not in str(err.value)
    part = dest / "nature_12K.zip.part"
    have = part.stat().st_size
    assert 0 < have <= len(server.data) // 2
    assert not (dest / "inaturalist_12K").exists()

    result = _get(server, dest, chunk_size=1024)
    assert server.ranges == [None, f"bytes={have}-"]
    assert result.bytes_downloaded == len(server.data) - have
    assert _files(_tree(dest / "inaturalist_12K")) == _expected_tree()
    assert not part.exists() and not (dest / "nature_12K.zip").exists()


def test_server_that_ignores_range_starts_over(server, tmp_path):
    dest = tmp_path / "data"
    server.ignore_range = True
    server.cut_after = len(server.data) // 2
    with pytest.raises(DownloadError):
        _get(server, dest, chunk_size=1024)
    have = (dest / "nature_12K.zip.part").stat().st_size
    assert have > 0

    result = _get(server, dest, chunk_size=1024)
    assert server.ranges == [None, f"bytes={have}-"]
    assert result.bytes_downloaded == len(server.data)
    assert _files(_tree(dest / "inaturalist_12K")) == _expected_tree()


def test_complete_part_file_answered_416_is_used(server, tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "nature_12K.zip.part").write_bytes(server.data)
    result = _get(server, dest)
    assert server.ranges == [f"bytes={len(server.data)}-"]
    assert result.extracted and result.bytes_downloaded == 0
    assert _files(_tree(dest / "inaturalist_12K")) == _expected_tree()


def test_existing_zip_of_expected_size_is_not_downloaded(server, tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "nature_12K.zip").write_bytes(server.data)
    result = _get(server, dest, expected_bytes=len(server.data), keep_zip=True)
    assert server.requests == []
    assert result.extracted and not result.downloaded
    assert result.zip_path == dest / "nature_12K.zip" and result.zip_path.exists()


def test_wrong_expected_size_announced_by_server(server, tmp_path):
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match="expected") as err:
        _get(server, dest, expected_bytes=len(server.data) + 100)
    assert "\n" not in str(err.value)
    assert not (dest / "inaturalist_12K").exists()
    assert not (dest / "nature_12K.zip").exists()


@pytest.mark.parametrize("extra,message,kept", [
    (-10, "has .* bytes but .* were expected, so it was removed", False),  # longer: useless
    (10, "is kept, run the same command again to resume", True),  # shorter: resumable
])
def test_file_of_another_size_than_expected(server, tmp_path, extra, message, kept):
    dest = tmp_path / "data"
    server.send_length = False  # the size shows only when the body ends
    with pytest.raises(DownloadError, match=message):
        _get(server, dest, expected_bytes=len(server.data) + extra, chunk_size=1024)
    part = dest / "nature_12K.zip.part"
    assert (part.stat().st_size if part.exists() else None) == (len(server.data) if kept else None)
    assert not (dest / "nature_12K.zip").exists()


def test_unreachable_url_is_one_line(tmp_path):
    with socket.socket() as s:  # a port on loopback that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/nature_12K.zip"
    with pytest.raises(DownloadError) as err:
        download_dataset(tmp_path / "data", url=url, progress=False, timeout=5)
    msg = str(err.value)
    assert msg.startswith(f"Could not download {url}: ")
    assert "connection refused" in msg.lower()
    assert "\n" not in msg and "0x" not in msg and "Pool" not in msg
    assert err.value.exit_code == 1


def test_http_error_status(server, tmp_path):
    server.status = 404
    with pytest.raises(DownloadError, match="404"):
        _get(server, tmp_path / "data")
    assert not (tmp_path / "data" / "nature_12K.zip.part").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil_abs.txt",
                                  "inaturalist_12K/train/../../../evil.txt"])
def test_zip_slip_member_is_refused(server, tmp_path, evil):
    dest = tmp_path / "deep" / "data"
    server.data = _zip({**_dataset_members(), evil: b"pwned"})
    with pytest.raises(DownloadError, match="unsafe path"):
        _get(server, dest)
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "inaturalist_12K").exists()
    assert not (dest / ".inaturalist_12K.partial").exists()


def test_bad_zip_suggests_deleting_it(server, tmp_path):
    dest = tmp_path / "data"
    server.data = b"this is not a zip archive" * 100
    with pytest.raises(DownloadError, match="delete it and run the same command again"):
        _get(server, dest)
    assert not (dest / "inaturalist_12K").exists()


def test_zip_without_top_folder_is_accepted(server, tmp_path):
    dest = tmp_path / "data"
    server.data = _zip(_dataset_members(top=""))
    result = _get(server, dest)
    assert result.files == 12
    assert _files(_tree(dest / "inaturalist_12K")) == _expected_tree()


def test_zip_without_dataset_is_refused(server, tmp_path):
    dest = tmp_path / "data"
    server.data = _zip({"stuff/readme.txt": b"hello", "stuff/train/a.png": _png(1)})
    with pytest.raises(DownloadError, match="train/ and val/"):
        _get(server, dest)
    assert not (dest / "inaturalist_12K").exists()


def test_existing_non_dataset_folder_is_left_alone(server, tmp_path):
    dest = tmp_path / "data"
    target = dest / "inaturalist_12K"
    (target / "train" / "Aves").mkdir(parents=True)
    (target / "train" / "Aves" / "0.png").write_bytes(_png(1))
    (target / "notes.txt").write_text("my own notes\n")
    before = _tree(dest)
    with pytest.raises(UsageError, match="not a complete dataset") as err:  # someone else's folder
        _get(server, dest)
    assert "move it away" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2
    assert _tree(dest) == before
    assert server.requests == []


def test_dataset_changed_since_extraction_is_not_touched(server, tmp_path):
    dest = tmp_path / "data"
    _get(server, dest)
    (dest / "inaturalist_12K" / "val" / "Aves" / "0.png").unlink()
    before = _tree(dest)
    with pytest.raises(DownloadError, match="not a complete dataset") as err:  # a damaged dataset
        _get(server, dest)
    assert err.value.exit_code == 1 and not isinstance(err.value, UsageError)
    assert _tree(dest) == before
    assert len(server.requests) == 1


@pytest.mark.parametrize("kw,message", [
    ({"expected_bytes": 0}, "Bad option --expected-bytes: must be at least 1, got 0."),
    ({"url": "ftp://127.0.0.1/nature_12K.zip"}, "is not a valid http(s) URL"),
    ({"url": "nature_12K.zip"}, "is not a valid http(s) URL"),
])
def test_bad_arguments_are_usage_errors(tmp_path, kw, message):
    with pytest.raises(UsageError) as err:  # refused before any connection is made
        download_dataset(tmp_path / "data", progress=False, **kw)
    assert message in str(err.value) and err.value.exit_code == 2


def test_destination_that_is_a_file_is_a_usage_error(server, tmp_path):
    dest = tmp_path / "data"
    dest.write_text("not a folder")
    with pytest.raises(UsageError, match="is a file; choose a folder"):
        _get(server, dest)
    assert server.requests == []


def test_disk_full_while_extracting_names_the_folder(server, tmp_path, monkeypatch):
    import errno

    import fastinat.data.download as download

    def full(src, dst, length=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download.shutil, "copyfileobj", full)
    dest = tmp_path / "data"
    with pytest.raises(WriteError) as err:
        _get(server, dest)
    assert str(err.value) == (f"Could not write {dest}: No space left on device; free some space, "
                              "then run the same command again.")
    assert err.value.exit_code == 1
    assert sorted(p.name for p in dest.iterdir()) == ["nature_12K.zip"]  # no half-extracted folder


def test_cli_download_cut_then_resumed(server, tmp_path):
    from typer.testing import CliRunner

    from fastinat.recipes.cli import app

    runner = CliRunner()
    dest = tmp_path / "data"
    noise = Image.frombytes("RGB", (300, 300), np.random.default_rng(0).bytes(300 * 300 * 3))
    buf = io.BytesIO()
    noise.save(buf, "PNG")  # ~270 kB that does not compress: several 64 KiB chunks
    server.data = _zip({**_dataset_members(), "inaturalist_12K/train/Aves/noise.png": buf.getvalue()})
    server.cut_after = len(server.data) // 2
    cut = runner.invoke(app, ["data", "download", str(dest), "--url", server.url])
    assert cut.exit_code == 1
    assert "run the same command again to resume" in cut.output
    assert "Traceback" not in cut.output
    done = runner.invoke(app, ["data", "download", str(dest), "--url", server.url])
    assert done.exit_code == 0, done.output
    assert "Ready:" in done.output and "13 files" in done.output
    assert server.ranges[1] is not None and server.ranges[1].startswith("bytes=")
    again = runner.invoke(app, ["data", "download", str(dest), "--url", server.url])
    assert again.exit_code == 0 and "Already complete" in again.output
    assert len(server.requests) == 2
    checked = runner.invoke(app, ["data", "check", str(dest / "inaturalist_12K")])
    assert checked.exit_code == 0, checked.output
