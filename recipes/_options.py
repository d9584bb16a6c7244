"""Typer options built from the option definitions in `fastinat.config`.

    @with_options(ScratchConfig)
    def scratch(resume: Path = RESUME, config: Path = CONFIG, **options) -> None:
        call(train_scratch, config_file=config, resume=resume, **options)

Each field of the config becomes a `--flag` (`--x/--no-x` for a switch) with its type, help
panel and a help text that ends in its range and true default, all read from the field's
`option(...)`. Every generated option defaults to None, and `with_options` drops the ones the
user did not give, so the library applies (and checks) the one set of defaults.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path

import typer

from fastinat.config import OUTPUT
from fastinat.options import Spec, specs
from fastinat.presets import presets

RUN = typer.Argument(..., help="A run folder (runs/<name>).")
RESUME = typer.Option(None, "--resume", help="Continue an interrupted run folder with its saved "
                      "options.", rich_help_panel=OUTPUT)
CONFIG = typer.Option(None, "--config", help="YAML file of options (same names as the flags), or a "
                      f"preset: {', '.join(presets())} (recipes/presets/); flags override it.",
                      rich_help_panel=OUTPUT, metavar="FILE|PRESET")


def help_text(spec: Spec) -> str:
    """The option's help sentence, its range (unless the sentence lists the choices) and default."""
    rule = spec.rule()
    if spec.choices and all(c in spec.help for c in spec.choices) and spec.min is None \
            and spec.above is None:
        rule = ""
    ranged = f" \\[{rule}]" if rule else ""
    return f"{spec.help}{ranged} \\[default: {spec.default_text()}]"


def _cli_type(spec: Spec):
    tp = spec.base_type
    if spec.repeat:
        return list[typing.get_args(tp)[0]]
    if spec.path:
        return Path
    return tp if tp in (bool, int, float) else str  # lists: "32,64,128"; float | str: "1e-3" or "auto"


def parameter(spec: Spec) -> inspect.Parameter:
    """The Typer parameter of one option (default None: not given)."""
    flag = spec.cli
    decls = [f"{flag}/--no-{flag[2:]}"] if spec.base_type is bool else [flag]
    info = typer.Option(None, *decls, help=help_text(spec), rich_help_panel=spec.panel, show_default=False)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=_cli_type(spec))


def to_library(options: dict) -> dict:
    """Drop the options not given (None, or an empty repeated list); paths become strings."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()
            if v is not None and v != []}


def with_options(cls):
    """Give a command `**options` made of `cls`'s options (less the ones it declares itself)."""

    def decorate(fn):
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own}
        generated = [parameter(s) for n, s in specs(cls).items() if n not in names]

        @functools.wraps(fn)
        def command(**kwargs):
            mine = {name: kwargs.pop(name) for name in names}
            return fn(**mine, **to_library(kwargs))

        arguments = [p for p in own if isinstance(p.default, typer.models.ArgumentInfo)]
        flags = [p.replace(kind=p.KEYWORD_ONLY) for p in own if p not in arguments]
        order = arguments + generated + flags  # the command's own flags close their help panel
        command.__signature__ = inspect.Signature(order)
        command.__annotations__ = {p.name: p.annotation for p in order}
        return command

    return decorate
