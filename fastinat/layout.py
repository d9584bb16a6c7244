"""Memory layout: channels_last where it is correct, plain NCHW for the layers where it is not.

    n = guard_layout(model)   # the layers oneDNN gets wrong on this CPU keep NCHW; returns how many
    layout_note(n)            # the one line a run prints about it ("" when n == 0)

fastinat runs models channels_last (NHWC): on a GPU, and on most CPUs, convolutions are faster
that way. On CPUs whose oneDNN kernels block channels by 8 (AVX2 and older, no AVX-512: many
AMD machines), oneDNN's 1x1 convolution computes *wrong weight gradients* in NHWC when it has
a stride above 1 and fewer input channels than the block: its "reduce to unit stride" copy
writes past its workspace (oneDNN issue 6035). Depending on the thread count that is a
segmentation fault, a step that never ends, or silently wrong gradients (measured with torch
2.14.1: `Conv2d(4, 8, 1, stride=2)` on a 32x4x32x32 batch, max weight-gradient difference
123.8 against NCHW; with 8 or more input channels, rounding only). The same layer in NCHW, and
every layer with a stride of 1, a larger kernel or enough channels, is correct.

`guard_layout` finds such layers (kernel 1x1, stride > 1, one group, input channels below the
block of the CPU's instruction set: 8 for AVX2 and older, 16 for AVX-512, where none was seen
wrong but the rule costs nothing; grouped and depthwise 1x1 convolutions take other kernels,
measured correct) and makes each run in NCHW on the CPU: a forward pre-hook
hands it its input contiguous and keeps its weight contiguous, and a hook on its output
hands its backward the incoming gradient contiguous, so oneDNN takes its blocked
(correct) path. Every other layer keeps channels_last, and on a GPU the hooks do nothing.
The instruction set is read from the CPU's flags, capped by `ONEDNN_MAX_CPU_ISA` (or
`DNNL_MAX_CPU_ISA`) as oneDNN caps it, which is how the tests reproduce an AVX2 machine on an
AVX-512 one.
"""

from __future__ import annotations

import os
import weakref
from functools import cache

import torch
from torch import nn

#: oneDNN's ISA names, weakest first; `ONEDNN_MAX_CPU_ISA` takes one of these (any case).
_ISA_ORDER = ["sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni",
              "avx512_core_bf16", "avx512_core_fp16", "avx512_core_amx", "avx512_core_amx_fp16",
              "avx10_1_512", "avx10_1_512_amx", "avx10_1_512_amx_fp16", "avx10_2_512",
              "avx10_2_512_amx_2"]
_AVX512 = _ISA_ORDER.index("avx512_core")
_guarded: weakref.WeakSet = weakref.WeakSet()  # the layers that have the NCHW hook


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@cache
def cpu_isa() -> str:
    """The instruction set oneDNN uses on this CPU: "avx512_core", "avx2", "avx" or "sse41"
    (the hardware's, capped by ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA as oneDNN caps it)."""
    flags = _cpu_flags()
    if flags:
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            isa = "avx512_core"
        else:
            isa = "avx2" if "avx2" in flags else "avx" if "avx" in flags else "sse41"
    else:  # not Linux: torch's own reading of the CPU
        cap = torch.backends.cpu.get_cpu_capability().lower()
        isa = "avx512_core" if cap.startswith("avx512") else "avx2" if cap.startswith("avx2") else "sse41"
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().lower()
    if cap in _ISA_ORDER and _ISA_ORDER.index(cap) < _ISA_ORDER.index(isa):
        isa = "avx512_core" if _ISA_ORDER.index(cap) >= _AVX512 else cap
    return isa


def channel_block(isa: str | None = None) -> int:
    """How many channels oneDNN's convolutions block together: 16 with AVX-512, else 8."""
    isa = isa or cpu_isa()
    return 16 if isa in _ISA_ORDER and _ISA_ORDER.index(isa) >= _AVX512 else 8


def unsafe_in_nhwc(conv: nn.Module, block: int) -> bool:
    """Whether oneDNN may get this layer's weight gradients wrong in NHWC (see the module docs)."""
    if not isinstance(conv, nn.Conv2d):
        return False
    stride = conv.stride if isinstance(conv.stride, tuple) else (conv.stride,) * 2
    return (tuple(conv.kernel_size) == (1, 1) and max(stride) > 1 and conv.groups == 1
            and conv.in_channels < block)


def _nchw_on_cpu(conv: nn.Conv2d, args):
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
        return None  # GPUs keep channels_last
    w = conv.weight
    if w.stride() != _nchw_strides(w.shape):  # model.to(memory_format=channels_last) made it NHWC
        w.data = w.data.clone(memory_format=torch.contiguous_format)
    if x.dim() == 4 and x.stride() != _nchw_strides(x.shape):
        return (x.clone(memory_format=torch.contiguous_format), *args[1:])
    return None


def _nchw_strides(shape) -> tuple[int, ...]:
    """NCHW strides of `shape`, size-1 dimensions included: torch calls a (8, 4, 1, 1) weight
    contiguous in either layout, but picks oneDNN's NHWC kernel from its strides."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _grad_contiguous(grad: torch.Tensor) -> torch.Tensor:
    if grad.dim() == 4 and grad.stride() != _nchw_strides(grad.shape):
        return grad.clone(memory_format=torch.contiguous_format)
    return grad


def _nchw_grad_on_cpu(conv: nn.Conv2d, args, out):
    """The gradient that reaches the layer's backward comes NCHW too (the next layer may hand
    it back channels_last, and oneDNN would then take its NHWC kernel again)."""
    if isinstance(out, torch.Tensor) and out.device.type == "cpu" and out.requires_grad:
        out.register_hook(_grad_contiguous)


def unsafe_layers(model: nn.Module, block: int | None = None) -> list[str]:
    """Names of the layers of `model` that oneDNN may get wrong in NHWC on this CPU."""
    block = block or channel_block()
    return [name for name, m in model.named_modules() if unsafe_in_nhwc(m, block)]


def guard_layout(model: nn.Module) -> int:
    """Make the layers oneDNN gets wrong in NHWC on this CPU run NCHW there (idempotent); the
    rest of `model` keeps its layout. Returns how many layers are guarded."""
    block = channel_block()
    n = 0
    for m in model.modules():
        if unsafe_in_nhwc(m, block):
            if m not in _guarded:
                m.register_forward_pre_hook(_nchw_on_cpu)
                m.register_forward_hook(_nchw_grad_on_cpu)
                _guarded.add(m)
            n += 1
    return n


def layout_note(n: int) -> str:
    """The one line a run prints when `guard_layout` guarded `n` > 0 layers ("" otherwise)."""
    if not n:
        return ""
    layers = "layer runs" if n == 1 else "layers run"
    return (f"channels_last: {n} {layers} in NCHW on this CPU ({cpu_isa()}): 1x1 convolutions with "
            f"a stride and fewer than {channel_block()} input channels get wrong gradients in "
            "oneDNN's channels_last kernels (oneDNN issue 6035).")
