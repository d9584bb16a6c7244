"""Every option of every command, defined once: the one commented place where defaults live.

    from fastinat.options import resolve
    cfg = resolve(ScratchConfig, config_file="run.yaml", overrides={"epochs": 5})

Each field is an `option(default, help, panel, range/choices...)` (see `fastinat.options`):
the CLI flags and their --help, the `--config` YAML keys, the sweep checks, `config.json`
and the model card all read it from here. Precedence: defaults < `--config` YAML <
command-line flags (the CLI passes only the flags the user gave). `--resume` rebuilds a run
from its `RUN/config.json`. Rules that tie options together are the configs' `validate()`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import UsageError, plural
from .options import option
from .paths import DATASET_BYTES, DEFAULT_DATA, DEFAULT_DEMO
from .presets import presets

DATA, TRAINING, RECIPES, OUTPUT = "Data", "Training", "Accuracy recipes", "Output and logging"
CNN, BACKBONE = "Model (Part A CNN)", "Model (Part B backbone and head)"

MAX_WORKERS = 16  # loader processes (threads) at most, whatever the core count (fastinat.perf)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ACTIVATIONS = ("relu", "elu", "silu", "gelu", "mish")  # fastinat.models.cnn maps them to modules
FILTER_ORGS = ("same", "double", "halve")
PADDINGS = ("same", "valid")
FILTER_BASE, FILTER_ORG, DEPTH = 32, "double", 5  # the CNN's blocks when no --filters are given
AUGMENT_POLICIES = ("standard", "strong")  # fastinat.data.augment.InatAugment
#: Test-time augmentation (--tta): the views `fastinat.data.augment.tta_pixels` makes of an image,
#: in order. The corner views are input-size corners of the centre square resized to
#: round(size * TTA_ZOOM) (224 -> 256, the classic "resize 256, crop 224").
TTA_VIEWS = ("centre", "centre flipped", "top-left", "top-right", "bottom-left", "bottom-right")
TTA_ZOOM = 8 / 7
TTA_HELP = (f"Test-time augmentation: average the softmax probabilities of {len(TTA_VIEWS)} views "
            "(the plain one, its mirror image, and the 4 corner crops of an 8/7 larger resize)")
SEPARATE = ", reported as separate *_tta numbers next to the plain ones."


class Config:
    """What every config dataclass can do."""

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Rules between options (each option's own range is checked by `resolve`)."""


# -- scratch and finetune -------------------------------------------------------------------------

@dataclass
class DataConfig(Config):
    """The loaders' options (`fastinat.data.loaders.inat_dataloaders` reads its defaults here)."""

    data: str = option(str(DEFAULT_DATA), "Dataset folder with train/<class>/ and val/<class>/ "
                       "(val/ is the TEST set).", DATA, path=True)
    size: int = option(224, "Square input size in pixels.", DATA, min=1)
    bs: int = option(64, "Batch size (per process).", DATA, min=1)
    augment: bool = option(True, "Augment the training set (see --augment-policy).", DATA)
    augment_policy: str = option("standard", "With --augment: standard (random resized crop, small "
                                 "rotation, flip, lighting) or strong (standard crop and flip, then 2 "
                                 "RandAugment-style ops of random magnitude, then random erasing).",
                                 DATA, choices=AUGMENT_POLICIES)
    valid_pct: float = option(0.2, "Share of every class of train/ held out for validation "
                              "(seeded, stratified).", DATA, min=0, below=1)
    seed: int = option(42, "Seed of the split, weights, augmentation and shuffling.", DATA)
    workers: int | None = option(None, "Loader processes.", DATA, min=0,
                                 shown=f"the CPU cores shared by the run's processes, at most {MAX_WORKERS}")
    presize: bool = option(False, "Read small copies of the images, made once in a cache outside "
                           "the dataset.", DATA)

    def validate(self) -> None:
        if self.augment_policy != "standard" and not self.augment:
            raise UsageError(f"Bad options: --augment-policy {self.augment_policy} needs --augment "
                             "(drop --no-augment).")


@dataclass
class TrainConfig(DataConfig):
    """Options shared by `fastinat scratch` and `fastinat finetune`."""

    epochs: int = option(10, "Epochs of the one-cycle schedule.", TRAINING, min=1)
    lr: float | str = option(1e-3, "Peak learning rate, or auto to run lr_find and use its "
                             "suggestion.", TRAINING, above=0, choices=("auto",))
    patience: int | None = option(None, "Stop after this many epochs without a better valid "
                                  "accuracy.", TRAINING, min=0)
    precision: str = option("auto", "auto (fp16 mixed precision on CUDA, fp32 on CPU), fp32, fp16 "
                            "or bf16.", TRAINING, choices=PRECISIONS)
    tta: bool = option(False, TTA_HELP + " in the final valid and TEST evaluation" + SEPARATE, TRAINING)
    out: str = option("runs", "Parent folder of run folders.", OUTPUT, path=True)
    name: str | None = option(None, "Run folder name.", OUTPUT, shown="<command>-<timestamp>")
    wandb: bool = option(True, "Log to Weights & Biases: online with credentials, else offline "
                         "into RUN/wandb (upload later with `wandb sync`); never a login prompt.", OUTPUT)
    project: str = option("fastinat", "W&B project.", OUTPUT)
    entity: str | None = option(None, "W&B entity (user or team).", OUTPUT, shown="yours")
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy loss (fastai's "
                                    "LabelSmoothingCrossEntropyFlat); 0: plain cross-entropy.",
                                    RECIPES, min=0, below=1)
    mixup: float = option(0.0, "MixUp: blend each training batch with a shuffled copy, inputs and "
                          "targets, weight ~ Beta(ALPHA, ALPHA); 0: off. With --cutmix too, each "
                          "batch takes one of the two at random.", RECIPES, min=0)
    cutmix: float = option(0.0, "CutMix: paste a box of a shuffled copy into each training batch, "
                           "targets weighted by area, box area ~ Beta(ALPHA, ALPHA); 0: off.",
                           RECIPES, min=0)
    ema: float = option(0.0, "Exponential moving average of the weights with this decay (timm's "
                        "ModelEmaV3, warmed up over the first steps); validated every epoch, and "
                        "the best and saved weights are the average's. 0: off.", RECIPES, min=0, below=1)
    progressive: list[int] | None = option(None, "Progressive resizing: training image sizes that "
                                           "grow over equal shares of the epochs, e.g. 128,192,224. "
                                           "The last one is the validation and evaluation size and "
                                           "replaces --size.", RECIPES, min=1, shown="off")

    command = "train"

    def validate(self) -> None:
        if self.progressive:
            if len(self.progressive) > self.total_epochs:
                raise UsageError(f"Bad options: --progressive gives {plural(len(self.progressive), 'size')} for "
                                 f"{plural(self.total_epochs, 'epoch')}; give at most one size per epoch.")
            self.size = self.progressive[-1]
        super().validate()

    def train_size(self, epoch: int) -> int:
        """The training image size of `epoch` (0-based): --progressive's share, else --size."""
        if not self.progressive:
            return self.size
        return self.progressive[min(len(self.progressive) - 1, epoch * len(self.progressive) // self.total_epochs)]

    @property
    def total_epochs(self) -> int:
        return self.epochs


def organise_filters(base: int, org: str, depth: int) -> tuple[int, ...]:
    """Filter counts for `depth` blocks from a base count: same, double or halve each block."""
    if org not in FILTER_ORGS:
        raise UsageError(f"Unknown filter organisation {org!r}; choose one of {', '.join(FILTER_ORGS)}.")
    if base < 1 or depth < 1:
        raise UsageError(f"The filter base and depth must be at least 1, got {base} and {depth}.")
    factor = {"same": 1.0, "double": 2.0, "halve": 0.5}[org]
    return tuple(max(1, int(round(base * factor**i))) for i in range(depth))


@dataclass
class CNNOptions(Config):
    """The Part A CNN's shape (`fastinat.models.cnn.build_cnn` reads its defaults here)."""

    filters: list[int] | None = option(None, "Filter count per block, e.g. 32,64,128,256,512 "
                                       "(instead of --filter-base/--filter-org/--depth).", CNN, min=1,
                                       shown=",".join(map(str, organise_filters(FILTER_BASE, FILTER_ORG, DEPTH))))
    filter_base: int | None = option(None, "Base filter count for --filter-org (instead of "
                                     "--filters).", CNN, min=1, shown=str(FILTER_BASE))
    filter_org: str | None = option(None, "Filter organisation over --depth blocks (e.g. 32 double "
                                    "5 -> 32,64,128,256,512).", CNN, choices=FILTER_ORGS, shown=FILTER_ORG)
    depth: int | None = option(None, "Number of conv blocks for --filter-org.", CNN, min=1, shown=str(DEPTH))
    kernel_sizes: list[int] = option([3], "Kernel size, one for all blocks or one per block, e.g. "
                                     "3,5,3,5,3.", CNN, factory=True, min=1)
    activation: str = option("relu", "Activation after every conv and the dense layer.", CNN,
                             choices=ACTIVATIONS)
    batchnorm: bool = option(True, "Batch norm after every conv.", CNN)
    dropout: float = option(0.2, "Dropout before the classifier.", CNN, min=0, below=1)
    dense_units: int = option(256, "Width of the dense layer.", CNN, min=1)
    padding: str = option("same", "same, or valid (no padding, as in the original assignment).",
                          CNN, choices=PADDINGS)

    def blocks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(filters, kernel size) per block, from --filters or --filter-base/--filter-org/--depth."""
        if self.filters is not None and (self.filter_base is not None or self.filter_org is not None):
            raise UsageError("Give either --filters or --filter-base/--filter-org, not both.")
        if self.filters is None:
            filters = organise_filters(FILTER_BASE if self.filter_base is None else self.filter_base,
                                       self.filter_org or FILTER_ORG,
                                       DEPTH if self.depth is None else self.depth)
        else:
            filters = tuple(self.filters)
        if not filters:
            raise UsageError("--filters needs at least one filter count.")
        if self.depth is not None and len(filters) != self.depth:
            raise UsageError(f"--depth {self.depth} does not match the {len(filters)} filter counts given.")
        kernels = tuple(self.kernel_sizes) * (len(filters) if len(self.kernel_sizes) == 1 else 1)
        if len(kernels) != len(filters):
            raise UsageError(f"Got {len(kernels)} kernel sizes for {len(filters)} blocks; give one "
                             "size, or one per block.")
        if self.padding == "same" and any(k % 2 == 0 for k in kernels):
            raise UsageError(f"Same padding needs odd kernel sizes, got {list(kernels)}.")
        return filters, kernels

    def validate(self) -> None:
        self.blocks()
        super().validate()


@dataclass
class ScratchConfig(CNNOptions, TrainConfig):
    """`fastinat scratch`: the Part A CNN (see fastinat.models.cnn)."""

    l2: float = option(0.0, "Coupled L2 penalty (classic L2 regularisation, not decoupled weight "
                       "decay): l2*w is added to the gradient of every trainable parameter, head "
                       "and biases included. Original space: 0, 5e-5, 5e-4.", CNN, min=0)

    command = "scratch"


def parse_freeze(mode: str) -> tuple[str, int | None]:
    """'head' | 'none' | 'gradual' -> (mode, None); 'last:K' -> ('last', K)."""
    mode = str(mode).strip().lower()
    if mode in ("head", "none", "gradual"):
        return mode, None
    m = re.fullmatch(r"last:(\d+)", mode)
    if m and int(m.group(1)) >= 1:
        return "last", int(m.group(1))
    raise UsageError(f"Unknown freeze mode {mode!r}; use head, last:K (K >= 1), none or gradual.")


def _no_file(path: str) -> str | None:
    return None if Path(path).is_file() else f"no such file {path}"


def _freeze_problem(mode: str) -> str | None:
    try:
        parse_freeze(mode)
    except UsageError as e:
        return str(e)[0].lower() + str(e)[1:-1]
    return None


@dataclass
class FinetuneConfig(TrainConfig):
    """`fastinat finetune`: a timm backbone with a new fastai head (see fastinat.learner)."""

    size: int | None = option(None, "Square input size in pixels.", DATA, min=1,
                              shown="the backbone's own, e.g. 224 for resnet50, 299 for "
                                    "inception_v3 and xception")
    arch: str = option("resnet50", "Any timm architecture: resnet50, legacy_xception, inception_v3, "
                       "efficientnet_b0, convnext_tiny, vit_small_patch16_224 ...", BACKBONE)
    pretrained: bool = option(True, "Start from ImageNet weights (downloaded by timm, or from the "
                              "Hugging Face cache offline).", BACKBONE)
    weights: str | None = option(None, "Load the backbone from a local safetensors file or PyTorch "
                                 "state dict instead (its classifier, if any, is dropped).", BACKBONE,
                                 path=True, shown="none", check=_no_file)
    freeze: str = option("head", "head: only the new head trains (plus the backbone's batch-norm "
                         "layers, see --train-bn); last:K: the head and the backbone's last K "
                         "stages; none: everything; gradual: head only for --freeze-epochs, then "
                         "everything with lr slice(lr/100, lr).", BACKBONE, check=_freeze_problem)
    freeze_epochs: int = option(1, "gradual: head-only epochs before unfreezing; --epochs more "
                                "follow.", BACKBONE, min=1)
    train_bn: bool = option(True, "Batch-norm layers of a frozen backbone still train (fastai's "
                            "train_bn); off keeps the frozen backbone exactly as loaded.", BACKBONE)
    dense_units: list[int] = option([512], "Hidden layer widths of the head; repeat for more layers "
                                    "(--dense-units 512 --dense-units 256), 0 for none.", BACKBONE,
                                    factory=True, min=0, repeat=True)
    dropout: float = option(0.5, "Dropout before the head's last layer (half of it before the "
                            "others).", BACKBONE, min=0, below=1)
    drop_path: float = option(0.0, "Stochastic depth: timm's drop_path_rate, the chance that a "
                              "residual block is skipped in training (rising to this rate in the "
                              "last block for most models); 0 keeps the model's default (off).",
                              BACKBONE, min=0, below=1)
    wd: float = option(0.01, "Decoupled weight decay (AdamW-style).", BACKBONE, min=0)
    cache_features: bool = option(False, "With --freeze head: run the backbone once, cache its "
                                  "pooled features outside the dataset, and train the head on them "
                                  "(backbone batch norm stays frozen).", BACKBONE)
    feature_views: int = option(1, "With --cache-features and --augment: augmented views cached "
                                "per training image; epoch e uses view e mod N.", BACKBONE, min=1)

    command = "finetune"

    def validate(self) -> None:
        cached = "--cache-features trains the head on backbone features computed once"
        rules = [
            (not self.cache_features or self.freeze_mode[0] == "head",
             "--cache-features needs --freeze head (a backbone that trains changes its features)"),
            (not self.cache_features or not (self.mixup or self.cutmix),
             f"{cached}; MixUp and CutMix mix the images themselves: drop --mixup/--cutmix or --cache-features"),
            (not self.cache_features or not self.progressive,
             f"{cached}, at one size: drop --progressive or --cache-features"),
            (not self.cache_features or self.augment or self.feature_views == 1,
             "--feature-views needs --augment (without it every view is the same)"),
            (self.pretrained or not self.weights,
             "--weights loads pretrained weights from a file; drop --no-pretrained"),
        ]
        for ok, message in rules:
            if not ok:
                raise UsageError(f"Bad options: {message}.")
        super().validate()

    @property
    def head_units(self) -> list[int]:
        """The head's hidden widths (0 stands for none)."""
        return [u for u in self.dense_units if u]

    @property
    def freeze_mode(self) -> tuple[str, int | None]:
        return parse_freeze(self.freeze)

    @property
    def gradual(self) -> bool:
        return self.freeze_mode[0] == "gradual"

    @property
    def total_epochs(self) -> int:
        """gradual trains freeze_epochs head-only epochs, then `epochs` more."""
        return self.epochs + (self.freeze_epochs if self.gradual else 0)


TRAIN_CONFIGS: dict[str, type[TrainConfig]] = {"scratch": ScratchConfig, "finetune": FinetuneConfig}


# -- the other commands ---------------------------------------------------------------------------

SWEEP, W_AND_B, INFERENCE = "Sweep", "W&B backend", "Inference"


@dataclass
class SweepOptions(Config):
    """`fastinat sweep` (see fastinat.sweeps)."""

    backend: str | None = option(None, "local (Optuna, offline) or wandb (W&B sweeps, online).",
                                 SWEEP, choices=("local", "wandb"),
                                 shown="wandb with W&B credentials, else local")
    count: int | None = option(None, "Total finished trials wanted (a resumed sweep counts the ones "
                               "it has; 0 with --resume: only print and rewrite its results).", SWEEP,
                               min=0, shown="the config's run_cap, else the grid's size, else 10")
    data: str | None = option(None, "Dataset for every trial.", SWEEP, path=True,
                              shown=f"the config's, else {DEFAULT_DATA}")
    epochs: int | None = option(None, "Epochs of every trial (overrides the config).", SWEEP, min=1,
                                shown="the config's")
    size: int | None = option(None, "Image size of every trial (overrides the config).", SWEEP, min=1,
                              shown="the config's")
    out: str = option("runs/sweeps", "Parent folder of sweep folders.", SWEEP, path=True)
    name: str | None = option(None, "Sweep folder name.", SWEEP, shown="<config>-<timestamp>")
    storage: str | None = option(None, "local: an Optuna storage URL shared by several processes or "
                                 "machines, e.g. postgresql://user@host/db (needs the "
                                 "postgres extra); give every machine the same --name.", SWEEP,
                                 shown="SWEEP/study.db")
    resume: str | None = option(None, "Continue a sweep folder.", SWEEP, path=True, shown="none")
    seed: int = option(0, "Seed of the local sampler.", SWEEP)
    join: str | None = option(None, "Join a W&B sweep by id (entity/project/id) as one more agent.",
                              W_AND_B, shown="none")
    project: str = option("fastinat", "W&B project (wandb backend).", W_AND_B)
    entity: str | None = option(None, "W&B entity (wandb backend).", W_AND_B, shown="yours")


@dataclass
class InferenceOptions(Config):
    bs: int = option(64, "Images per forward pass.", INFERENCE, min=1)


@dataclass
class EvaluateOptions(InferenceOptions):
    """`fastinat evaluate` (see fastinat.report.evaluate)."""

    data: str | None = option(None, "Dataset folder.", INFERENCE, path=True,
                              shown="the one the run was trained on, from RUN/config.json")
    split: str = option("test", "test (val/, the held-out TEST set) or valid (the run's validation "
                        "split of train/).", INFERENCE, choices=("test", "valid"))
    tta: bool = option(False, TTA_HELP + SEPARATE, INFERENCE)


@dataclass
class PredictOptions(InferenceOptions):
    """`fastinat predict` (see fastinat.inference.predict)."""

    top_k: int = option(3, "Most likely classes to show per image.", INFERENCE, min=1)
    tta: bool = option(False, TTA_HELP + "; the averaged probabilities are shown.", INFERENCE)


EXPLAIN_METHODS = ("gradcam", "guided-backprop", "filters", "feature-maps")


@dataclass
class ExplainOptions(Config):
    """`fastinat explain` (see fastinat.explain)."""

    method: str = option("gradcam", "gradcam, guided-backprop, filters or feature-maps.", INFERENCE,
                         choices=EXPLAIN_METHODS)
    layer: str | None = option(None, "Layer for gradcam and feature-maps (see --list-layers).",
                               INFERENCE, shown="the last conv block")
    target: str | None = option(None, "Class to explain.", INFERENCE, shown="the predicted one")


SOURCE, FILES = "Source", "Files"


def _http(url: str) -> str | None:
    return None if url.lower().startswith(("http://", "https://")) else f"{url!r} is not a valid http(s) URL"


@dataclass
class DownloadOptions(Config):
    """`fastinat data download` (see fastinat.data.download)."""

    url: str | None = option(None, "Download from this address instead (a mirror).", SOURCE,
                             shown="the public nature_12K.zip", check=_http)
    expected_bytes: int | None = option(None, "Size the file must have.", SOURCE, min=1,
                                        shown=f"{DATASET_BYTES:,} for the public URL, else the size "
                                              "the server announces")
    keep_zip: bool = option(False, "Keep nature_12K.zip after extracting it.", FILES)


REPORT = "Report"


@dataclass
class ReportOptions(Config):
    """`fastinat report` (see fastinat.html_report)."""

    out: str = option("report.html", "The HTML file to write: one page that opens offline.", REPORT,
                      path=True)
    explain: bool = option(True, "Grad-CAM on one TEST image per class and the first-layer filters "
                           "of the best run (loads its model; Grad-CAM needs its dataset).", REPORT)


REPRODUCE = "Reproduce"


@dataclass
class ReproduceOptions(Config):
    """`fastinat reproduce` (see fastinat.reproduce)."""

    data: str | None = option(None, "nature_12K folder (train/ and val/).", REPRODUCE, path=True,
                              shown=f"{DEFAULT_DATA}; with --quick the demo digits in {DEFAULT_DEMO}")
    quick: bool = option(False, "The same pipeline with small settings (32-64 px, 1-3 epochs, random "
                         "weights) on 20 train/ and 5 val/ images per class of the demo digits (or "
                         "of --data): a few minutes on a CPU. A check of the pipeline, not an "
                         "accuracy.", REPRODUCE)
    presets: list[str] = option(list(presets()), "Presets to run, in this order.", REPRODUCE,
                                factory=True, choices=tuple(presets()))
    out: str = option("results", "Folder for accuracy.md and accuracy.json.", REPRODUCE, path=True)
    runs: str = option("runs/reproduce", "Parent folder of the presets' run folders.", REPRODUCE,
                       path=True)
