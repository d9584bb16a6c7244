"""What every command shares: consoles, and turning user errors into one line + exit code."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from fastinat.errors import FastinatError

T = TypeVar("T")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """Print `Error: message` on stderr and exit with `code` (no traceback)."""
    from rich.markup import escape

    err_console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call a library function; a `FastinatError` or Ctrl-C becomes one line and an exit code."""
    try:
        return fn(*args, **kwargs)
    except FastinatError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("Interrupted.", 130)
    raise AssertionError("unreachable")


def unwrap(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the line breaks inside them joined."""
    import inspect

    text = inspect.cleandoc(doc or "")
    return "\n\n".join(" ".join(p.split("\n")) for p in text.split("\n\n"))
