"""Library calls leave the process alone; process tuning does what it says; the speed layer's fences.

`fastinat.perf.tune_process` (malloc, OpenCV threads, cuDNN flags, warnings filters) belongs to
entry points that own the process: the `fastinat` command runs it once, before a command that
trains or evaluates. Library functions, training included, must leave the caller's torch and
OpenCV thread counts, its allocator, cuDNN's flags and its warnings filters as they were:
checked in a fresh subprocess, so nothing else has touched them.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, **env) -> str:
    """Run `code` in a fresh interpreter (this checkout's fastinat); its stdout."""
    import os

    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, **env}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def write_run(folder: Path, size: int = 16) -> Path:
    """A run folder with an untrained scratch CNN (model card + safetensors), as training writes it."""
    from safetensors.torch import save_file

    from fastinat.models.cnn import CNNConfig, ScratchCNN

    cfg = CNNConfig(n_classes=10, filters=(8, 16), kernel_sizes=(3, 3), activation="relu", batchnorm=True,
                    dropout=0.0, dense_units=16, padding="same")
    torch.manual_seed(0)
    model = ScratchCNN(cfg).eval()
    card = {"format": "fastinat-model/1", "kind": "scratch", "arch": "cnn", "model": cfg.to_dict(),
            "classes": [str(d) for d in range(10)], "input_size": size,
            "normalize": {"mean": [0.3] * 3, "std": [0.35] * 3}}
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(card))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


CALLS = ("load_model", "predict", "evaluate", "inat_dataloaders[workers=0]", "inat_dataloaders[workers=2]",
         "explain", "train_scratch", "train_scratch[workers=2]")


@pytest.fixture(scope="module")
def after_each_call(small_demo, tmp_path_factory) -> dict:
    """{call: the process's settings after it} from one fresh interpreter, started with 3 torch
    threads, 3 OpenCV threads, cuDNN's benchmark and deterministic both on, and one warnings
    filter of its own: settings no library call would choose. The start is recorded after
    fastinat's modules (and so fastai's, which add filters of their own at import) are imported."""
    folder = tmp_path_factory.mktemp("process")
    run = write_run(folder / "run")
    image = next((small_demo / "val" / "3").iterdir())
    out = run_python(f"""
        import json, warnings, cv2, torch
        torch.set_num_threads(3)
        cv2.setNumThreads(3)
        torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = True
        warnings.filterwarnings("error", message="the caller's own filter")
        import fastinat
        # what the calls import (third-party modules add warnings filters of their own at import)
        import fastinat.data.loaders, fastinat.distributed, fastinat.explain, fastinat.inference
        import fastinat.report, fastinat.train
        from fastinat import perf
        from rich.console import Console

        run, data, out = {str(run)!r}, {str(small_demo)!r}, {str(folder / "runs")!r}

        def state():
            return {{"torch threads": torch.get_num_threads(), "OpenCV threads": cv2.getNumThreads(),
                     "malloc tuned": perf.malloc_tuned(), "cudnn.benchmark": torch.backends.cudnn.benchmark,
                     "cudnn.deterministic": torch.backends.cudnn.deterministic,
                     "warnings.filters": [repr(f) for f in warnings.filters]}}

        def loaders(workers):
            dls = fastinat.inat_dataloaders(data, size=16, bs=32, workers=workers, progress=False,
                                            device="cpu")
            next(iter(dls.train)), next(iter(dls.valid))
            from fastinat.data.workers import close_workers
            close_workers(dls)

        def train(workers):
            fastinat.train_scratch(data=data, out=out, size=16, filters=[8, 16], dense_units=16, bs=64,
                                   workers=workers, epochs=1, lr=1e-2, wandb=False,
                                   console=Console(quiet=True))

        seen = {{"start": state()}}
        calls = {{
            "load_model": lambda: fastinat.load_model(run),
            "predict": lambda: fastinat.predict(run, data + "/val/3"),
            "evaluate": lambda: fastinat.evaluate(run, data=data, progress=False, console=Console(quiet=True)),
            "inat_dataloaders[workers=0]": lambda: loaders(0),
            "inat_dataloaders[workers=2]": lambda: loaders(2),
            "explain": lambda: fastinat.explain(run, [{str(image)!r}], method="gradcam"),
            "train_scratch": lambda: train(0),
            "train_scratch[workers=2]": lambda: train(2),
        }}
        for name, call in calls.items():
            call()
            seen[name] = state()
        print(json.dumps(seen))
        """)
    seen = json.loads(out.strip().splitlines()[-1])
    start = seen.pop("start")
    assert [start[k] for k in ("torch threads", "OpenCV threads", "malloc tuned", "cudnn.benchmark",
                               "cudnn.deterministic")] == [3, 3, False, True, True]
    assert any("the caller's own filter" in f for f in start["warnings.filters"])
    return {"start": start, **seen}


@pytest.mark.parametrize("call", CALLS)
def test_library_calls_leave_the_process_settings_alone(after_each_call, call):
    start, after = after_each_call["start"], after_each_call[call]
    for setting in ("torch threads", "OpenCV threads", "malloc tuned", "cudnn.benchmark", "cudnn.deterministic"):
        assert after[setting] == start[setting], (
            f"{call} changed {setting} from {start[setting]} to {after[setting]} (only "
            "fastinat.perf.tune_process may, in a process fastinat owns)")
    added = [f for f in after["warnings.filters"] if f not in start["warnings.filters"]]
    removed = [f for f in start["warnings.filters"] if f not in after["warnings.filters"]]
    assert after["warnings.filters"] == start["warnings.filters"], (
        f"{call} changed the warnings filters: added {added}, removed {removed}")


def test_the_command_line_tunes_its_process_once_before_the_command():
    """A command that trains or evaluates runs in a tuned process (cuDNN free to pick its fastest
    kernels, the import-time FutureWarning hidden); --help tunes nothing and imports no torch."""
    got = json.loads(run_python("""
        import json, sys
        from unittest import mock
        from fastinat import perf
        from fastinat.recipes.cli import app

        tuned = []
        real = perf.tune_process
        with mock.patch.object(perf, "tune_process", lambda: tuned.append(1) or real()):
            for argv in (["--help"], ["scratch", "--help"], ["scratch", "--no-such-flag"]):
                try:
                    app(argv, prog_name="fastinat")
                except SystemExit:
                    pass
            light = [len(tuned), "torch" in sys.modules]
            try:
                app(["scratch", "--data", "no-such-folder"], prog_name="fastinat")
            except SystemExit as e:
                code = e.code
        import torch, warnings
        jit = [f for f in warnings.filters if f[1] is not None and "script` is deprecated" in f[1].pattern]
        print(json.dumps({"light": light, "tuned": len(tuned), "code": code,
                          "cudnn": [torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic],
                          "cv2": __import__("cv2").getNumThreads(), "jit_filter": [f[0] for f in jit]}))
        """).strip().splitlines()[-1])
    assert got["light"] == [0, False], "--help or a usage mistake tuned the process or imported torch"
    assert got["code"] != 0  # no such dataset: a one-line error, after tuning
    assert got["tuned"] == 1 and got["cudnn"] == [True, False] and got["cv2"] == 1
    assert got["jit_filter"] == ["ignore"]


# -- process tuning (entry points only) ------------------------------------------------------

RSS_AFTER_FREE = """
    import os, json
    import cv2
    from fastinat import perf

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    applied = perf.tune_process()
    base = rss_mib()
    block = b"x" * (256 << 20)  # malloc'd and written: 256 MiB resident
    grown = rss_mib() - base
    del block
    kept = rss_mib() - base
    perf.trim_malloc()
    print(json.dumps({"applied": applied, "tuned": perf.malloc_tuned(), "cv2": cv2.getNumThreads(),
                      "grown": grown, "kept": kept, "trimmed": rss_mib() - base}))
"""

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc and /proc: Linux")


@linux
def test_tune_process_keeps_freed_memory_until_trimmed():
    got = json.loads(run_python(RSS_AFTER_FREE))
    assert got["applied"] and got["tuned"] and got["cv2"] == 1
    assert got["grown"] > 200
    assert got["kept"] > 200, "after tune_process a freed 256 MiB block should stay in the process"
    assert got["trimmed"] < 50, "trim_malloc should hand the freed block back to the kernel"


@linux
def test_malloc_tuning_can_be_turned_off():
    got = json.loads(run_python(RSS_AFTER_FREE, FASTINAT_NO_MALLOC_TUNING="1"))
    assert not got["applied"] and not got["tuned"] and got["cv2"] == 1
    assert got["grown"] > 200
    assert got["kept"] < 50, "untuned glibc returns a freed 256 MiB block to the kernel at once"


def test_worker_counts_follow_the_cores_and_the_processes_per_machine(monkeypatch):
    from fastinat import perf

    for cores, local, compute, decode in [(1, 1, 1, 2), (2, 1, 2, 4), (8, 2, 4, 16), (64, 1, 16, 16),
                                          (64, 8, 8, 16), (None, 1, 1, 2)]:
        monkeypatch.setattr(perf.os, "cpu_count", lambda c=cores: c)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
        assert (perf.compute_workers(), perf.decode_threads()) == (compute, decode), (cores, local)


# -- what inference.py's speed layer relies on in torch ---------------------------------------

def test_the_torch_internals_inference_copy_relies_on():
    """fastinat/inference.py names these in its docstring; a change in torch shows here."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    problems = []
    params = list(inspect.signature(fuse_conv_bn_eval).parameters)
    if params[:2] != ["conv", "bn"]:
        problems.append(f"torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn): now {params}")
    pool = nn.MaxPool2d(2)
    for name in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"):
        if not hasattr(pool, name):
            problems.append(f"nn.MaxPool2d.{name}")
    if not hasattr(nn.BatchNorm2d(3), "track_running_stats"):
        problems.append("nn.BatchNorm2d.track_running_stats")
    from fastinat.inference import _MONOTONIC

    for cls in _MONOTONIC:
        if not hasattr(cls(), "inplace"):
            problems.append(f"nn.{cls.__name__}.inplace")
    seq = nn.Sequential(nn.ReLU(), nn.Identity())
    if not (isinstance(seq._modules, dict) and list(seq._modules) == ["0", "1"]):
        problems.append("nn.Module._modules: an ordered dict of the children")
    assert not problems, "torch changed what fastinat/inference.py relies on:\n  " + "\n  ".join(problems)


def test_torch_thread_count_is_per_thread():
    """`predict_batches` sets one torch thread in its pool threads: the caller's count must not move."""
    before = torch.get_num_threads()
    seen = []
    t = threading.Thread(target=lambda: (torch.set_num_threads(1), seen.append(torch.get_num_threads())))
    t.start()
    t.join()
    try:
        assert seen == [1]
        assert torch.get_num_threads() == before, (
            "torch.set_num_threads in another thread changed this thread's count (not the OpenMP "
            "backend?): fastinat.inference.predict_batches must then restore it differently")
    finally:
        torch.set_num_threads(before)  # torch's default for threads started later
