"""Cached backbone features: train a frozen backbone's head without running the backbone again.

    learn = finetune_learner(dls, "resnet50", freeze="head", train_bn=False)
    head = cached_learner(learn)        # backbone runs once; later runs read the cache
    head.fit_one_cycle(5, 1e-3)         # trains the head's layers on the saved features
    head.saved_model                    # the full network (backbone + trained head)

With `--freeze head` and frozen batch norm, the backbone is a fixed function, and so is the
pooling at the start of fastai's head: the pooled features of an image never change. They
are computed once for train, valid and TEST and stored in the fastinat cache (never in the
dataset) under a key made of everything that could change them: the backbone's tensors
(hashed), the architecture and its options, the input size and normalisation, the exact
files (path, size, mtime) of each split, and the augmentation (with `views` augmented
passes over train/, epoch e trains on view e % views; the seed is part of the key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.torch_core import get_random_states, set_random_states
from torch import nn

from .data.workers import close_all_workers
from .errors import UsageError
from .io import save_safetensors
from .paths import cache_dir
from .progress import progress_task

FORMAT = "fastinat-features/1"


class FeatureDataset:
    """(feature, label) pairs; `view` picks one of the cached augmented views of train/."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features = features if features.dim() == 3 else features[None]  # (views, n, dim)
        self.labels, self.view = labels, 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.features[self.view, i], self.labels[i]


class ViewCycle(Callback):
    """Epoch e trains on the cached augmented view e % views."""

    def __init__(self, dataset: FeatureDataset):
        self.dataset = dataset

    def before_epoch(self) -> None:
        self.dataset.view = self.epoch % len(self.dataset.features)


def split_head(model: nn.Module) -> tuple[list[nn.Module], nn.Sequential]:
    """fastai's head -> (its leading parameter-free modules (pooling, flatten), the rest)."""
    head = model[1]
    n = 0
    while n < len(head) and not any(True for _ in head[n].parameters()):
        n += 1
    return list(head[:n]), nn.Sequential(*head[n:])


def _tensor_digest(module: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _files_digest(files: list[Path]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        st = Path(f).stat()
        h.update(f"{Path(f).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def augments(dls) -> bool:
    """Whether the training loader of `dls` augments its images."""
    return any(getattr(t, "augment", False) for t in dls.train.after_item.fs)


def augment_policy(dls) -> str:
    """The augmentation policy of the training loader of `dls` (standard or strong)."""
    return next((t.policy for t in dls.train.after_item.fs if getattr(t, "augment", False)), "standard")


def feature_key(learn, views: int, seed: int | None) -> dict:
    """Everything the cached features depend on (hashed into the cache file name)."""
    info = learn.dls.inat
    prefix, _ = split_head(learn.model)
    augment = augments(learn.dls)
    policy = augment_policy(learn.dls) if augment else "standard"
    return {
        "format": FORMAT, "arch": learn.card.get("arch"), "model": learn.card.get("model"),
        "backbone": _tensor_digest(learn.model[0]), "pooling": [repr(m) for m in prefix],
        "size": info.size, "normalize": info.stats,
        "train": _files_digest(info.train_files), "valid": _files_digest(info.valid_files),
        "test": _files_digest(info.test_files),
        "augment": augment, "views": views if augment else 1, "seed": seed if augment else None,
        **({"policy": policy} if policy != "standard" else {}),  # standard: the key of older caches
        "torch": torch.__version__,
    }


@torch.no_grad()
def _features(extractor: nn.Module, dl, desc: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    with progress_task(desc, len(dl), progress) as advance:
        for xb, yb in dl:
            feats.append(extractor(xb).float().cpu())
            labels.append(yb.cpu())
            advance(1)
    return torch.cat(feats), torch.cat(labels).long()


def compute_features(learn, views: int = 1, progress: bool = True) -> dict[str, torch.Tensor]:
    """Pooled backbone features of train (`views` passes), valid and TEST, with their labels."""
    from .data.loaders import test_dataloader

    prefix, _ = split_head(learn.model)
    extractor = nn.Sequential(learn.model[0], *prefix).to(learn.dls.device).eval()
    dls = learn.dls
    train_dl = dls.train.new(shuffle=False, drop_last=False)
    out: dict[str, torch.Tensor] = {}
    passes = []
    for v in range(views):
        feats, out["train_y"] = _features(extractor, train_dl, f"Features: train/ view {v + 1}/{views}"
                                          if views > 1 else "Features: train", progress)
        passes.append(feats)
    out["train"] = torch.stack(passes)
    for name, dl in (("valid", dls.valid), ("test", test_dataloader(dls))):
        if len(dl.dataset):
            out[name], out[f"{name}_y"] = _features(extractor, dl, f"Features: {name}", progress)
        else:
            out[name], out[f"{name}_y"] = torch.zeros(0, out["train"].shape[-1]), torch.zeros(0).long()
    return out


@contextmanager
def rng_unchanged() -> Iterator[None]:
    """Restore the random states on exit (fastai's `get_random_states`: Python, NumPy, torch
    CPU and CUDA, cuDNN flags), so that a run that computes its features and one that reads
    them from the cache go on with the same random streams."""
    state = get_random_states()
    try:
        yield
    finally:
        set_random_states(**state)


def load_or_compute(learn, views: int = 1, seed: int | None = None, progress: bool = True,
                    console=None) -> tuple[dict[str, torch.Tensor], Path]:
    """The cached features for `learn` (computed and saved on a miss) and their cache file
    (None when the cache folder cannot be written: the run goes on without the cache)."""
    from safetensors.torch import load_file

    views = views if augments(learn.dls) else 1
    key = feature_key(learn, views, seed)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_dir("features", f"{key['arch']}-{key['size']}px-{digest}.safetensors")
    if path.is_file():
        try:
            return load_file(str(path)), path
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
            path.unlink(missing_ok=True)
    if console is not None:
        console.print(f"Computing backbone features once (cached in {path.parent}).", highlight=False)
    feats = compute_features(learn, views, progress)
    close_all_workers()  # the image loaders' pools: training reads the features from memory
    meta = {"key": json.dumps(key, default=str)}
    try:
        save_safetensors(feats, path, meta)
    except OSError as e:  # a full or read-only cache: this run keeps its features in memory
        import warnings

        why = getattr(e, "reason", None) or e.strerror or e
        warnings.warn(f"Not caching the backbone features: cannot write {path} ({why}); this run keeps "
                      "them in memory.", stacklevel=2)
        return feats, None
    return feats, path


def cached_learner(learn, *, views: int = 1, seed: int | None = None, progress: bool = True,
                   console=None) -> Learner:
    """A Learner that trains `learn`'s head layers on cached backbone features.

    `learn` must have a frozen backbone in eval mode (`freeze="head", train_bn=False`). The
    returned Learner's model is the head after pooling; it shares its modules with
    `learn.model`, which it exposes as `saved_model` (what the run saves), and its loaders
    carry `inat`, `vocab` and a `test_loader` over the TEST features.

    Raises:
        UsageError: a backbone parameter trains (batch norm included).
    """
    trainable = [n for n, p in learn.model[0].named_parameters() if p.requires_grad]
    if trainable:
        raise UsageError(f"Cached features need a fully frozen backbone, but {trainable[0]} trains: "
                         "use freeze='head' with train_bn=False (--freeze head --no-train-bn).")
    with rng_unchanged():
        feats, path = load_or_compute(learn, views, seed, progress, console)
    _, head = split_head(learn.model)
    dls, device = learn.dls, learn.dls.device
    train_ds = FeatureDataset(feats["train"], feats["train_y"])
    valid_ds = FeatureDataset(feats["valid"], feats["valid_y"])
    test_ds = FeatureDataset(feats["test"], feats["test_y"])
    fdls = DataLoaders(DataLoader(train_ds, bs=dls.bs, shuffle=True, drop_last=len(train_ds) >= dls.bs,
                                  device=device),
                       DataLoader(valid_ds, bs=dls.bs, device=device), device=device)
    fdls.inat, fdls.vocab, fdls.c = dls.inat, dls.vocab, len(dls.vocab)
    fdls.test_loader = DataLoader(test_ds, bs=dls.bs, device=device)
    fdls.feature_cache = path
    cbs = [ViewCycle(train_ds)] if len(train_ds.features) > 1 else []
    head_learn = Learner(fdls, head, loss_func=learn.loss_func, metrics=learn.metrics,
                         opt_func=learn.opt_func, lr=learn.lr, wd=learn.wd,
                         wd_bn_bias=learn.wd_bn_bias, train_bn=True, moms=learn.moms, cbs=cbs)
    head_learn.card = learn.card
    head_learn.saved_model = learn.model
    return head_learn
