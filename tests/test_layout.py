"""channels_last only where it is correct (`fastinat.layout`): oneDNN's AVX2 1x1 convolution
with a stride and fewer than 8 input channels gets its weight gradients wrong in NHWC (oneDNN
issue 6035: a crash, a hang or wrong numbers, by thread count).

`ONEDNN_MAX_CPU_ISA=AVX2` makes oneDNN on an AVX-512 machine take the AVX2 kernels, so these
tests reproduce an AVX2-only CPU anywhere, in a subprocess (the bug can crash the process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from fastinat import layout
from fastinat.layout import channel_block, cpu_isa, guard_layout, layout_note, unsafe_layers

ROOT = Path(__file__).resolve().parents[1]

# One weight-gradient check of Conv2d(4, 8, 1, stride=2) on a 32x4x32x32 batch, the issue's
# case: the layout a run uses (channels_last model and batch; `guard_layout` unless "bare")
# against float64 NCHW. Prints the relative error.
CHECK = """
import sys, torch
from fastinat.layout import guard_layout
torch.manual_seed(0)
conv = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 1, stride=2))
x = torch.randn(32, 4, 32, 32)
exact = __import__("copy").deepcopy(conv).double()
exact(x.double()).square().sum().backward()
if sys.argv[1] != "bare":
    guard_layout(conv)
conv = conv.to(memory_format=torch.channels_last)
conv(x.contiguous(memory_format=torch.channels_last)).square().sum().backward()
print(max(float((a.grad.double() - b.grad).norm() / b.grad.norm())
          for a, b in zip(conv.parameters(), exact.parameters())))
"""


def _as_avx2(threads: int) -> dict:
    return {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}


@pytest.fixture
def isa(monkeypatch):
    """Set the ISA cap as oneDNN reads it (and forget the cached reading before and after)."""
    def cap(value: str | None):
        if value is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", value)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        cpu_isa.cache_clear()

    yield cap
    cpu_isa.cache_clear()


def test_the_instruction_set_is_the_cpus_capped_as_onednn_caps_it(isa, monkeypatch):
    monkeypatch.setattr(layout, "_cpu_flags", lambda: {"avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"})
    isa(None)
    assert (cpu_isa(), channel_block()) == ("avx512_core", 16)
    isa("AVX2")
    assert (cpu_isa(), channel_block()) == ("avx2", 8)
    isa("avx512_core_amx")  # a cap above the hardware changes nothing
    assert cpu_isa() == "avx512_core"
    monkeypatch.setattr(layout, "_cpu_flags", lambda: {"avx", "avx2", "fma"})  # an AMD Zen 2, say
    isa(None)
    assert (cpu_isa(), channel_block()) == ("avx2", 8)


def test_the_layers_oneDNN_gets_wrong_are_1x1_strided_convolutions_with_few_input_channels():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 1, stride=2),             # 0: the issue's layer
        torch.nn.Conv2d(8, 8, 1, stride=2),             # 1: as many channels as AVX2's block
        torch.nn.Conv2d(8, 8, 1, stride=1),             # 2: no stride
        torch.nn.Conv2d(3, 8, 3, stride=2),             # 3: not 1x1
        torch.nn.Conv2d(8, 8, 1, stride=2, groups=8),   # 4: depthwise: other kernels (measured right)
        torch.nn.Conv2d(12, 16, 1, stride=(1, 2)),      # 5: a stride in one direction, 12 < 16
    )
    assert unsafe_layers(net, 8) == ["0"]
    assert unsafe_layers(net, 16) == ["0", "1", "5"]


def test_guarded_layers_run_nchw_on_the_cpu_and_the_rest_stays_channels_last():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2), torch.nn.Conv2d(8, 16, 3, padding=1))
    n = guard_layout(net)
    assert n == len(unsafe_layers(net)) and guard_layout(net) == n  # idempotent
    seen = {}
    for i, m in enumerate(net):  # after the guard's own hook: what the layer itself gets
        m.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0]))
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    out = net(x)
    out.sum().backward()
    if n:  # this CPU's block covers 4 channels: layer 0 ran NCHW, weight and input
        assert seen[0].stride() == (4 * 8 * 8, 8 * 8, 8, 1)
        assert net[0].weight.stride() == (4, 1, 1, 1)
    assert net[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert guard_layout(torch.nn.Conv2d(16, 8, 1, stride=2)) == 0


def test_the_one_line_note():
    assert layout_note(0) == ""
    line = layout_note(1)
    assert line.startswith("channels_last: 1 layer runs in NCHW on this CPU (") and "oneDNN issue 6035" in line
    assert "2 layers run" in layout_note(2) and "\n" not in line


def test_configure_learner_says_so_on_such_a_cpu(isa, demo_data, tmp_path):
    from conftest import demo_subset
    from fastinat import inat_dataloaders
    from fastinat.learner import finetune_learner
    from fastinat.train import configure_learner

    isa("AVX2")
    data = demo_subset(demo_data, tmp_path / "digits", 1, 1)
    dls = inat_dataloaders(data, size=32, bs=4, workers=0, progress=False, augment=False)
    learn = finetune_learner(dls, "fastvit_t8", pretrained=False, freeze="none", dense_units=(8,),
                             timm_kwargs={"layers": (1, 1, 1, 1), "embed_dims": (8, 16, 32, 64)})
    console = Console(record=True, width=300)
    configure_learner(learn, "fp32", console)
    assert "channels_last: 1 layer runs in NCHW on this CPU (avx2)" in console.export_text()


@pytest.mark.parametrize("threads", [1, 2, 6])
def test_the_issues_1x1_stride_2_case_gets_nchws_gradients_on_an_avx2_cpu(threads):
    done = subprocess.run([sys.executable, "-c", CHECK, "guarded"], env=_as_avx2(threads), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-5


def test_without_the_guard_the_same_case_fails_on_an_avx2_cpu():
    """The reproduction itself: one thread takes oneDNN's AVX2 kernel into a crash (or, on other
    machines, a hang or wrong numbers); any of them is the bug."""
    try:
        done = subprocess.run([sys.executable, "-c", CHECK, "bare"], env=_as_avx2(1), capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return  # the hang
    if done.returncode == 0:
        assert float(done.stdout.split()[-1]) > 1e-3  # wrong numbers
    assert done.returncode != 0 or float(done.stdout.split()[-1]) > 1e-3


def test_the_families_get_nchws_gradients_on_an_avx2_cpu():
    """tests/test_families.py's gradient check, as an AVX2-only CPU runs it (one thread: where
    fastvit's stem crashed the process before), for fastvit and two CNN families (all sixteen
    take 45 s; in-process, the test runs them all on whatever CPU the suite has)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(ROOT / "tests" / "test_families.py"), "-k",
         "gradients_of_nchw and (fastvit or resnet10t or efficientnet_b0 or convnext_atto)"],
        env=_as_avx2(1), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
