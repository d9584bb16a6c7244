"""Options defined once: an `option(...)` field says everything about one option.

    @dataclass
    class TrainConfig:
        epochs: int = option(10, "Epochs of the one-cycle schedule.", TRAINING, min=1)

From that one line (see `fastinat.config`) come the dataclass default, the `--epochs` flag of
every command whose config has the field with its `--help` text and true default
(`recipes/_options.py` builds the Typer parameters), the `--config` YAML key and the sweep
parameter (both go through `resolve`), the range check, and `config.json` / the model card
(`dataclasses.asdict`). A value outside an option's range or choices is a `UsageError`
(exit 2) naming the flag, wherever it came from.

`resolve(cls, config_file, overrides)` applies defaults < YAML file < overrides; like timm's
`create_model`, an override of None means "not given", so the one default applies.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import UsageError, did_you_mean

T = typing.TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """One option: its field name, type and default, plus what the CLI and the checks need."""

    name: str
    type: typing.Any
    default: typing.Any
    help: str
    panel: str
    min: float | None = None  # inclusive bounds (every item of a list)
    max: float | None = None
    above: float | None = None  # exclusive bounds
    below: float | None = None
    choices: tuple[str, ...] = ()  # allowed strings (a float | str option: its string values)
    shown: str | None = None  # the default as --help shows it, where the value alone does not say
    repeat: bool = False  # a list given as repeated flags (--dense-units 512 --dense-units 256)
    path: bool = False  # a file or folder (a Path on the command line)
    check: Callable[[typing.Any], str | None] | None = None  # extra rule: the problem, or None

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def base_type(self):
        """The type without None: int | None -> int; list[int] stays list[int]."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        union = typing.get_origin(self.type) in (typing.Union, types.UnionType)
        return args[0] if union and len(args) == 1 else self.type

    def rule(self) -> str:
        """The range or choices in words ('at least 0 and below 1'; 'relu, elu or silu')."""
        parts = [f"{word} {_num(v)}" for word, v in (("at least", self.min), ("above", self.above),
                                                     ("at most", self.max), ("below", self.below))
                 if v is not None]
        numeric = " and ".join(parts)
        words = _either(self.choices)
        if numeric and words:
            return f"a number {numeric}, or {words}"
        return numeric or words

    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        v = self.default
        if isinstance(v, bool):
            return "on" if v else "off"
        if v is None:
            return "off"
        if isinstance(v, (list, tuple)):
            return ",".join(map(_num, v)) if v else "none"
        return _num(v)


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _either(words: Sequence[str]) -> str:
    words = list(words)
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else "".join(words)


def option(default, help: str, panel: str, *, factory: bool = False, **spec) -> typing.Any:
    """A dataclass field that defines an option (see `Spec` for the keywords).

    `factory=True` for a list default (each instance gets its own copy).
    """
    meta = {"help": help, "panel": panel, **spec}
    if factory:
        return dataclasses.field(default_factory=lambda: list(default), metadata={"option": meta})
    return dataclasses.field(default=default, metadata={"option": meta})


@functools.cache
def specs(cls: type) -> dict[str, Spec]:
    """{field name: Spec} of a config dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out[f.name] = Spec(f.name, hints[f.name], default, **meta)
    return out


# -- values: coerce (type), then check (range, choices, rule) ---------------------------------------

def _bad(spec: Spec, what: str) -> UsageError:
    return UsageError(f"Bad option {spec.cli}: {what}.")


def coerce(spec: Spec, value, tp=None):
    """A YAML / command-line / sweep value as the option's type, or a UsageError naming it."""
    tp = spec.type if tp is None else tp
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(spec, value, arg)
            except UsageError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _bad(spec, f"expected a list, got {value!r}")
        return [coerce(spec, v, item) for v in value]
    try:
        return _scalar(tp, value)
    except (TypeError, ValueError):
        kind = {bool: "true or false", int: "a whole number", float: "a number"}.get(tp, "text")
        raise _bad(spec, f"expected {kind}, got {value!r}") from None


def _scalar(tp, value):
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ValueError
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if isinstance(value, (dict, list, bool)):
        raise ValueError
    return str(value)


def check(spec: Spec, value) -> None:
    """Raise a UsageError when `value` (already coerced) is outside the option's range or choices."""
    for v in value if isinstance(value, list) else [value]:
        if v is None:
            continue
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        inside = not number or all(ok for ok in (
            spec.min is None or v >= spec.min, spec.max is None or v <= spec.max,
            spec.above is None or v > spec.above, spec.below is None or v < spec.below))
        chosen = not isinstance(v, str) or not spec.choices or v in spec.choices
        if not (inside and chosen):
            hint = did_you_mean(v, spec.choices) if isinstance(v, str) else ""
            raise _bad(spec, f"must be {spec.rule()}, got {v!r}{hint}")
    problem = spec.check(value) if spec.check and value is not None else None
    if problem:
        raise _bad(spec, problem)


def value(cls: type, name: str, raw):
    """One option's value from YAML, the command line or a sweep: coerced and checked.

    A choice may be written in any case (`ReLU` is `relu`)."""
    spec = specs(cls)[name]
    v = coerce(spec, raw)
    if isinstance(v, str) and spec.choices:
        v = next((c for c in spec.choices if c.lower() == v.lower()), v)
    check(spec, v)
    return v


# -- whole configs ------------------------------------------------------------------------------------

def load_yaml(path: str | Path) -> dict:
    """A YAML file of option: value pairs."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise UsageError(f"Cannot read the config file {path}: {e.strerror or e}.") from None
    except yaml.YAMLError as e:
        raise UsageError(f"The config file {path} is not valid YAML ({str(e).splitlines()[0]}).") from None
    if not isinstance(data, dict):
        raise UsageError(f"The config file {path} must hold option: value pairs.")
    return data


def _own_yaml(cls: type, path: str | Path) -> dict:
    """The YAML file's options; its `command:` key, if any, must be the command of `cls`."""
    data = load_yaml(path)
    command = data.pop("command", None)
    own = getattr(cls, "command", None)
    if command is not None and own is not None and str(command) != own:
        raise UsageError(f"The config file {path} is for `fastinat {command}`, not `fastinat {own}`.")
    return data


def field_name(cls: type, key) -> str:
    """The field an option key names (`dense-units` or `dense_units`), or a UsageError."""
    name = str(key).replace("-", "_")
    if name not in specs(cls):
        raise UsageError(f"Unknown option {key!r}{did_you_mean(name, specs(cls))}.")
    return name


def resolve(cls: type[T], config_file: str | Path | None = None, overrides: dict | None = None,
            *, base: object | None = None) -> T:
    """`cls` from its defaults (or the fields of `base`) < a YAML file < overrides; checked.

    None in `overrides` means "not given". After the per-option checks, the config's own
    `validate()` (rules between options) runs, if it has one.
    """
    values: dict = {}
    if base is not None:
        values = {n: getattr(base, n) for n in specs(cls) if hasattr(base, n)}
    for source in ([_own_yaml(cls, config_file)] if config_file else []) + [overrides or {}]:
        for key, raw in source.items():
            name = field_name(cls, key)
            if raw is None and source is overrides:
                continue
            values[name] = value(cls, name, raw)
    cfg = cls(**values)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg
