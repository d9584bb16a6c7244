"""Inference from a run folder, without fastai's Learner and without pickle.

    model = fastinat.load_model("runs/scratch-20261128-120000")   # torch.nn.Module, eval mode
    records = fastinat.predict(model, ["a.jpg", "photos/"], top_k=3)
    # [{"path": "a.jpg", "label": "Aves", "prob": 0.91, "topk": [["Aves", 0.91], ...]}, ...]

`load_model` rebuilds the network from `model.json` (the model card) and loads
`model.safetensors` (safetensors: tensors only, no pickle on the loading path).

The preprocessing is the run's evaluation transform, step for step the same as the
validation/TEST loaders of training:

1. `fastinat.open_rgb(path, min_side=input_size)`: decode, apply the EXIF orientation,
   convert to 8-bit RGB (JPEGs decode at the smallest DCT scale whose shorter side is still
   >= input_size, `PIL.Image.draft`);
2. crop the centre square and resize it to input_size x input_size with PIL's bilinear
   filter (`img.resize((s, s), Image.BILINEAR, box=centre_square)`);
3. to a float32 CHW tensor of 0-255 values, then `(x - 255 * mean) / (255 * std)` with the
   card's `normalize` mean/std (or `x / 255` when it has none); softmax over the logits.

A Part B model is `nn.Sequential(body, head)`: `body.model` is exactly
`timm.create_model(arch, num_classes=0, **card["model"]["timm_kwargs"])` (state-dict keys
`0.model.*`), and the head (`1.*`) is fastai's: concat pooling (max, then average), flatten,
then for each of the card's `dense_units`: BatchNorm1d -> Dropout -> Linear -> ReLU, and a
last BatchNorm1d -> Dropout -> Linear to the classes (its Linears have no bias; the
BatchNorm before each has one). `tests/test_evaluate.py` writes this out in plain torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import FastinatError
from .io import read_json
from .progress import progress_task

CARD, WEIGHTS = "model.json", "model.safetensors"


# -- the model ----------------------------------------------------------------------------------

def read_card(run: str | Path) -> dict:
    """The model card of a run folder, or a FastinatError saying what is wrong with RUN."""
    run = Path(run)
    if not run.is_dir():
        raise FastinatError(f"{run} is not a run folder (no such folder).", exit_code=2)
    if not (run / CARD).is_file():
        what = "its training has not finished an epoch yet" if (run / "config.json").is_file() \
            else "it is not a fastinat run folder"
        raise FastinatError(f"{run} has no {CARD}: {what}.", exit_code=2)
    try:
        card = read_json(run / CARD)
    except ValueError as e:
        raise FastinatError(f"{run / CARD} is damaged ({e}).") from None
    if card.get("format") != "fastinat-model/1" or "classes" not in card:
        raise FastinatError(f"{run / CARD} is not a fastinat model card.")
    return card


def build_model(card: dict) -> nn.Module:
    """The network described by a model card, with fresh (untrained) weights."""
    n = len(card["classes"])
    if card["kind"] == "scratch":
        from .models.cnn import CNNConfig, ScratchCNN

        options = {k: v for k, v in card["model"].items() if k != "kind"}
        options["filters"], options["kernel_sizes"] = tuple(options["filters"]), tuple(options["kernel_sizes"])
        return ScratchCNN(CNNConfig(**options))
    if card["kind"] == "finetune":
        from fastai.vision.learner import create_timm_model

        m = card["model"]
        model, _ = create_timm_model(m["arch"], n, pretrained=False, lin_ftrs=list(m["dense_units"]),
                                     ps=m["dropout"], concat_pool=m.get("concat_pool", True),
                                     **m.get("timm_kwargs", {}))
        return model
    raise FastinatError(f"Unknown model kind {card['kind']!r} in the model card.")


def load_model(run: str | Path) -> nn.Module:
    """The run's best model as a `torch.nn.Module` in eval mode; `model.fastinat_card` is its card.

    Raises:
        FastinatError: RUN is not a run folder, or its weights are missing, truncated or do
            not fit the card.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run = Path(run)
    card = read_card(run)
    path = run / WEIGHTS
    if not path.is_file():
        raise FastinatError(f"{run} has no {WEIGHTS} (the weights file is missing).")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FastinatError(f"{path} is damaged or truncated ({e}).") from None
    model = build_model(card)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise FastinatError(f"{path} does not fit the model in {CARD}: {first}") from None
    model.eval()
    model.fastinat_card = card
    return model


# -- preprocessing ------------------------------------------------------------------------------

class EvalTransform:
    """path -> normalised float32 CHW tensor: the run's evaluation transform (module docstring)."""

    def __init__(self, card: dict):
        self.size = int(card["input_size"])
        norm = card.get("normalize") or {}
        self.mean = self.scale = None
        if norm.get("mean") is not None:
            self.mean = torch.tensor(norm["mean"]).view(-1, 1, 1) * 255.0
            self.scale = 1.0 / (torch.tensor(norm["std"]).view(-1, 1, 1) * 255.0)

    def image(self, path: str | Path) -> Image.Image:
        """Steps 1-2: the input_size x input_size RGB image the model sees."""
        from .data.augment import centre_square
        from .data.images import open_rgb

        img = open_rgb(path, min_side=self.size)
        return img.resize((self.size, self.size), Image.BILINEAR, box=centre_square(*img.size))

    def tensor(self, img: Image.Image) -> torch.Tensor:
        """Step 3."""
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        return x.div_(255.0) if self.mean is None else x.sub_(self.mean).mul_(self.scale)

    def __call__(self, path: str | Path) -> torch.Tensor:
        return self.tensor(self.image(path))


# -- prediction -----------------------------------------------------------------------------------

def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (recursively, sorted)."""
    from .data.images import is_image_name

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f))
        else:
            out.append(p)
    return out


def _load(transform: EvalTransform, path: Path) -> tuple[torch.Tensor | None, str | None]:
    if not path.exists():
        return None, "no such file"
    try:
        return transform(path), None
    except Exception as e:  # noqa: BLE001 - any decoder failure is "this file is unreadable"
        return None, f"unreadable image ({type(e).__name__})"


def predict_batches(model: nn.Module, files: list[Path], bs: int = 64, progress: bool = True,
                    threads: int | None = None) -> Iterator[tuple[Path, torch.Tensor | None, str | None]]:
    """(path, class probabilities or None, error or None) per file, in order, `bs` at a time.

    Images decode in a thread pool one batch ahead of the forward pass, which runs in
    channels_last with fastinat's malloc tuning (both as in training; see fastinat.perf).
    """
    import os

    from .perf import tune_malloc

    tune_malloc()
    transform = EvalTransform(model.fastinat_card)
    device = next(model.parameters()).device
    model = model.to(memory_format=torch.channels_last)
    threads = threads or min(8, os.cpu_count() or 1)
    chunks = [files[i:i + bs] for i in range(0, len(files), bs)]
    with ThreadPoolExecutor(threads) as pool, \
            progress_task(f"Predicting {len(files)} images", len(files), progress) as advance:
        def submit(chunk):
            return [pool.submit(_load, transform, p) for p in chunk]

        pending = submit(chunks[0]) if chunks else []
        for k, chunk in enumerate(chunks):
            loaded = [f.result() for f in pending]
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []  # decode ahead
            good = [x for x, _ in loaded if x is not None]
            probs = iter(())
            if good:
                x = torch.stack(good).to(device).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    probs = iter(torch.softmax(model(x).float(), dim=1).cpu())
            for path, (x, err) in zip(chunk, loaded, strict=True):
                yield path, (next(probs) if x is not None else None), err
            advance(len(chunk))


def predict(run_or_model, images: Iterable[str | Path] | str | Path, top_k: int = 3, bs: int = 64,
            progress: bool = False) -> list[dict]:
    """Predict image files and folders with a run's model (a run folder or `load_model`'s result).

    Returns one record per file: `{"path", "label", "prob", "topk": [[label, prob], ...]}`,
    or `{"path", "error"}` for a file that is missing or unreadable.
    """
    model = run_or_model if isinstance(run_or_model, nn.Module) else load_model(run_or_model)
    classes = model.fastinat_card["classes"]
    if isinstance(images, (str, Path)):
        images = [images]
    k = max(1, min(int(top_k), len(classes)))
    records = []
    for path, probs, err in predict_batches(model, image_files(images), bs, progress):
        if probs is None:
            records.append({"path": str(path), "error": err})
            continue
        values, idx = probs.topk(k)
        topk = [[classes[i], round(float(v), 6)] for v, i in zip(values, idx, strict=True)]
        records.append({"path": str(path), "label": topk[0][0], "prob": topk[0][1], "topk": topk})
    return records
