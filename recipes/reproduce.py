"""`fastinat reproduce`: run the presets and write the accuracy table (`make reproduce`)."""

from __future__ import annotations

from fastinat.config import ReproduceOptions
from fastinat.errors import FastinatError

from ._options import with_options
from ._util import call, console, fail


@with_options(ReproduceOptions)
def reproduce(**options) -> None:
    """Train every preset (recipes/presets/) and write results/accuracy.md and accuracy.json.

    One row per preset: architecture, size, epochs, valid accuracy, TEST accuracy, TEST with
    test-time augmentation, device, minutes, seed and library versions. On nature_12K this is
    a GPU job (about an hour on one modern GPU); --quick runs the same pipeline on the demo
    digits with small settings in a few minutes on a CPU."""
    from fastinat.reproduce import reproduce as run

    table, rows = call(run, **options)
    console.print(table.read_text(), highlight=False, markup=False)
    console.print(f"Written: {table} and {table.with_suffix('.json')}", highlight=False)
    failed = [r["preset"] for r in rows if r.get("error")]
    if failed:
        fail(FastinatError(f"{len(failed)} preset(s) failed: {', '.join(failed)} (see {table})."))
