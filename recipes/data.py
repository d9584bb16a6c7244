"""`fastinat data demo|check|download`: get a dataset and make sure it is usable."""

from __future__ import annotations

from pathlib import Path

import typer

from fastinat.config import DownloadOptions
from fastinat.paths import DATASET_URL, DEFAULT_DATA, DEFAULT_DEMO, DEFAULT_DOWNLOAD

from ._options import with_options
from ._util import Command, Group, call, console, err_console, unwrap

app = typer.Typer(
    help="Get the data (nature_12K or the embedded demo) and check a dataset folder.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    cls=Group,
)


def demo(
    dest: Path = typer.Argument(DEFAULT_DEMO, help="Folder to write the demo dataset to."),
) -> None:
    """Write the embedded demo dataset (handwritten digits, 10 classes).

    scikit-learn's 1,797 real 8x8 digit scans, upscaled to 32 px RGB PNGs, as
    DEST/train/<digit>/ and DEST/val/<digit>/ with a fixed 20% of every class in val/.
    A folder that already holds the demo is left as it is."""
    from fastinat.data.demo import write_demo

    dest, counts, written = call(write_demo, dest)
    n_train, n_val = sum(counts["train"].values()), sum(counts["val"].values())
    verb = "Wrote" if written else "Already present:"
    console.print(f"{verb} {n_train + n_val:,} images in {dest} "
                  f"(train {n_train:,}, val {n_val:,}, {len(counts['train'])} classes).")


def check(
    path: Path = typer.Argument(DEFAULT_DATA, help="Dataset folder with train/<class>/ and val/<class>/."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Decode every image again instead of reusing the last check's "
        "answers for unchanged files.", rich_help_panel="Checking"),
) -> None:
    """Check a dataset's layout and decode every image.

    Layout: train/ and val/ with the same, non-empty class folders; the images of a class
    may sit in subfolders of its folder. Hidden files and folders (.DS_Store, macOS ._x.jpg)
    are skipped. Then every file is decoded in parallel. Prints per-class counts and every
    unreadable or non-image file with the reason. Nothing in the dataset is written or
    deleted.

    Exit code: 0 clean, 1 problems found, 2 PATH missing or not a dataset."""
    from rich.markup import escape
    from rich.table import Table

    from fastinat.data.check import check_dataset

    report = call(check_dataset, path, use_cache=not no_cache)
    table = Table(title=f"{report.root}", title_justify="left")
    table.add_column("class")
    table.add_column("train", justify="right")
    table.add_column("val", justify="right")
    for cls in report.classes:
        table.add_row(escape(cls), *(str(report.counts[s].get(cls, "-")) for s in ("train", "val")))
    table.add_section()
    table.add_row("total", *(f"{sum(report.counts[s].values()):,}" for s in ("train", "val")))
    console.print(table)
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for problem in report.layout_problems:
        err_console.print(f"[red]layout:[/] {escape(problem)}", highlight=False)
    if report.bad_files:
        err_console.print(f"[red]{len(report.bad_files)} unusable file(s):[/]")
        for f, reason in sorted(report.bad_files.items()):
            err_console.print(f"  {escape(str(f))}: {escape(reason)}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)
    console.print(f"[green]OK[/]: {len(report.classes)} classes, every image readable.")


@with_options(DownloadOptions)
def download(
    dest: Path = typer.Argument(DEFAULT_DOWNLOAD, help="Folder to download into; the dataset lands "
                                "in DEST/inaturalist_12K."),
    **options,
) -> None:
    """Download nature_12K (3.8 GB) and extract it to DEST/inaturalist_12K.

    Shows a progress bar, resumes an interrupted download (run the same command again),
    checks the size, and does nothing when DEST/inaturalist_12K is already complete.
    An existing folder there that is not a complete dataset is never changed."""
    from fastinat.data.download import download_dataset
    from fastinat.options import resolve

    url = call(resolve, DownloadOptions, overrides=options).url or DATASET_URL  # bad values: one line first
    if not err_console.is_terminal:  # no bar in a log: say what is going on
        err_console.print(f"Downloading {url} into {dest} ...", highlight=False)
    result = call(download_dataset, dest, **options)
    if not result.changed:
        console.print(f"Already complete: {result.path} ({result.files:,} files); nothing to do.")
        return
    got = f", {result.bytes_downloaded / 1e6:,.1f} MB downloaded" if result.downloaded else ""
    console.print(f"Ready: {result.path} ({result.files:,} files{got}). "
                  f"Check it with `fastinat data check {result.path}`.")


for _command in (demo, check, download):
    app.command(cls=Command, help=unwrap(_command.__doc__))(_command)
