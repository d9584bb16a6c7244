"""Start-up cost of the command line: `fastinat --help` against importing fastai.

Rows (wall seconds of a fresh interpreter, reported as starts per second so the ratio reads
"how many times faster"; the fastest of `--repeat` runs each):

* `import_fastai`: `python -c "import fastai.vision.all"`, what every fastai script pays (baseline);
* `cli_help`: `fastinat --help` (goal: under 1 s, that is >= 1 start/s; the log says whether).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from . import failed, register, row

UNIT = "starts/s"
FASTINAT = Path(sys.executable).with_name("fastinat")


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - start


@register("cli", goals={"import_fastai": None, "cli_help": None})
def bench_cli(opts) -> dict:
    """`fastinat --help` wall time vs `import fastai.vision.all`."""
    help_cmd = [str(FASTINAT), "--help"] if FASTINAT.exists() else [sys.executable, "-m", "fastinat", "--help"]
    base_cmd = [sys.executable, "-c", "import fastai.vision.all"]
    try:
        base = min(_time(base_cmd) for _ in range(max(1, min(opts.repeat, 2))))
        value = min(_time(help_cmd) for _ in range(max(1, opts.repeat)))
    except Exception as e:  # noqa: BLE001 - reported as the rows' error
        return {"import_fastai": failed(UNIT, float("nan"), repr(e)), "cli_help": failed(UNIT, float("nan"), repr(e))}
    verdict = "met" if value <= 1.0 else "MISSED"
    opts.log(f"  fastinat --help {value:.2f} s (goal <= 1 s: {verdict}); import fastai.vision.all {base:.2f} s")
    return {"import_fastai": row(1 / base, UNIT, 1 / base), "cli_help": row(1 / value, UNIT, 1 / base)}
