"""Shared fixtures: every test gets its own cache folder and W&B is never reached."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from fastai.callback.core import Callback
from PIL import Image

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two test processes on the cores:
    import torch  # one torch thread each, or their tiny models wait on each other's threads

    torch.set_num_threads(1)


# Under pytest-xdist (`make test`) a test that takes its process down, a native crash ("Fatal
# Python error: Aborted") or a hang past faulthandler_timeout (pyproject.toml), is failed by xdist
# as "worker 'gw0' crashed while running '<test>'" and a new process goes on with the rest. These
# hooks run in the controlling process: they say where that stack dump is and, when xdist stopped
# after too many crashes (--max-worker-restart; `-q` hides its own line), that the run is short.
_process_crashes = {"tests": [], "processes": 0}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    _process_crashes["tests"].append(crashitem)
    report.longrepr = (f"{report.longrepr}: a native crash or a hang past faulthandler_timeout; "
                       "its stack dump ('Fatal Python error' or 'Timeout') is printed above the test results")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    if error:
        _process_crashes["processes"] += 1


def pytest_terminal_summary(terminalreporter, config):
    tests, processes = _process_crashes["tests"], _process_crashes["processes"]
    if not processes:
        return
    terminalreporter.write_sep("=", f"{processes} test process(es) died")
    for nodeid in tests:
        terminalreporter.write_line(f"died while running {nodeid}")
    if processes > len(tests):
        terminalreporter.write_line(f"{processes - len(tests)} died outside any test (starting up, "
                                    "collecting, exiting): see the stack dumps above")
    from xdist.dsession import get_default_max_worker_restart

    most = get_default_max_worker_restart(config)
    if most is not None and processes > most:
        terminalreporter.write_line(f"pytest-xdist stopped after {processes} (--max-worker-restart "
                                    f"{most}): the tests still to run did not run", red=True)


@pytest.fixture(autouse=True)
def _isolated_user_paths(tmp_path_factory, monkeypatch):
    """Point fastinat's cache (and W&B) at a temporary folder for every test."""
    monkeypatch.setenv("FASTINAT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("FASTINAT_STORAGE", "PGPASSWORD", "PGPASSFILE"):  # a developer's own sweep database
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The embedded demo dataset, written once per test session (treat as read-only)."""
    from fastinat.data.demo import write_demo

    dest = tmp_path_factory.mktemp("demo") / "digits"
    write_demo(dest)
    return dest


def demo_subset(demo: Path, root: Path, train: int, val: int) -> Path:
    """A copy of the demo with the first `train` / `val` images of each class folder."""
    from fastinat.data.demo import copy_subset

    keep = {"train": train, "val": val}
    return copy_subset(demo, root, lambda split, images: images[:keep[split]])


@pytest.fixture(scope="session")
def small_demo(demo_data, tmp_path_factory) -> Path:
    """40 train and 8 val images per digit (5 batches of 64 a train epoch): for tests of the
    training path (resume, seeds, lr_find, W&B) that do not need the whole demo (treat as read-only)."""
    return demo_subset(demo_data, tmp_path_factory.mktemp("small") / "digits", 40, 8)


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha1 of the bytes} for every file and folder under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def photo(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    """A small smooth RGB picture (not noise), so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    small = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def exif_rotated_jpeg(path: Path, w: int = 60, h: int = 40, orientation: int = 6) -> None:
    """A w x h JPEG whose EXIF says: rotate for display (6 = 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo(w, h).save(path, "JPEG", exif=exif.tobytes())


def write_unusual_but_valid(folder: Path, seed: int = 0) -> list[Path]:
    """One of each odd-but-valid image kind; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo(64, 48, seed)
    paths = []

    def add(name, save):
        p = folder / name
        save(p)
        paths.append(p)

    add("cmyk.jpg", lambda p: base.convert("CMYK").save(p, "JPEG"))
    add("grey16.png", lambda p: Image.fromarray(
        np.asarray(base.convert("L"), dtype=np.uint16) * 257).save(p))
    add("palette_transparent.png", lambda p: _palette_with_transparency(base).save(p))
    add("rgba.png", lambda p: base.convert("RGBA").save(p))
    add("grey.jpg", lambda p: base.convert("L").save(p, "JPEG"))
    add("exif_rotated.jpg", lambda p: exif_rotated_jpeg(p))
    add("UPPER.JPG", lambda p: base.save(p, "JPEG"))
    add("bilevel.bmp", lambda p: base.convert("1").save(p))
    add("photo.webp", lambda p: base.save(p, "WEBP"))
    return paths


def _palette_with_transparency(img: Image.Image) -> Image.Image:
    pal = img.convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    return pal


BAD_KINDS = ("notes.txt", "truncated.jpg", "empty.jpg", "html_saved_as.png")


def write_bad_files(folder: Path, names=BAD_KINDS) -> list[Path]:
    """Broken files of the kinds named (see BAD_KINDS); returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(photo(64, 48, 7))
    bad = {
        "notes.txt": b"not an image at all\n",
        "truncated.jpg": good[: len(good) // 2],
        "empty.jpg": b"",
        "html_saved_as.png": b"<html><body>404</body></html>",
    }
    out = []
    for name, data in ((n, bad[n]) for n in names):
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out


@pytest.fixture
def odd_dataset(tmp_path) -> tuple[Path, set[Path]]:
    """A dataset full of unusual-but-valid images, with exactly four planted bad files."""
    root = tmp_path / "odd ds"
    classes = ["Aves", "Plantae verdes", "Mollusca-éü"]
    for i, cls in enumerate(classes):
        for split in ("train", "val"):
            write_unusual_but_valid(root / split / cls, seed=i)
            for j in range(4):
                photo(80, 60, seed=100 * i + j).save(root / split / cls / f"img {j}.jpg")
    bad = write_bad_files(root / "train" / "Plantae verdes", BAD_KINDS[:2])
    bad += write_bad_files(root / "val" / "Aves", BAD_KINDS[2:])
    return root, set(bad)


class InterruptIn(Callback):
    """Ctrl-C at batch `at_batch` of epoch `epoch` (both 0-based), for interrupt-and-resume tests."""

    order = 99

    def __init__(self, epoch: int, at_batch: int = 3):
        self.at, self.at_batch = epoch, at_batch

    def after_batch(self):
        if self.training and self.epoch == self.at and self.iter == self.at_batch:
            raise KeyboardInterrupt
