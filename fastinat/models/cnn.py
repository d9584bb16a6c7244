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

import difflib
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import FastinatError

#: Activation name -> module class. `silu` is the real nn.SiLU (not SELU).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "mish": nn.Mish,
}
FILTER_ORGS = ("same", "double", "halve")
PADDINGS = ("same", "valid")


def organise_filters(base: int, org: str, depth: int) -> tuple[int, ...]:
    """Filter counts for `depth` blocks from a base count: same, double or halve each block."""
    if org not in FILTER_ORGS:
        raise FastinatError(f"Unknown filter organisation {org!r}; choose one of {', '.join(FILTER_ORGS)}.")
    if base < 1 or depth < 1:
        raise FastinatError(f"The filter base and depth must be at least 1, got {base} and {depth}.")
    factor = {"same": 1.0, "double": 2.0, "halve": 0.5}[org]
    return tuple(max(1, int(round(base * factor**i))) for i in range(depth))


def _unknown(kind: str, name: str, known) -> FastinatError:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return FastinatError(f"Unknown {kind} {name!r}{hint}; choose one of {', '.join(known)}.")


@dataclass
class CNNConfig:
    """Everything that defines a scratch CNN; saved in the model card to rebuild it."""

    n_classes: int
    filters: tuple[int, ...] = (32, 64, 128, 256, 512)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3, 3)
    activation: str = "relu"
    batchnorm: bool = True
    dropout: float = 0.2
    dense_units: int = 256
    in_channels: int = 3
    padding: str = "same"
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
            raise FastinatError(
                f"Images of {size} px are too small for {len(self.filters)} blocks with kernels "
                f"{list(self.kernel_sizes)} and {self.padding} padding; use --size {need} or more."
            )


def cnn_config(
    n_classes: int,
    filters=None,
    kernel_sizes=3,
    activation: str = "relu",
    batchnorm: bool = True,
    dropout: float = 0.2,
    dense_units: int = 256,
    in_channels: int = 3,
    padding: str = "same",
    filter_base: int | None = None,
    filter_org: str | None = None,
    depth: int | None = None,
) -> CNNConfig:
    """Validate the options and resolve filters/kernels into a `CNNConfig`.

    Raises:
        FastinatError: a bad value (unknown activation, negative dropout, lists of different
            lengths, ...), in one sentence.
    """
    if filters is not None and (filter_base is not None or filter_org is not None):
        raise FastinatError("Give either a filter list or a filter base/organisation, not both.")
    if filters is None:
        if filter_base is not None or filter_org is not None or depth is not None:
            filters = organise_filters(filter_base or 32, filter_org or "double", depth or 5)
        else:
            filters = (32, 64, 128, 256, 512)
    filters = tuple(int(f) for f in filters)
    if not filters or min(filters) < 1:
        raise FastinatError(f"Filter counts must be positive integers, got {list(filters)}.")
    if depth is not None and len(filters) != depth:
        raise FastinatError(f"--depth {depth} does not match the {len(filters)} filter counts given.")
    if isinstance(kernel_sizes, int):
        kernel_sizes = (kernel_sizes,) * len(filters)
    kernel_sizes = tuple(int(k) for k in kernel_sizes)
    if len(kernel_sizes) == 1:
        kernel_sizes = kernel_sizes * len(filters)
    if len(kernel_sizes) != len(filters):
        raise FastinatError(
            f"Got {len(kernel_sizes)} kernel sizes for {len(filters)} blocks; give one size, "
            "or one per block."
        )
    if min(kernel_sizes) < 1:
        raise FastinatError(f"Kernel sizes must be positive, got {list(kernel_sizes)}.")
    if padding == "same" and any(k % 2 == 0 for k in kernel_sizes):
        raise FastinatError(f"Same padding needs odd kernel sizes, got {list(kernel_sizes)}.")
    activation = str(activation).lower()
    if activation not in ACTIVATIONS:
        raise _unknown("activation", activation, ACTIVATIONS)
    if padding not in PADDINGS:
        raise _unknown("padding", padding, PADDINGS)
    if not 0 <= float(dropout) < 1:
        raise FastinatError(f"Dropout must be at least 0 and below 1, got {dropout}.")
    if int(dense_units) < 1 or int(n_classes) < 2 or int(in_channels) < 1:
        raise FastinatError(
            f"Dense units and input channels must be positive and there must be at least 2 "
            f"classes, got dense_units={dense_units}, in_channels={in_channels}, n_classes={n_classes}."
        )
    return CNNConfig(int(n_classes), filters, kernel_sizes, activation, bool(batchnorm),
                     float(dropout), int(dense_units), int(in_channels), padding)


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


def build_cnn(n_classes: int, filters=None, kernel_sizes=3, activation: str = "relu",
              batchnorm: bool = True, dropout: float = 0.2, dense_units: int = 256,
              in_channels: int = 3, padding: str = "same", filter_base: int | None = None,
              filter_org: str | None = None, depth: int | None = None) -> ScratchCNN:
    """Build the Part A CNN (see the module docstring); options are checked first.

    Raises:
        FastinatError: a bad option value.
    """
    return ScratchCNN(cnn_config(n_classes, filters, kernel_sizes, activation, batchnorm, dropout,
                                 dense_units, in_channels, padding, filter_base, filter_org, depth))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
