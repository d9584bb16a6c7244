"""Part B groundwork: timm backbones by name, their real stages, and freeze strategies.

    check_arch("resnet5")          # FastinatError: Unknown architecture 'resnet5' (close: resnet50, ...)
    stages = backbone_stages(timm_model)          # ['act1', 'layer1', ..., 'layer4']
    groups = stage_split(body, k=2)               # [earlier params, last 2 stages (+ after)]

Stages come from timm's `feature_info` (the modules whose outputs are the feature maps),
not from substrings of parameter names. "The last K stages" means every backbone parameter
from the first parameter of stage N-K onwards, in registration order, so a ViT's final
norm or a ConvNeXt's pre-head norm trains with its last stages.
"""

from __future__ import annotations

import difflib
import re

from ..errors import FastinatError

FREEZE_MODES = ("head", "last:K", "none", "gradual")


def check_arch(name: str) -> str:
    """`name` if timm knows it, else a FastinatError listing close matches."""
    import timm

    known = timm.list_models()
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    close += [m for m in known if m.startswith(name) and m not in close][: 5 - len(close)]
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
    raise FastinatError(f"Unknown architecture {name!r}{hint}.")


def parse_freeze(mode: str) -> tuple[str, int | None]:
    """'head' | 'none' | 'gradual' -> (mode, None); 'last:K' -> ('last', K)."""
    mode = str(mode).strip().lower()
    if mode in ("head", "none", "gradual"):
        return mode, None
    m = re.fullmatch(r"last:(\d+)", mode)
    if m and int(m.group(1)) >= 1:
        return "last", int(m.group(1))
    raise FastinatError(f"Unknown freeze mode {mode!r}; use head, last:K (K >= 1), none or gradual.",
                        exit_code=2)


def backbone_stages(model) -> list[str]:
    """Module names of a timm model's stages, from its `feature_info`."""
    info = getattr(model, "feature_info", None)
    names = [f["module"] for f in info] if info else []
    if not names:
        raise FastinatError(f"{type(model).__name__} has no feature_info, so its stages are unknown; "
                            "use --freeze head, none or gradual.")
    return names


def stage_split(model, k: int) -> tuple[list, list]:
    """(parameters before the last `k` stages, parameters of the last `k` stages and after)."""
    stages = backbone_stages(model)
    if k > len(stages):
        raise FastinatError(f"last:{k} asks for more stages than the backbone has ({len(stages)}: "
                            f"{', '.join(stages)}).", exit_code=2)
    named = list(model.named_parameters())
    if k == len(stages):  # every stage, the stem included
        return [], [p for _, p in named]
    first = stages[len(stages) - k]
    start = next((i for i, (n, _) in enumerate(named) if n == first or n.startswith(first + ".")), None)
    if start is None:  # a stage without parameters of its own (e.g. an activation): next stage
        later = stages[len(stages) - k:]
        start = next(i for i, (n, _) in enumerate(named)
                     if any(n.startswith(s + ".") for s in later))
    return [p for _, p in named[:start]], [p for _, p in named[start:]]
