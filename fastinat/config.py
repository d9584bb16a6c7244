"""Run options: the one commented place where defaults live.

    cfg = resolve_config(ScratchConfig, config_file="run.yaml", overrides={"epochs": 5})

Precedence: dataclass defaults < `--config` YAML < command-line flags (the CLI passes only
the flags the user gave). Unknown keys and bad values are errors that name the key. The
resolved config is saved as `RUN/config.json`, and `--resume` rebuilds the run from it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import FastinatError, UsageError
from .paths import DEFAULT_DATA

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Options shared by `fastinat scratch` and `fastinat finetune`."""

    # data
    data: str = str(DEFAULT_DATA)  # dataset root: train/<class>/ and val/<class>/ (the TEST set)
    size: int = 224  # square input size in pixels
    bs: int = 64  # batch size (per process)
    augment: bool = True  # random resized crop, rotation, flip, lighting on the training set
    valid_pct: float = 0.2  # share of every class of train/ held out for validation
    seed: int = 42  # seeds the split, the weights, the augmentation and the shuffling
    workers: int | None = None  # loader processes (None: one per CPU core, at most 8)
    presize: bool = False  # read images from the presize cache (made once, outside the dataset)
    # training
    epochs: int = 10  # epochs of the one-cycle schedule
    lr: float | str = 1e-3  # peak learning rate, or "auto" (lr_find's suggestion)
    patience: int | None = None  # early stopping after this many epochs without a better valid accuracy
    precision: str = "auto"  # auto: fp16 mixed precision on CUDA, fp32 on CPU; or fp32/fp16/bf16
    # output and logging
    out: str = "runs"  # parent folder of run folders
    name: str | None = None  # run folder name (None: <command>-<timestamp>)
    wandb: bool = True  # log to W&B (offline without credentials; WANDB_MODE=disabled turns it off)
    project: str = "fastinat"  # W&B project
    entity: str | None = None  # W&B entity (team or user)

    command = "train"

    def validate(self) -> None:
        """Raise FastinatError (exit 2: a usage mistake) naming the first bad value."""
        checks = [
            (self.size is None or self.size >= 1, "size must be a positive number of pixels"),
            (self.bs >= 1, "bs must be at least 1"),
            (0 <= self.valid_pct < 1, "valid-pct must be at least 0 and below 1"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.workers is None or self.workers >= 0, "workers must be 0 or more"),
            (self.patience is None or self.patience >= 0, "patience must be 0 or more"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.lr == "auto" or (isinstance(self.lr, float) and self.lr > 0),
             "lr must be a positive number or 'auto'"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"Bad option: {message}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def total_epochs(self) -> int:
        return self.epochs


@dataclass
class ScratchConfig(TrainConfig):
    """`fastinat scratch`: the Part A CNN (see fastinat.models.cnn)."""

    filters: list[int] | None = None  # filter count per block (None: 32 64 128 256 512, or the organisation below)
    filter_base: int | None = None  # with filter_org and depth instead of filters: e.g. 32 double 5
    filter_org: str | None = None  # same, double or halve
    depth: int | None = None  # number of conv blocks for filter_base/filter_org (default 5)
    kernel_sizes: list[int] = dataclasses.field(default_factory=lambda: [3])  # one, or one per block
    activation: str = "relu"  # relu, elu, silu, gelu or mish
    batchnorm: bool = True  # batch norm after every conv
    dropout: float = 0.2  # dropout before the classifier
    dense_units: int = 256  # width of the dense layer before the classifier
    padding: str = "same"  # same, or valid (no padding, as in the original assignment)
    l2: float = 0.0  # coupled L2 penalty on every trainable parameter (original space: 0, 5e-5, 5e-4)

    command = "scratch"

    def validate(self) -> None:
        super().validate()
        if self.l2 < 0:
            raise UsageError("Bad option: l2 must be 0 or more.")
        from .models.cnn import cnn_config

        cnn_config(2, **self.model_options())  # the model options' own checks (names, ranges)

    def model_options(self) -> dict:
        return {k: getattr(self, k) for k in ("filters", "filter_base", "filter_org", "depth",
                                              "kernel_sizes", "activation", "batchnorm", "dropout",
                                              "dense_units", "padding")}


@dataclass
class FinetuneConfig(TrainConfig):
    """`fastinat finetune`: a timm backbone with a new fastai head (see fastinat.learner)."""

    size: int | None = None  # None: the backbone's own input size (299 for inception_v3 and xception)
    arch: str = "resnet50"  # any name in timm.list_models()
    pretrained: bool = True  # ImageNet weights through timm / the Hugging Face cache
    weights: str | None = None  # a local safetensors file or PyTorch state dict for the backbone
    freeze: str = "head"  # head, last:K, none or gradual
    freeze_epochs: int = 1  # gradual: head-only epochs before everything unfreezes (then --epochs more)
    train_bn: bool = True  # frozen batch-norm layers still train (fastai's train_bn)
    dense_units: list[int] = dataclasses.field(default_factory=lambda: [512])  # hidden layers of the head
    dropout: float = 0.5  # dropout of the head's last layer (fastai's ps; half of it before the others)
    wd: float = 0.01  # decoupled weight decay (AdamW-style, fastai's default)
    cache_features: bool = False  # freeze=head: run the backbone once, train the head on saved features
    feature_views: int = 1  # with augment and cache_features: augmented views cached per image

    command = "finetune"

    def validate(self) -> None:
        super().validate()
        from .models.backbones import parse_freeze

        mode, _ = parse_freeze(self.freeze)
        checks = [
            (self.freeze_epochs >= 1, "freeze-epochs must be at least 1"),
            (all(u >= 1 for u in self.dense_units), "dense-units must be positive widths"),
            (0 <= self.dropout < 1, "dropout must be at least 0 and below 1"),
            (self.wd >= 0, "wd must be 0 or more"),
            (self.feature_views >= 1, "feature-views must be at least 1"),
            (not self.cache_features or mode == "head",
             "cache-features needs --freeze head (a backbone that trains changes its features)"),
            (not self.cache_features or self.augment or self.feature_views == 1,
             "feature-views needs --augment (without it every view is the same)"),
            (self.pretrained or not self.weights,
             "weights loads pretrained weights from a file; drop --no-pretrained"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"Bad option: {message}.")

    @property
    def gradual(self) -> bool:
        from .models.backbones import parse_freeze

        return parse_freeze(self.freeze)[0] == "gradual"

    @property
    def total_epochs(self) -> int:
        """gradual trains freeze_epochs head-only epochs, then `epochs` more."""
        return self.epochs + (self.freeze_epochs if self.gradual else 0)


def _coerce(name: str, value, tp):
    """Convert a YAML/CLI value to the field's type, or raise FastinatError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except FastinatError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"Bad option {name}: expected a list, got {value!r}.")
        return [_coerce(name, v, item) for v in value]
    try:
        if tp is bool:
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            if isinstance(value, bool):
                return value
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        kind = getattr(tp, "__name__", str(tp))
        raise UsageError(f"Bad option {name}: expected {kind}, got {value!r}.") from None
    return value


def load_yaml(path: str | Path) -> dict:
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


T = typing.TypeVar("T", bound=TrainConfig)


def resolve_config(cls: type[T], config_file: str | Path | None = None,
                   overrides: dict | None = None) -> T:
    """Defaults < YAML file < overrides (None values are ignored); validated."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    values: dict = {}
    sources = ([load_yaml(config_file)] if config_file else []) + [overrides or {}]
    for source in sources:
        for key, value in source.items():
            name = str(key).replace("-", "_")
            if name not in known:
                import difflib

                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise UsageError(f"Unknown option {key!r}{hint}.")
            if value is None and source is overrides:
                continue
            values[name] = _coerce(name.replace("_", "-"), value, hints[name])
    cfg = cls(**values)
    cfg.validate()
    return cfg
