"""Atomic file writes (temp file + rename) and pickle-free weights (safetensors)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(dest: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` then rename onto `dest`: a kill mid-write never leaves half a file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, dest)
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
