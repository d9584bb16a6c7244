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
   >= input_size, `PIL.Image.draft`; `open_pixels`, used here, gives the same pixels);
2. crop the centre square (whole-pixel offsets `(w - side) // 2`, `(h - side) // 2`) and
   resize it to input_size x input_size as the train crops are resized: when the square is
   at least r = side // input_size >= 2 times bigger, first box-average it to side // r
   (`cv2.INTER_AREA`), then bilinear (`cv2.INTER_LINEAR`) (`fastinat.data.augment.eval_pixels`);
3. to float32 `(x / 255 - mean) / std` with the card's `normalize` mean/std (or `x / 255`
   when it has none), computed as `x * (1 / (255 * std)) + (-mean / std)` per channel
   exactly as the loaders do (`fastinat.data.augment.normalize_hwc`); softmax over the logits.

Test-time augmentation (`--tta`; `predict(..., tta=True)`, `predict_batches(..., tta=True)`)
decodes each image once (step 1) and makes the 6 `fastinat.config.TTA_VIEWS` of it in step 2
(`fastinat.data.augment.tta_pixels`): (0) the plain view above, (1) its horizontal mirror,
(2-5) the top-left, top-right, bottom-left and bottom-right input_size crops of the centre
square resized to round(input_size * 8 / 7) (256 for 224). The softmax probabilities of the
views are averaged (an arithmetic mean; each view has the same weight).

A Part B model is `nn.Sequential(body, head)`: `body.model` is exactly
`timm.create_model(arch, num_classes=0, **card["model"]["timm_kwargs"])` (state-dict keys
`0.model.*`), and the head (`1.*`) is fastai's. With the card's `pooling` "concat" (CNNs) the
body gives `forward_features`' NCHW map and the head starts with concat pooling (max, then
average) and flatten; with "timm" (token models such as ViT, channels-last ones such as Swin)
the body gives `body.model(x)`, timm's own pooled (batch, `features`). Then, for each of the
card's `dense_units`: BatchNorm1d -> Dropout -> Linear -> ReLU, and a last BatchNorm1d ->
Dropout -> Linear to the classes (its Linears have no bias; the BatchNorm before each has one).
`tests/test_evaluate.py` writes this out in plain torch.

On a CPU, prediction runs on `inference_copy(model)` (conv+BatchNorm folded, max-pools moved
before monotonic activations and done as `MaxPool2x2`), one torch thread per pool thread.
Internals relied on (checked by `tests/test_process.py`): torch's
`nn.utils.fusion.fuse_conv_bn_eval(conv, bn)`, `nn.Module._modules` (children replaced in
place), `nn.MaxPool2d`'s `kernel_size`, `stride`, `padding`, `dilation`, `ceil_mode` and
`return_indices`, `BatchNorm2d.track_running_stats`, the activations' `inplace`, and
`torch.set_num_threads` acting on the calling thread (the OpenMP backend of torch's wheels;
the caller's own count is unchanged; torch's default for new threads is put back).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import FastinatError, UsageError
from .io import read_json
from .layout import guard_layout
from .progress import progress_task
from .run_folder import CARD, CONFIG, MODEL_FORMAT, WEIGHTS

# -- the model ----------------------------------------------------------------------------------

def read_card(run: str | Path) -> dict:
    """The model card of a run folder, or a FastinatError saying what is wrong with RUN."""
    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"{run} is not a run folder (no such folder).")
    if not (run / CARD).is_file():
        what = "its training has not finished an epoch yet" if (run / CONFIG).is_file() \
            else "it is not a fastinat run folder"
        raise UsageError(f"{run} has no {CARD}: {what}.")
    try:
        card = read_json(run / CARD)
    except ValueError as e:
        raise FastinatError(f"{run / CARD} is damaged ({e}).") from None
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT \
            or not {"classes", "kind", "model", "input_size"} <= card.keys():
        raise FastinatError(f"{run / CARD} is not a fastinat model card.")
    return card


def build_model(card: dict) -> nn.Module:
    """The network described by a model card, with fresh (untrained) weights."""
    n = len(card["classes"])
    if card["kind"] == "scratch":
        from .models.cnn import CNNConfig, ScratchCNN

        options = {k: v for k, v in card["model"].items() if k != "kind"}
        options["filters"], options["kernel_sizes"] = tuple(options["filters"]), tuple(options["kernel_sizes"])
        model = ScratchCNN(CNNConfig(**options))
        guard_layout(model)
        return model
    if card["kind"] == "finetune":
        from .models.backbones import timm_classifier

        m = card["model"]
        pooling, features = m.get("pooling"), m.get("features")
        if pooling is None:  # a card from before fastinat chose the pooling: fastai's rule
            pooling, features = _fastai_pooling(m["arch"], m.get("timm_kwargs", {}))
        model, _, _ = timm_classifier(m["arch"], n, size=int(card["input_size"]), lin_ftrs=list(m["dense_units"]),
                                      ps=m["dropout"], pooling=pooling, features=int(features),
                                      **m.get("timm_kwargs", {}))
        guard_layout(model)  # Grad-CAM's backward runs channels_last too
        return model
    raise FastinatError(f"Unknown model kind {card['kind']!r} in the model card.")


def _fastai_pooling(arch: str, timm_kwargs: dict) -> tuple[str, int]:
    """fastai's own rule, which older cards were built with: concat pooling when timm gives the
    model a pooling size, on `num_features` channels."""
    import timm

    with torch.device("meta"):
        body = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
    return ("concat" if body.pretrained_cfg.get("pool_size") else "timm"), int(body.num_features)


def load_model(run: str | Path) -> nn.Module:
    """The run's best model as a `torch.nn.Module` in eval mode; `model.fastinat_card` is its card.

    Raises:
        UsageError: RUN is not a run folder (or has no model card yet).
        FastinatError: its card or weights are missing, damaged or do not fit each other.
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
    try:
        model = build_model(card)
    except (KeyError, TypeError, ValueError, UsageError) as e:
        raise FastinatError(f"{run / CARD} does not describe a model fastinat can build "
                            f"({type(e).__name__}: {e}).") from None
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
        from .data.augment import channel_affine

        self.size = int(card["input_size"])
        norm = card.get("normalize") or {}
        self.affine = channel_affine(norm.get("mean"), norm.get("std"))

    def pixels(self, path: str | Path) -> np.ndarray:
        """Steps 1-2: the input_size x input_size x 3 uint8 pixels the model sees."""
        from .data.augment import eval_pixels
        from .data.images import open_pixels

        return eval_pixels(open_pixels(path, min_side=self.size), self.size)

    def views(self, path: str | Path) -> np.ndarray:
        """The test-time augmentation views (`--tta`) of one file: (views, size, size, 3) uint8.

        Decoded once, as `pixels` decodes; the views are `fastinat.config.TTA_VIEWS`
        (`fastinat.data.augment.tta_pixels`), the first of them exactly `pixels(path)`.
        """
        from .data.augment import tta_pixels
        from .data.images import open_pixels

        return tta_pixels(open_pixels(path, min_side=self.size), self.size)

    def image(self, path: str | Path) -> Image.Image:
        """Steps 1-2 as a PIL image."""
        return Image.fromarray(self.pixels(path))

    def read(self, path: str | Path) -> Image.Image:
        """`image(path)` for a file a user named: one clear error when it cannot be read.

        Raises:
            UsageError: `path` does not exist.
            FastinatError: `path` is not a readable image.
        """
        path = Path(path)
        if not path.exists():
            raise UsageError(f"The image {path} does not exist.")
        try:
            return self.image(path)
        except Exception as e:  # noqa: BLE001 - any decoder failure
            raise FastinatError(f"Cannot read the image {path} ({type(e).__name__}).") from None

    def batch(self, pixels: list[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
        """Step 3 for several images: an (N, 3, H, W) float32 batch, channels_last.

        The uint8 pixels are stacked (and moved to `device`) before they become floats.
        """
        from .data.augment import normalize_hwc

        affine = self.affine if self.affine is None else tuple(t.to(device) for t in self.affine)
        return normalize_hwc(torch.from_numpy(np.stack(pixels)).to(device), affine)

    def tensor(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """Step 3: a (3, H, W) float32 tensor, a view of height x width x channel memory."""
        return self.batch([np.asarray(img, dtype=np.uint8)])[0]

    def __call__(self, path: str | Path) -> torch.Tensor:
        return self.tensor(self.pixels(path))


# -- prediction -----------------------------------------------------------------------------------

def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (`fastinat.data.images.find_images`:
    subfolders too, sorted; hidden files such as .DS_Store and macOS ._x.jpg skipped)."""
    from .data.images import find_images

    out: list[Path] = []
    for p in map(Path, paths):
        out += find_images(p) if p.is_dir() else [p]
    return out


def _load(transform: EvalTransform, path: Path, tta: bool = False) -> tuple[np.ndarray | None, str | None]:
    if not path.exists():
        return None, "no such file"
    try:
        return (transform.views(path) if tta else transform.pixels(path)), None
    except Exception as e:  # noqa: BLE001 - any decoder failure is "this file is unreadable"
        return None, f"unreadable image ({type(e).__name__})"


#: Activations that never decrease: max-pooling after them equals pooling before them.
_MONOTONIC = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)


class MaxPool2x2(nn.MaxPool2d):
    """`nn.MaxPool2d(2)` for inference, as two element-wise maxima of strided views.

    Same values (odd trailing rows/columns are dropped, as max_pool2d does); measured here on
    channels_last 224 px activations about 3x faster than `max_pool2d`, which also works
    out the arg-max. Inference only: at a tie its gradient would be split between the
    maxima, where max_pool2d's goes to one.
    """

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        rows = torch.maximum(x[..., 0:h:2, :w], x[..., 1:h:2, :w])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _is_plain_2x2(pool: nn.Module) -> bool:
    pair = (lambda v: v if isinstance(v, tuple) else (v, v))  # noqa: E731
    return (type(pool) is nn.MaxPool2d and pair(pool.kernel_size) == (2, 2) and pair(pool.stride) == (2, 2)
            and pair(pool.padding) == (0, 0) and pair(pool.dilation) == (1, 1)
            and not pool.ceil_mode and not pool.return_indices)


def inference_copy(model: nn.Module) -> nn.Module:
    """A faster copy of an eval-mode `model` with the same outputs, for CPU prediction.

    Inside each `nn.Sequential`: a BatchNorm2d that follows a Conv2d is folded into it (one
    pass less), and a MaxPool2d that follows a ReLU/ELU/LeakyReLU moves before it (the
    activation then runs, in place, on a quarter of the values; for a non-decreasing
    function, max(f(a), f(b)) = f(max(a, b)) exactly). Every plain 2x2 max-pool becomes a
    `MaxPool2x2`.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if _is_plain_2x2(child):
                setattr(module, name, MaxPool2x2())
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            first, second = module._modules[a], module._modules[b]
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d) and second.track_running_stats:
                module._modules[a], module._modules[b] = fuse_conv_bn_eval(first, second), nn.Identity()
            elif isinstance(first, _MONOTONIC) and isinstance(second, nn.MaxPool2d):
                act = copy.copy(first)  # its own instance: the module may be used elsewhere too
                act.inplace = True  # it now gets the pool's fresh output, used nowhere else
                module._modules[a], module._modules[b] = second, act
    return model


#: Images per CPU work item: a pool thread decodes them and runs their forward pass
#: (measured here with 2 threads: 4 at a time beat 1 and 2 by about 5%).
_CPU_CHUNK = 4


def _one_torch_thread() -> None:
    """Pool thread initializer: this thread's torch ops run on it alone.

    With torch's OpenMP backend the count is per thread (the caller's thread keeps its own);
    torch also keeps it as the default for threads started later, which `predict_batches`
    puts back when it ends.
    """
    torch.set_num_threads(1)


def predict_batches(model: nn.Module, files: list[Path], bs: int, progress: bool = True,
                    threads: int | None = None, tta: bool = False,
                    ) -> Iterator[tuple[Path, torch.Tensor | None, str | None]]:
    """(path, class probabilities or None, error or None) per file, in order.

    With `tta`, the probabilities are those of each test-time augmentation view, a
    (len(TTA_VIEWS), classes) tensor (`fastinat.config.TTA_VIEWS`; row 0 is the plain
    evaluation view): each file is decoded once, its views go through the network in
    forward passes of the same size as without `tta`, and the caller averages the rows.

    On a GPU: images decode in a thread pool one batch of `bs` ahead of a batched forward
    pass. On a CPU a batch does not help (a 224 px batch's activations fall out of the
    caches; measured here, a forward pass per image costs less at batch size 1-4 than at
    64) and a second intra-op thread mostly spin-waits. So there each pool thread decodes a
    few images and runs their forward pass itself, on one torch thread (so the threads
    run the network in parallel), on `inference_copy(model)`. Both run channels_last.
    `threads` defaults to `perf.compute_workers()`. The caller's torch and OpenCV thread
    counts are the same afterwards; OpenCV runs on one thread meanwhile (the pool threads
    are the parallelism).
    """
    from .perf import compute_workers, opencv_threads

    transform = EvalTransform(model.fastinat_card)
    device = next(model.parameters()).device
    threads = threads or compute_workers()
    cpu = device.type == "cpu"
    model = (inference_copy(model) if cpu else model).to(memory_format=torch.channels_last)
    size = _CPU_CHUNK if cpu else max(1, bs)
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    ahead = 2 * threads if cpu else 1
    torch_threads = torch.get_num_threads()
    try:
        with opencv_threads(1), ThreadPoolExecutor(threads, initializer=_one_torch_thread if cpu else None) as pool, \
                progress_task(f"Predicting {len(files)} images", len(files), progress) as advance:
            def load(chunk):
                return [_load(transform, p, tta) for p in chunk]

            if cpu:
                jobs = (pool.submit(lambda c: _forward(model, transform, c, load(c), device, size), c)
                        for c in chunks)
            else:  # decode in the pool, one batch ahead; forward passes here, on the GPU
                jobs = (pool.submit(load, c) for c in chunks)
            pending = [next(jobs) for _ in range(min(ahead, len(chunks)))]
            for chunk in chunks:
                done = pending.pop(0).result()
                nxt = next(jobs, None)
                if nxt is not None:
                    pending.append(nxt)
                if not cpu:
                    done = _forward(model, transform, chunk, done, device, size)
                yield from done
                advance(len(chunk))
    finally:
        if cpu:
            torch.set_num_threads(torch_threads)  # torch's default for threads started later


def _forward(model: nn.Module, transform: EvalTransform, chunk: list[Path], loaded: list, device,
             rows: int) -> list:
    """[(path, probabilities or None, error or None)] for `chunk`, given its `_load` results.

    Images (or, with TTA, every view of them) go through the network at most `rows` at a time.
    """
    good = [x for x, _ in loaded if x is not None]
    probs = iter(())
    if good:
        views = 1 if good[0].ndim == 3 else good[0].shape[0]
        flat = good if views == 1 else [v for x in good for v in x]
        out = []
        for i in range(0, len(flat), rows):
            x = transform.batch(flat[i:i + rows], device)  # uint8 to the device, floats there; channels_last
            with torch.inference_mode():
                out.append(torch.softmax(model(x).float(), dim=1).cpu())
        p = torch.cat(out)
        probs = iter(p if views == 1 else p.view(len(good), views, -1))
    return [(p, next(probs) if x is not None else None, err) for p, (x, err) in zip(chunk, loaded, strict=True)]


def predict(run_or_model, images: Iterable[str | Path] | str | Path, *, progress: bool = False,
            **options) -> list[dict]:
    """Predict image files and folders with a run's model (a run folder or `load_model`'s result).

    `options`: `fastinat.config.PredictOptions` fields (top_k, bs, tta). Returns one record per
    file: `{"path", "label", "prob", "topk": [[label, prob], ...]}`, or `{"path", "error"}`
    for a file that is missing or unreadable. With `tta=True` the probabilities are the mean
    of the softmax probabilities of the `fastinat.config.TTA_VIEWS` and each
    record also has `"tta_views"`: how many were averaged. The caller's thread
    settings and allocator are left as they were.

    Raises:
        UsageError: RUN is not a run folder, or the model did not come from `load_model`.
        FastinatError: the run's weights or card are damaged.
    """
    from .config import PredictOptions
    from .options import resolve

    opts = resolve(PredictOptions, overrides=options)
    model = run_or_model if isinstance(run_or_model, nn.Module) else load_model(run_or_model)
    if not hasattr(model, "fastinat_card"):
        raise UsageError("predict needs a run folder or a model from fastinat.load_model "
                         "(this model has no fastinat_card).")
    classes = model.fastinat_card["classes"]
    if isinstance(images, (str, Path)):
        images = [images]
    k = min(opts.top_k, len(classes))
    records = []
    for path, probs, err in predict_batches(model, image_files(images), opts.bs, progress, tta=opts.tta):
        if probs is None:
            records.append({"path": str(path), "error": err})
            continue
        views = {"tta_views": len(probs)} if opts.tta else {}
        values, idx = (probs.mean(0) if opts.tta else probs).topk(k)
        topk = [[classes[i], round(float(v), 6)] for v, i in zip(values, idx, strict=True)]
        records.append({"path": str(path), "label": topk[0][0], "prob": topk[0][1], "topk": topk, **views})
    return records
