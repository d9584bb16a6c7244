"""Part B: timm backbones by name, their pretrained config, local weights files, real stages
and freeze strategies.

    check_arch("resnet5")          # UsageError: Unknown architecture 'resnet5' (did you mean resnet50, ...?)
    default_size("inception_v3")   # 299, from timm's pretrained config
    shapes = weight_shapes("backbone.safetensors")  # {tensor name: shape}, checked before loading
    stages = backbone_stages(timm_model)          # ['act1', 'layer1', ..., 'layer4']
    groups = stage_split(body, k=2)               # [earlier params, last 2 stages (+ after)]
    net, pooling, width = timm_classifier("swin_tiny_patch4_window7_224", 10, size=96,
                                          lin_ftrs=[512], ps=0.5)  # fastai head; pooling "timm"

Stages come from timm's `feature_info`: the modules whose outputs are the feature maps,
so each one marks where a stage *ends* (ResNet: layer1..layer4; Xception: a ReLU inside
block12; EfficientNet: blocks.4, blocks.6). "The last K stages" are the parameters of every
module that comes after the end of stage N-K-1 in the model's module order, so a ViT's final
norm, a ConvNeXt's pre-head norm or an EfficientNet's conv_head trains with its last stage,
while parameters held by the model itself (a ViT's position embedding) stay with the stem.

The network is fastai's (`TimmBody` + `create_head`), but the pooling follows the body's
output: an NCHW map (CNNs, MaxViT, CAFormer...) gets fastai's concat pooling, exactly as
fastai does; tokens (ViT, DeiT, EVA02, DINOv2) and channels-last maps (Swin, SwinV2) are
pooled by timm itself (`model(x)` without classifier), so the head always sees (batch,
features). The choice is worked out on the meta device at the run's input size, which also
turns a size the model cannot take into one line naming sizes it can.
"""

from __future__ import annotations

import re
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


# -- the network: timm's body, fastai's head, pooled the way the body's features allow -------------

#: How fastai's head gets (batch, features) from the body: `concat` (fastai's concat pooling of an
#: NCHW feature map: the CNNs, as fastai does) or `timm` (the body's own pooling, `model(x)` without
#: classifier: token models such as ViT, and models whose maps come out channels-last, e.g. Swin).
POOLINGS = ("concat", "timm")


def create_body(arch: str, size: int, **kwargs):
    """`timm.create_model(arch, num_classes=0, **kwargs)`, a bad option a one-line UsageError."""
    import timm

    try:
        return timm.create_model(arch, num_classes=0, **kwargs)
    except TypeError as e:
        if "drop_path_rate" in str(e):
            raise UsageError(f"{arch} has no stochastic depth (timm's drop_path_rate); "
                             "drop --drop-path.") from None
        if "unexpected keyword" in str(e):
            raise UsageError(f"{arch} does not take that option ({e}).") from None
        raise
    except AssertionError as e:  # timm checks img_size, window and patch sizes with asserts
        raise size_error(arch, size, e) from None


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [""])[-1][:200]) or type(e).__name__


def pooling_of(model, size: int) -> tuple[str, int]:
    """(pooling, width of the pooled features) of a headless timm `model` at `size` px.

    fastai pools the map itself (`concat`) where it always did: timm gives the model a pooling
    size and `forward_features` is an NCHW map with `num_features` channels. Everything else
    (tokens, NHWC maps) is pooled by timm: `model(x)` must then be (batch, features).
    Runs `model` on two images (no gradients, eval mode, random state untouched).

    Raises:
        UsageError: the model fails on `size` px images, or gives no (batch, features).
    """
    import torch

    x = torch.zeros(2, 3, size, size, device=next(model.parameters()).device)
    training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            features, pooled = model.eval().forward_features(x), model(x)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - timm's size checks raise AssertionError, RuntimeError, ...
        raise size_error(model.pretrained_cfg.get("architecture") or type(model).__name__, size, e) from None
    finally:
        model.train(training)
    nf = getattr(model, "num_features", None)
    if (model.pretrained_cfg.get("pool_size") and isinstance(features, torch.Tensor)
            and features.dim() == 4 and features.shape[1] == nf):
        return "concat", int(nf)
    if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2:
        what = list(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
        raise UsageError(f"fastinat cannot fine-tune {type(model).__name__}: without its classifier it "
                         f"gives {what}, not (batch, features).")
    return "timm", int(pooled.shape[1])


def feature_pooling(arch: str, size: int, timm_kwargs: dict) -> tuple[str, int] | None:
    """`pooling_of` worked out on the meta device (no memory, no arithmetic); None where the
    model does not run there (an operation without a meta kernel: ask the real model).

    Raises:
        UsageError: as `pooling_of`; a model that cannot be built for `size` px.
    """
    import torch

    kwargs = {k: v for k, v in timm_kwargs.items() if k != "pretrained_cfg_overlay"}
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return pooling_of(create_body(arch, size, pretrained=False, **kwargs), size)
    except UsageError as e:
        if _meta_only(e.__context__):
            return None
        if "px images" not in str(e):
            raise
        cause = e.__context__
    except Exception as e:  # noqa: BLE001 - timm builds size-dependent parts (windows, grids)
        if _meta_only(e):
            return None
        cause = e
    raise size_error(arch, size, cause, near=near_sizes(arch, size, kwargs)) from None


def near_sizes(arch: str, size: int, timm_kwargs: dict, reach: int = 64) -> list[int]:
    """The closest multiples of 8 below and above `size` (within `reach`) that `arch` runs at."""
    import torch

    def runs(s: int) -> bool:
        kwargs = {**timm_kwargs, **({"img_size": s} if "img_size" in timm_kwargs else {})}
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                pooling_of(create_body(arch, s, pretrained=False, **kwargs), s)
            return True
        except Exception:  # noqa: BLE001 - any failure: not this size
            return False

    below = next((s for s in range(size // 8 * 8, max(size - reach, 7), -8) if s != size and runs(s)), None)
    above = next((s for s in range(size // 8 * 8 + 8, size + reach + 1, 8) if runs(s)), None)
    return [s for s in (below, above) if s]


def _meta_only(e: BaseException | None) -> bool:
    """Whether `e` is the meta device's own limit (no kernel, no data), not the model's."""
    return isinstance(e, NotImplementedError) or re.search(r"\bmeta\b", str(e), re.IGNORECASE) is not None


def size_error(arch: str, size: int, e: BaseException, near: list[int] | None = None) -> UsageError:
    """'ARCH cannot take SIZE px images (why); pick another --size (...)' as a UsageError."""
    hint = f"e.g. {' or '.join(map(str, near))}; " if near else ""
    return UsageError(f"{arch} cannot take {size} px images ({type(e).__name__}: {_first_line(e)[:120]}); "
                      f"pick another --size ({hint}its weights were trained at {default_size(arch)}).")


def timm_classifier(arch: str, n_out: int, *, size: int, lin_ftrs: list[int], ps: float,
                    pretrained: bool = False, pooling: str | None = None, features: int | None = None,
                    **timm_kwargs):
    """(`nn.Sequential(TimmBody, head)`, pooling, pooled width): fastai's `create_timm_model` with
    the pooling of `feature_pooling` (or the one given, as a model card records it).

    The body's `model` is `timm.create_model(arch, num_classes=0, **timm_kwargs)` (state-dict keys
    `0.model.*`); the head is fastai's `create_head`, concat pooling first only for `concat`.
    """
    from fastai.vision.learner import TimmBody, add_head

    if pooling is None or features is None:
        pooling, features = feature_pooling(arch, size, timm_kwargs) or (None, None)
    model = create_body(arch, size, pretrained=pretrained, **timm_kwargs)
    if pooling is None or features is None:
        pooling, features = pooling_of(model, size)
    body = TimmBody(model, pretrained)
    body.needs_pool = pooling == "concat"  # TimmBody runs forward_features, else model(x)
    net = add_head(body, features, n_out, concat_pool=True, pool=body.needs_pool, lin_ftrs=lin_ftrs, ps=ps)
    return net, pooling, features
