"""Part A: a configurable CNN trained from random initialisation.

    model = build_cnn(10, filters=(32, 64, 128, 256, 512), kernel_sizes=[3, 5, 3, 5, 3],
                      activation="silu", batchnorm=True, dropout=0.2, dense_units=256)
    model = build_cnn(10, filter_base=32, filter_org="double", depth=5)   # 32, 64, ..., 512

One block per filter count: conv (kernel k) -> batch norm (optional) -> activation -> 2x2
max-pool. Then global average pooling, a dense layer -> activation -> dropout -> classifier.
`padding="same"` (default) keeps the size through each conv; `padding="valid"` is the
original assignment's no-padding variant, where every conv takes k-1 pixels off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..config import ACTIVATIONS as ACTIVATION_NAMES
from ..config import CNNOptions, organise_filters  # noqa: F401  (organise_filters: part of this API)
from ..errors import UsageError
from ..options import resolve

#: Activation name -> module class. `silu` is the real nn.SiLU (not SELU).
ACTIVATIONS: dict[str, type[nn.Module]] = dict(zip(ACTIVATION_NAMES, (nn.ReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Mish),
                                                   strict=True))


@dataclass(kw_only=True)
class CNNConfig:
    """The resolved shape of one scratch CNN; the model card saves it to rebuild the network.

    Its defaults are `CNNOptions`' (fastinat.config): build one with `cnn_config`.
    """

    n_classes: int
    filters: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    activation: str
    batchnorm: bool
    dropout: float
    dense_units: int
    in_channels: int = 3
    padding: str
    kind: str = field(default="cnn", init=False)

    def to_dict(self) -> dict:
        return asdict(self)

    def min_input_size(self) -> int:
        """The smallest square input for which every block still has at least 1 pixel."""
        size = 1
        for k in reversed(self.kernel_sizes):
            size = size * 2  # undo the 2x2 max-pool (floor division needs 2x)
            if self.padding == "valid":
                size += k - 1
        return size

    def check_input_size(self, size: int) -> None:
        need = self.min_input_size()
        if size < need:
            raise UsageError(
                f"Images of {size} px are too small for {len(self.filters)} blocks with kernels "
                f"{list(self.kernel_sizes)} and {self.padding} padding; use --size {need} or more."
            )


def cnn_config(n_classes: int, options: CNNOptions | None = None, *, in_channels: int = 3,
               **overrides) -> CNNConfig:
    """The CNN for `n_classes` from `options` (a `CNNOptions` or `ScratchConfig`; None: the
    defaults) with `overrides` (CNNOptions fields; None means the default) applied.

    Raises:
        UsageError: a bad value (unknown activation, negative dropout, lists of different
            lengths, ...), in one sentence.
    """
    opts = resolve(CNNOptions, overrides=overrides, base=options)
    if int(n_classes) < 2 or int(in_channels) < 1:
        raise UsageError(f"A CNN needs at least 2 classes and 1 input channel, got {n_classes} and "
                         f"{in_channels}.")
    filters, kernel_sizes = opts.blocks()
    return CNNConfig(n_classes=int(n_classes), filters=filters, kernel_sizes=kernel_sizes,
                     activation=opts.activation, batchnorm=opts.batchnorm, dropout=opts.dropout,
                     dense_units=opts.dense_units, in_channels=int(in_channels), padding=opts.padding)


class ConvBlock(nn.Sequential):
    """conv -> batch norm (optional) -> activation -> 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, k: int, act: type[nn.Module], batchnorm: bool, padding: str):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, k, padding=k // 2 if padding == "same" else 0, bias=not batchnorm)
        ]
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers += [act(), nn.MaxPool2d(2)]
        super().__init__(*layers)


class ScratchCNN(nn.Module):
    """The Part A network: `features` (conv blocks) then `head` (dense -> act -> dropout -> classifier)."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        act = ACTIVATIONS[cfg.activation]
        chans = (cfg.in_channels, *cfg.filters)
        self.features = nn.Sequential(*(
            ConvBlock(chans[i], chans[i + 1], k, act, cfg.batchnorm, cfg.padding)
            for i, k in enumerate(cfg.kernel_sizes)
        ))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(cfg.filters[-1], cfg.dense_units), act(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.dense_units, cfg.n_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nonlinearity = "relu" if cfg.activation == "relu" else "leaky_relu"
                nn.init.kaiming_normal_(m.weight, nonlinearity=nonlinearity)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_cnn(n_classes: int, options: CNNOptions | None = None, **overrides) -> ScratchCNN:
    """Build the Part A CNN (see the module docstring); `cnn_config` checks the options first.

    Raises:
        UsageError: a bad option value.
    """
    return ScratchCNN(cnn_config(n_classes, options, **overrides))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
