"""Named presets: YAML option files shipped in `recipes/presets/`, used as `--config NAME`.

    fastinat finetune --config resnet50-full --data data/inaturalist_12K
    fastinat.train_finetune(config_file=find_config("strong"), data="...")

A preset is an ordinary `--config` file (option: value pairs, flags override them) with a
`command:` key naming the command it is for, and a header of `#` comments: what it is for,
the GPU memory and time per epoch to expect, and its measured accuracy once measured.
`fastinat reproduce` (`make reproduce`) runs them and writes the accuracy table.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError, did_you_mean
from .options import load_yaml
from .paths import builtin_dir


def presets() -> dict[str, Path]:
    """{name: file} of the built-in presets (recipes/presets/): Part A's (scratch-*) first, then by name."""
    files = sorted(builtin_dir("presets").glob("*.yaml"),
                   key=lambda p: (not p.stem.startswith("scratch"), p.stem))
    return {p.stem: p for p in files}


def find_config(name: str | Path) -> Path:
    """`--config`'s value: a YAML file, or the name of a built-in preset (a name without a
    suffix or folder that is not a file)."""
    path = Path(name)
    if path.is_file():
        return path
    known = presets()
    if not path.suffix and str(name) in known:
        return known[str(name)]
    if path.suffix or path.parent != Path("."):
        return path  # a file that is not there: `load_yaml` says so
    hint = did_you_mean(str(name), known)
    raise UsageError(f"No config file or preset {str(name)!r}{hint}; the presets are {', '.join(known)}.")


def preset_command(name: str) -> str:
    """The command a built-in preset is for (its `command:` key)."""
    command = load_yaml(find_config(name)).get("command")
    if command not in ("scratch", "finetune"):
        raise UsageError(f"The preset {name} names no command (command: scratch or finetune).")
    return command


def describe(name: str) -> str:
    """The first line of a preset's header comment."""
    for line in find_config(name).read_text().splitlines():
        if line.startswith("#") and line.strip("# "):
            return line.strip("# ")
    return ""
