"""What every command shares: consoles, and turning errors into one line + the exit code.

The exit code comes from the error's class alone (`fastinat.errors`): a usage mistake 2,
a problem in the content 1, Ctrl-C 130. Click's own usage errors (an unknown flag, a value
that is not a number) are shown the same way: one line, exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

import typer
import typer.core
from rich.console import Console

from fastinat.errors import FastinatError, Interrupted, UsageError

T = TypeVar("T")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(error: FastinatError) -> None:
    """Print `Error: message` on stderr and exit with the error's code (no traceback)."""
    from rich.markup import escape

    err_console.print(f"[bold red]Error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call a library function; a `FastinatError` or Ctrl-C becomes one line and its exit code."""
    try:
        return fn(*args, **kwargs)
    except FastinatError as e:
        fail(e)
    except KeyboardInterrupt:
        fail(Interrupted("Interrupted."))
    raise AssertionError("unreachable")


#: click's UsageError, as the installed Typer raises it (newer Typers carry their own click).
ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class OneLineErrors:
    """A click command mix-in: a usage error (unknown flag or command, bad type) is one line, exit 2."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        with _one_line(ctx):
            return super().parse_args(ctx, args)


class Command(OneLineErrors, typer.core.TyperCommand):
    pass


class TunedCommand(Command):
    """A command that trains or evaluates: the process is its own, so it is tuned
    (`fastinat.perf.tune_process`: allocator, OpenCV threads, cuDNN flags, warnings filters)
    once, just before the command runs. After parsing, so `--help` and a usage mistake
    never import torch; the library functions the command calls leave these settings alone."""

    def invoke(self, ctx):
        from fastinat.perf import tune_process

        tune_process()
        return super().invoke(ctx)


class Group(OneLineErrors, typer.core.TyperGroup):
    def resolve_command(self, ctx, args: list[str]):
        with _one_line(ctx):
            return super().resolve_command(ctx, args)


@contextmanager
def _one_line(ctx):
    try:
        yield
    except ClickUsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            raise
        fail(UsageError(f"{e.format_message()} (see: {ctx.command_path} --help)"))


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for the CLI: 'Warning: message (Category)', one line on stderr.

    Python's own format adds the file, line number and source line of the code that warned
    (a library's internals, meaningless to a user) on a second line.
    """
    from rich.markup import escape

    text = " ".join(str(message).split())
    name = getattr(category, "__name__", "Warning")
    err_console.print(f"[yellow]Warning:[/] {escape(text)} ({name})", highlight=False, soft_wrap=True)


def format_warning(message, category, filename, lineno, line=None) -> str:
    """`warnings.formatwarning` for the CLI (used by `logging.captureWarnings`): the same one line."""
    return f"Warning: {' '.join(str(message).split())} ({getattr(category, '__name__', 'Warning')})\n"


def one_line_warnings() -> None:
    """Show every Python warning (ours and third-party: PIL, torch, ...) as one line, no source.

    Installed by the CLI entry point, which owns the process; the filters (and so
    PYTHONWARNINGS and -W) still decide which warnings are shown.
    """
    import warnings

    warnings.showwarning, warnings.formatwarning = show_warning, format_warning


def unwrap(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the line breaks inside them joined."""
    import inspect

    text = inspect.cleandoc(doc or "")
    return "\n\n".join(" ".join(p.split("\n")) for p in text.split("\n\n"))
