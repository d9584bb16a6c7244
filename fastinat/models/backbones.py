"""Part B: timm backbones by name, their pretrained config, local weights files, real stages
and freeze strategies.

    check_arch("resnet5")          # UsageError: Unknown architecture 'resnet5' (did you mean resnet50, ...?)
    default_size("inception_v3")   # 299, from timm's pretrained config
    shapes = weight_shapes("backbone.safetensors")  # {tensor name: shape}, checked before loading
    stages = backbone_stages(timm_model)          # ['act1', 'layer1', ..., 'layer4']
    groups = stage_split(body, k=2)               # [earlier params, last 2 stages (+ after)]

Stages come from timm's `feature_info`: the modules whose outputs are the feature maps,
so each one marks where a stage *ends* (ResNet: layer1..layer4; Xception: a ReLU inside
block12; EfficientNet: blocks.4, blocks.6). "The last K stages" are the parameters of every
module that comes after the end of stage N-K-1 in the model's module order, so a ViT's final
norm, a ConvNeXt's pre-head norm or an EfficientNet's conv_head trains with its last stage,
while parameters held by the model itself (a ViT's position embedding) stay with the stem.
"""

from __future__ import annotations

from pathlib import Path

from ..config import parse_freeze  # noqa: F401  (the freeze modes are options: fastinat.config)
from ..errors import FastinatError, UsageError, did_you_mean


def check_arch(name: str) -> str:
    """`name` if timm knows it (an architecture, or `arch.tag` naming one of its pretrained
    weights, e.g. convnext_base.fb_in22k_ft_in1k_384), else a UsageError naming close matches."""
    import timm

    base, _, tag = name.partition(".")
    known = timm.list_models()
    if base in known and not tag:
        return name
    if base in known:
        weights = timm.list_pretrained(f"{base}.*")
        if name in weights:
            return name
        hint = did_you_mean(name, weights, n=5) or f" ({base} has no pretrained weights)"
        raise UsageError(f"Unknown weights tag {name!r}{hint}.")
    hint = did_you_mean(name, known, n=5) or " (see timm.list_models())"
    raise UsageError(f"Unknown architecture {name!r}{hint}.")


def pretrained_cfg(arch: str) -> dict:
    """timm's pretrained config of `arch`'s default weights ({} when it has none)."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(arch)
    return cfg.to_dict() if cfg is not None else {}


def default_size(arch: str) -> int:
    """The input size `arch`'s pretrained weights were trained at (224 when unknown)."""
    size = pretrained_cfg(arch).get("input_size")
    return int(size[-1]) if size else 224


def backbone_stats(arch: str) -> tuple[list[float], list[float]]:
    """The (mean, std) that `arch`'s pretrained weights expect (ImageNet's when unknown)."""
    cfg = pretrained_cfg(arch)
    mean, std = cfg.get("mean") or (0.485, 0.456, 0.406), cfg.get("std") or (0.229, 0.224, 0.225)
    return [float(v) for v in mean], [float(v) for v in std]


def size_options(arch: str, size: int) -> dict:
    """timm options that let a fixed-input-size model (ViT, Swin, ...) take `size` px images.

    Their position embeddings are built for one size; timm builds them for `img_size` and
    resamples pretrained ones to it.
    """
    cfg = pretrained_cfg(arch)
    if cfg.get("fixed_input_size") and size != default_size(arch):
        return {"img_size": int(size)}
    return {}


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a safetensors file or PyTorch state dict, read as timm reads it.

    A checkpoint dict holding the weights under `state_dict` or `model` is unwrapped and a
    DataParallel `module.` prefix dropped, as in `timm.models.load_state_dict`.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"The weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is the same user mistake
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch state dict"
        raise FastinatError(f"Cannot read the weights file {path} as a {kind} "
                            f"({type(e).__name__}).") from None
    if isinstance(state, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise FastinatError(f"The weights file {path} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): tuple(v.shape) for k, v in state.items()}


def first_mismatch(model_shapes: dict, file_shapes: dict, *, check_shapes: bool = True) -> str | None:
    """How the file fails the model: its first tensor (in the model's order) that the file lacks
    or, with `check_shapes`, holds in another shape; None when everything fits."""
    for name, shape in model_shapes.items():
        if name.endswith("num_batches_tracked"):  # a counter, often left out of converted files
            continue
        if name not in file_shapes:
            return f"it has no tensor {name!r}"
        if check_shapes and tuple(file_shapes[name]) != tuple(shape):
            return (f"{name!r} has shape {list(file_shapes[name])} in the file but {list(shape)} "
                    "in the model")
    return None


def backbone_shapes(arch: str, **timm_kwargs) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of `arch` as a headless backbone, built without memory (meta device)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def backbone_stages(model) -> list[str]:
    """Module names of a timm model's stages, from its `feature_info`."""
    info = getattr(model, "feature_info", None)
    names = [f["module"] for f in info] if info else []
    if not names:
        raise UsageError(f"{type(model).__name__} has no feature_info, so its stages are unknown; "
                         "use --freeze head, none or gradual.")
    return names


def stage_split(model, k: int) -> tuple[list, list]:
    """(parameters before the last `k` stages, parameters of the last `k` stages and after)."""
    stages = backbone_stages(model)
    if k > len(stages):
        raise UsageError(f"last:{k} asks for more stages than the backbone has ({len(stages)}: "
                         f"{', '.join(stages)}).")
    named = list(model.named_parameters())
    if k == len(stages):  # every stage, the stem included
        return [], [p for _, p in named]
    end = stages[len(stages) - k - 1]  # where the last frozen stage ends
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}

    def later(param_name: str) -> bool:
        owner = param_name.rpartition(".")[0]
        return order[owner] > order[end] and not owner.startswith(end + ".")

    return [p for n, p in named if not later(n)], [p for n, p in named if later(n)]
