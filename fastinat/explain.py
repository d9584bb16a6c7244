"""What a trained model looks at: Grad-CAM, guided backprop, first-layer filters, feature maps.

    fastinat explain runs/latest data/digits/val/3 --method gradcam      # -> runs/latest/explain/
    fastinat explain runs/latest --list-layers
    maps = fastinat.explain("runs/latest", ["a.jpg"], method="gradcam")  # arrays for a notebook

The attributions come from captum (kept by the PyTorch team):

* `gradcam`: `captum.attr.LayerGradCam` on `--layer` (default: the last conv block's
  activation of a scratch CNN, the last stage of a timm backbone, the last block's `norm1` of
  a ViT), ReLU'd, upsampled to the input size and scaled to 0-1. A ViT's layer outputs tokens (batch, 1 + h*w, channels);
  `TokenGrid` lays the patch tokens out as a (batch, channels, h, w) map for captum and back,
  so Grad-CAM sees the patch grid (the class token is left out of the map); a Swin stage's
  channels-last (batch, h, w, channels) map is permuted the same way. A layer with no
  spatial map (the tokens of other token models) is refused in one line.
* `guided-backprop`: `captum.attr.GuidedBackprop`, extended from ReLU to every activation
  Part A offers. Rule, for an activation y = f(x) in the backward pass:
  grad_x = relu(grad_y * f'(x)), captum's own rule for ReLU (where f'(x) = 1[x > 0] it is
  Springenberg et al.'s guided backprop); for ELU, SiLU, GELU and Mish the same rule keeps only
  the positive evidence flowing through each unit. The saliency is the maximum absolute
  gradient over the colour channels, scaled to 0-1.
* `filters`: the first conv layer's kernels, one tile each (RGB when the input is RGB).
* `feature-maps`: `captum.attr.LayerActivation` of `--layer`: its channels for the image.

Models run in eval mode on copies of nothing: in-place activations are switched off while
explaining (backward hooks need them) and switched back afterwards.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import UsageError

ACTIVATION_TYPES = (nn.ReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Mish, nn.LeakyReLU)


# -- layers -------------------------------------------------------------------------------------

def _is_vit(model: nn.Module) -> bool:
    body = model[0].model if isinstance(model, nn.Sequential) and hasattr(model[0], "model") else None
    return body is not None and hasattr(body, "blocks") and hasattr(body, "patch_embed")


def layer_names(model: nn.Module) -> list[str]:
    """The layers `--layer` accepts: conv blocks, convs and activations (scratch CNN); the
    stages of a timm backbone (from feature_info) and their blocks."""
    card = getattr(model, "fastinat_card", {})
    names = []
    if card.get("kind") == "finetune":
        body = model[0].model
        stages = [f["module"] for f in getattr(body, "feature_info", [])]
        for name, _ in body.named_modules():
            if name and (name in stages or any(name.startswith(s + ".") and name.count(".") == s.count(".") + 1
                                               for s in stages)):
                names.append(f"0.model.{name}")
        return names
    for name, module in model.named_modules():
        if name and isinstance(module, (nn.Conv2d, *ACTIVATION_TYPES)) and name.startswith("features."):
            names.append(name)
        elif name.count(".") == 1 and name.startswith("features."):
            names.append(name)
    return names


def default_layer(model: nn.Module) -> str:
    """The last conv block's activation (scratch), or the backbone's last stage (timm)."""
    card = getattr(model, "fastinat_card", {})
    if _is_vit(model):  # after the last block only the class token reaches the head; its
        # attention's input (norm1) is where the patch tokens still count
        return f"0.model.blocks.{len(model[0].model.blocks) - 1}.norm1"
    if card.get("kind") == "finetune":
        body = model[0].model
        info = getattr(body, "feature_info", None)
        if info:
            return f"0.model.{info[-1]['module']}"
        return f"0.model.{layer_names(model)[-1].removeprefix('0.model.')}"
    last = model.features[-1]
    act = next(i for i, m in enumerate(last) if isinstance(m, ACTIVATION_TYPES))
    return f"features.{len(model.features) - 1}.{act}"


def get_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    name = name or default_layer(model)
    valid = layer_names(model)
    if name not in valid:
        raise UsageError(f"Unknown layer {name!r}; use one of: {', '.join(valid)}.")
    return name, model.get_submodule(name)


class TokenGrid(nn.Module):
    """Wraps a block whose output is not an NCHW map: a ViT block's tokens (class / prefix
    tokens kept aside) or a Swin stage's channels-last (B, h, w, C) map, laid out as a
    (B, C, h, w) grid for captum (`to_grid`), then turned back, so the model is unchanged."""

    def __init__(self, block: nn.Module, prefix: int = 0, grid: tuple[int, int] | None = None):
        super().__init__()
        self.block, self.prefix, self.grid = block, prefix, grid  # grid None: channels-last maps
        self.to_grid, self.to_tokens = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if self.grid is None:  # (B, h, w, C)
            return self.to_tokens(self.to_grid(y.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        head, patches = y[:, :self.prefix], y[:, self.prefix:]
        b, n, c = patches.shape
        grid = self.to_grid(patches.transpose(1, 2).reshape(b, c, *self.grid))  # captum's layer
        return torch.cat([head, self.to_tokens(grid).flatten(2).transpose(1, 2)], 1)


def _channels_last_body(model: nn.Module) -> bool:
    """A timm body whose stages give (B, h, w, C) maps (Swin, SwinV2: `output_fmt` NHWC)."""
    body = model[0].model if isinstance(model, nn.Sequential) and hasattr(model[0], "model") else None
    return body is not None and str(getattr(body, "output_fmt", "NCHW")) == "NHWC"


def _wrapper(model: nn.Module, layer_name: str, original: nn.Module) -> TokenGrid | None:
    """The TokenGrid `layer_name` needs (None: its output is an NCHW map already)."""
    if _is_vit(model) and ".blocks." in f".{layer_name}.":
        body = model[0].model
        return TokenGrid(original, getattr(body, "num_prefix_tokens", 1), tuple(body.patch_embed.grid_size))
    if _channels_last_body(model) and layer_name.startswith("0.model."):
        return TokenGrid(original)
    return None


def check_spatial(model: nn.Module, watched: nn.Module, x: torch.Tensor, layer: str) -> None:
    """A UsageError unless `watched` gives a (batch, channels, h, w) map for `x`."""
    shapes = []
    handle = watched.register_forward_hook(lambda m, i, o: shapes.append(getattr(o, "shape", None)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if not shapes or shapes[0] is None or len(shapes[0]) != 4:
        got = list(shapes[0]) if shapes and shapes[0] is not None else "no tensor"
        raise UsageError(f"The layer {layer} gives {got}, not a (batch, channels, height, width) map, "
                         "so it has no picture to draw; use guided-backprop or another --layer.")


@contextmanager
def no_inplace(model: nn.Module) -> Iterator[None]:
    """In-place activations off (captum's backward hooks need their inputs), restored after."""
    inplace = [m for m in model.modules() if getattr(m, "inplace", False)]
    for m in inplace:
        m.inplace = False
    try:
        yield
    finally:
        for m in inplace:
            m.inplace = True


@contextmanager
def explainable(model: nn.Module, layer_name: str) -> Iterator[nn.Module]:
    """The layer captum should watch (a ViT block wrapped in TokenGrid), in-place activations off."""
    parent_name, _, child = layer_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    original = getattr(parent, child) if not child.isdigit() else parent[int(child)]
    wrapped = _wrapper(model, layer_name, original)
    if wrapped is not None:
        if child.isdigit():
            parent[int(child)] = wrapped
        else:
            setattr(parent, child, wrapped)
    try:
        with no_inplace(model):
            yield wrapped.to_grid if wrapped is not None else original
    finally:
        if wrapped is not None:
            if child.isdigit():
                parent[int(child)] = original
            else:
                setattr(parent, child, original)


# -- methods -------------------------------------------------------------------------------------

def _scale(a: np.ndarray) -> np.ndarray:
    a = a - a.min()
    top = a.max()
    return a / top if top > 0 else a


def _guided_backprop(model: nn.Module):
    from captum.attr import GuidedBackprop

    class AnyActivationGuidedBackprop(GuidedBackprop):
        """captum's guided backprop, its rule applied to every activation module (module docstring)."""

        def _register_hooks(self, module: nn.Module) -> None:
            if isinstance(module, ACTIVATION_TYPES):  # captum's own registration, for more types
                from captum.attr._core import guided_backprop_deconvnet as captum_gbp

                self.backward_hooks.extend(captum_gbp._register_backward_hook(module, self._backward_hook, self))

    return AnyActivationGuidedBackprop(model)


def _filters(model: nn.Module) -> dict:
    """The first conv layer's kernels as (n, k, k, channels) tiles scaled to 0-1."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise UsageError("The model has no conv layer, so it has no filters to draw.")
    name, conv = first
    w = conv.weight.detach().float().cpu().numpy()  # (out, in, k, k)
    return {"method": "filters", "layer": name, "map": np.stack([_scale(f) for f in w]).transpose(0, 2, 3, 1)}


def _gradcam(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> np.ndarray:
    from captum.attr import LayerAttribution, LayerGradCam

    with explainable(model, layer) as watched:
        check_spatial(model, watched, x, layer)
        cam = LayerGradCam(model, watched).attribute(x, target=target, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return _scale(cam[0, 0].detach().numpy())


def _guided(model: nn.Module, x: torch.Tensor, layer: str | None, target: int) -> np.ndarray:
    with no_inplace(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum: "Setting backward hooks on ReLU"
        grads = _guided_backprop(model).attribute(x.requires_grad_(), target=target)
    return _scale(grads[0].detach().abs().amax(0).numpy())


def _feature_maps(model: nn.Module, x: torch.Tensor, layer: str, target: int) -> np.ndarray:
    from captum.attr import LayerActivation

    with explainable(model, layer) as watched, torch.no_grad():
        check_spatial(model, watched, x, layer)
        acts = LayerActivation(model, watched).attribute(x)
    return acts[0].detach().float().numpy()


#: method -> its map of one input batch `x` of one image: (model, x, layer, target class) -> array
_MAPS = {"gradcam": _gradcam, "guided-backprop": _guided, "feature-maps": _feature_maps}


def _target_index(target: str | int | None, classes: list[str]) -> int | None:
    """The class index `target` names (a class name or an index); None for the predicted class."""
    if target is None:
        return None
    if str(target) in classes:
        return classes.index(str(target))
    if str(target).isdigit() and int(target) < len(classes):
        return int(target)
    raise UsageError(f"Unknown target class {target!r}; the model's classes: {', '.join(classes)}.")


def explain(model_or_run, images, **options) -> list[dict]:
    """Explanations as arrays, one dict per image (for `filters`, one for the model):

    `{"path", "image" (H, W, 3 uint8: what the model sees), "map" (H, W floats 0-1; for
    feature-maps (C, h, w)), "predicted", "prob", "target", "layer", "method"}`;
    `filters` gives `{"map": (n, k, k, 3 or 1) floats 0-1, "layer"}`. `options`:
    `fastinat.config.ExplainOptions` fields (method, layer, target).

    Raises:
        UsageError: unknown method, layer or target class; no images, or one that does not exist.
        FastinatError: a run without weights; an unreadable image.
    """
    from .config import ExplainOptions
    from .inference import EvalTransform, image_files, load_model
    from .options import resolve

    opts = resolve(ExplainOptions, overrides=options)
    method, layer, target = opts.method, opts.layer, opts.target
    model = model_or_run if isinstance(model_or_run, nn.Module) else load_model(model_or_run)
    model.eval()
    if method == "filters":
        return [_filters(model)]
    files = image_files([images] if isinstance(images, (str, Path)) else images)
    if not files:
        raise UsageError("Give one or more images (files or folders) to explain.")
    card = model.fastinat_card
    tgt = _target_index(target, card["classes"])
    name = get_layer(model, layer)[0] if method in ("gradcam", "feature-maps") else None
    transform = EvalTransform(card)
    out = []
    for path in files:
        img = transform.read(path)
        x = transform.tensor(img)[None]
        with torch.no_grad():
            probs = torch.softmax(model(x), 1)[0]
        pred = int(probs.argmax())
        chosen = pred if tgt is None else tgt
        out.append({"path": str(path), "image": np.asarray(img), "method": method, "layer": name,
                    "predicted": card["classes"][pred], "prob": float(probs[pred]),
                    "target": card["classes"][chosen], "map": _MAPS[method](model, x, name, chosen)})
    return out


# -- pictures ----------------------------------------------------------------------------------

def _title(r: dict) -> str:
    return f"predicted {r['predicted']} ({r['prob']:.2f}); target {r['target']}"


def draw(records: list[dict], out_dir: str | Path) -> list[Path]:
    """One PNG per record (a filter grid for `filters`); returns the paths written."""
    import math

    from .report import pyplot, save_figure

    plt = pyplot()
    out_dir = Path(out_dir)
    written = []
    names = _picture_names([r.get("path") or "" for r in records])
    for r, stem in zip(records, names, strict=True):
        if r["method"] == "filters":
            tiles = r["map"]
            cols = math.ceil(math.sqrt(len(tiles)))
            rows = math.ceil(len(tiles) / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, tile in zip(axes.flat, tiles, strict=False):
                ax.imshow(tile if tile.shape[-1] == 3 else tile[..., 0], cmap=None if tile.shape[-1] == 3 else "gray",
                          interpolation="nearest")
            fig.suptitle(f"{len(tiles)} first-layer filters ({r['layer']})")
            dest = out_dir / "filters.png"
        elif r["method"] == "feature-maps":
            maps = r["map"][:64]
            cols = min(8, len(maps))
            rows = math.ceil(len(maps) / cols) + 1
            fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            axes[0, 0].imshow(r["image"])
            axes[0, 0].set_title("input", fontsize=7)
            for ax, m in zip(axes[1:].flat, maps, strict=False):
                ax.imshow(m, cmap="viridis")
            fig.suptitle(f"{r['layer']}: {min(64, len(r['map']))} of {len(r['map'])} channels; {_title(r)}",
                         fontsize=9)
            dest = out_dir / f"{stem}-feature-maps.png"
        else:
            fig, (a, b) = plt.subplots(1, 2, figsize=(7, 3.6))
            a.imshow(r["image"])
            a.set_title("input (as the model sees it)", fontsize=9)
            if r["method"] == "gradcam":
                b.imshow(r["image"])
                b.imshow(r["map"], cmap="jet", alpha=0.45)
                b.set_title(f"Grad-CAM ({r['layer']})", fontsize=9)
            else:
                b.imshow(r["map"], cmap="gray")
                b.set_title("guided backprop", fontsize=9)
            for ax in (a, b):
                ax.axis("off")
            fig.suptitle(_title(r), fontsize=10)
            dest = out_dir / f"{stem}-{r['method']}.png"
        fig.tight_layout()
        save_figure(fig, dest)
        written.append(dest)
    return written


def _picture_names(paths: list[str]) -> list[str]:
    """A file name stem per image: its own stem, or, for stems that repeat (x.jpg in two
    subfolders), its path below the images' common folder with '_' for '/' (more_x)."""
    import os
    from collections import Counter

    stems = [Path(p).stem for p in paths]
    repeated = {s for s, n in Counter(stems).items() if n > 1}
    if not repeated:
        return stems
    base = os.path.commonpath([os.path.abspath(p) for p in paths]) if len(paths) > 1 else ""
    out = []
    for p, stem in zip(paths, stems, strict=True):
        rel = Path(os.path.relpath(os.path.abspath(p), base) if base else p)
        if stem in repeated and rel.name:  # (the same file given twice keeps its stem)
            stem = "_".join([*rel.parent.parts, rel.stem]) if rel.parent.parts else rel.name
        out.append(stem)
    return out


class _CallableModule(types.ModuleType):
    """`fastinat.explain` is this module's `explain` function (the package's lazy name), but
    importing the module (`from fastinat.explain import draw`, `fastinat report`) makes the
    package attribute the module itself. Calling the module calls the function, so
    `fastinat.explain(run, images)` works either way."""

    def __call__(self, *args, **kwargs) -> list[dict]:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
