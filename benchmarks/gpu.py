"""The GPU check: do runs exit, is the GPU kept busy, how long does each preset take?

    bash benchmarks/gpu.sh                        # on the GPU machine, from the repository root
    python -m benchmarks.gpu --quick --device cpu # the same code with tiny counts (the tests)

Three sections, each printed as it goes and written to `benchmarks/gpu_results.json`:

* `exits`: each user-facing command run as a user runs it (`python -m fastinat ...` on the demo
  digits: scratch, finetune with EMA + TTA + bf16, evaluate, predict, export --onnx, a 2-trial
  sweep, `reproduce --quick` with every preset in one process, and a 1-process torchrun),
  timing how long each process lives after its last line of output (goal: <= 5 s).
* `throughput`: in-process img/s of the training loader alone, the scratch CNN, ResNet50
  frozen (head only) and fully fine-tuned at 224 px, and ConvNeXt-Base at 384 px, each with
  the mean GPU utilisation over its timed batches and the peak GPU memory.
* `presets`: one epoch of each preset (`--config NAME`, random weights: no download) on
  10,000 synthetic photos plus a TEST set of 200 per class (nature_12K's sizes), through the
  CLI, and from the epoch times the hours `make reproduce` takes with the presets' own epochs.

`--budget SECONDS` (default 480) stops starting new rows once the time is spent, so the whole
check ends inside a device lease; rows that did not run say so. On a CPU (`--device cpu`,
`--quick`) it runs with tiny counts and one row of each kind, which is how the test suite checks
the script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEADLINE = [float("inf")]


def _left() -> float:
    return DEADLINE[0] - time.monotonic()


def _save(results: dict, out: Path) -> None:
    out.write_text(json.dumps(results, indent=2) + "\n")


# -- GPU utilisation ------------------------------------------------------------------------------

class GpuMonitor:
    """Samples GPU utilisation every 0.1 s (NVML, else nvidia-smi); `window()` gives the mean
    over a block. None everywhere on a machine without NVIDIA's driver."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self._read = self._reader()
        self._stop = threading.Event()
        if self._read is not None:
            threading.Thread(target=self._loop, daemon=True).start()

    @staticmethod
    def _reader():
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - no NVML: nvidia-smi, or nothing
            pass
        try:
            subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None

        def smi():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return float(out.split()[0])
        return smi

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self._read()))
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.1)

    def mean(self, start: float, end: float) -> float | None:
        vals = [u for t, u in self.samples if start <= t <= end]
        return round(sum(vals) / len(vals), 1) if vals else None

    def close(self):
        self._stop.set()


# -- exits: the commands as a user runs them ------------------------------------------------------

def _command(args: list[str], env: dict, timeout: float, quiet_limit: float | None = None) -> dict:
    """Run one command; how long it lived after its last line (None: killed as hung, at the
    timeout or after `quiet_limit` seconds without output, with its threads' stacks first:
    SIGABRT to faulthandler, PYTHONFAULTHANDLER=1)."""
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=ROOT)
    lines: list[str] = []
    last = [start]

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip())
            last[0] = time.monotonic()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    hung = False
    while proc.poll() is None:
        now = time.monotonic()
        if now - start > timeout or (quiet_limit is not None and now - last[0] > quiet_limit):
            hung = True
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            break
        time.sleep(0.05)
    end = time.monotonic()
    reader.join(timeout=5)
    text = [ln for ln in lines if ln.strip()]
    return {"rc": proc.returncode, "seconds": round(end - start, 1),
            "exit_after_last_line_s": None if hung else round(end - last[0], 2), "hung": hung,
            "last_line": text[-1][:200] if text else "", "tail": text[-40:] if hung else text[-8:] if proc.returncode else []}


def exits(opts, results: dict, out: Path) -> None:
    """Every command's exit time, on the demo digits, in two waves of parallel processes."""
    from concurrent.futures import ThreadPoolExecutor

    work = out.parent / "gpu_exits"
    digits = work / "digits"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    py = [sys.executable, "-m", "fastinat"]
    subprocess.run([*py, "data", "demo", str(digits)], env=env, cwd=ROOT, check=True, capture_output=True)
    small = ["--data", str(digits), "--size", "32", "--no-wandb"]
    first = {
        "scratch": [*py, "scratch", *small, "--epochs", "2", "--no-augment", "--out", str(work / "scratch")],
        "finetune_ema_tta_bf16": [*py, "finetune", *small, "--arch", "resnet18", "--no-pretrained", "--epochs", "1",
                                  "--ema", "0.99", "--tta", "--precision", "bf16" if opts.cuda else "fp32",
                                  "--out", str(work / "finetune")],
        "sweep_2_trials": [*py, "sweep", "recipes/sweeps/scratch.yaml", "--data", str(digits), "--size", "32",
                           "--epochs", "1", "--count", "2", "--out", str(work / "sweeps")],
        "reproduce_quick": [*py, "reproduce", "--quick", "--data", str(digits), "--out", str(work / "results"),
                            "--runs", str(work / "reproduce")],
        "torchrun_1_process": ["torchrun", "--standalone", "--nproc_per_node", "1", "-m", "fastinat", "scratch",
                               *small, "--epochs", "1", "--no-augment", "--out", str(work / "torchrun")],
    }
    run = str(work / "scratch" / "latest")
    second = {
        "evaluate": [*py, "evaluate", run],
        "predict": [*py, "predict", run, str(digits / "val" / "3")],
        "export_onnx": [*py, "export", run, "--onnx"],
    }
    if opts.quick:  # the test suite: one command of each wave
        first, second = {"scratch": first["scratch"]}, {"evaluate": second["evaluate"]}
    rows = results.setdefault("exits", {})
    for wave in (first, second):
        if _left() < 60:
            rows.update({k: {"skipped": "out of time"} for k in wave})
            break
        with ThreadPoolExecutor(max_workers=len(wave)) as pool:
            futures = {k: pool.submit(_command, v, env, max(30.0, _left() - 20), 60.0) for k, v in wave.items()}
            for name, f in futures.items():
                rows[name] = f.result()
                r = rows[name]
                print(f"exit  {name:24} rc {r['rc']:>3}  {r['seconds']:6.1f} s  exit after last line "
                      f"{r['exit_after_last_line_s']} s{'  HUNG' if r['hung'] else ''}", flush=True)
                for line in r["tail"]:
                    print(f"      | {line}", flush=True)
        _save(results, out)


# -- throughput: the loader and training steps in this process ------------------------------------

def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _loader_row(dl, batches: int, warmup: int, monitor: GpuMonitor) -> dict:
    it = iter(dl)
    for _ in range(warmup):
        next(it)
    _sync()
    start, n = time.monotonic(), 0
    for _ in range(batches):
        xb, _ = next(it)
        n += len(xb)
    _sync()
    end = time.monotonic()
    del it
    return {"img_per_s": round(n / (end - start), 1), "gpu_util_pct": monitor.mean(start, end)}


def _train_row(learn, batches: int, warmup: int, monitor: GpuMonitor) -> dict:
    import torch
    from fastai.callback.core import Callback, CancelFitException, CancelValidException

    class Clock(Callback):
        order = 99

        def before_fit(self):
            self.n, self.start, self.end = 0, None, None

        def after_batch(self):
            if not self.training:
                return
            if self.iter + 1 == warmup:
                _sync()
                self.start = time.monotonic()
            elif self.iter + 1 > warmup:
                self.n += len(self.learn.yb[0])
            if self.iter + 1 >= warmup + batches:
                _sync()
                self.end = time.monotonic()
                raise CancelFitException

        def before_validate(self):
            raise CancelValidException

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    clock = Clock()
    learn.fit_one_cycle(1, 1e-3, cbs=[clock])
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"img_per_s": round(clock.n / (clock.end - clock.start), 1),
            "gpu_util_pct": monitor.mean(clock.start, clock.end),
            "peak_gpu_mem_gib": None if peak is None else round(peak, 2)}


def _model_only_row(learn, bs: int, size: int, batches: int, warmup: int, monitor: GpuMonitor) -> dict:
    """The same network's step on one batch already on the device (plain torch, AMP on CUDA,
    channels_last): the most the model allows, what the pipeline row is measured against."""
    import torch

    model = learn.model
    device = next(model.parameters()).device
    x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,), device=device)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync()
    start = time.monotonic()
    for _ in range(batches):
        step()
    _sync()
    end = time.monotonic()
    return {"img_per_s": round(bs * batches / (end - start), 1), "gpu_util_pct": monitor.mean(start, end)}


def throughput(opts, results: dict, out: Path, root: Path, monitor: GpuMonitor) -> None:
    from fastinat import inat_dataloaders
    from fastinat.data.workers import close_all_workers
    from fastinat.learner import finetune_learner, scratch_learner
    from fastinat.perf import release_memory
    from fastinat.train import configure_learner

    rows = results.setdefault("throughput", {})
    size, big = (32, 48) if opts.quick else (224, 384)
    plan = [("loader", size, opts.bs, None),
            ("scratch", size, opts.bs, lambda d: scratch_learner(d)),
            ("resnet50_frozen", size, opts.bs, lambda d: finetune_learner(d, "resnet50", pretrained=False,
                                                                          freeze="head")),
            ("resnet50_full", size, opts.bs, lambda d: finetune_learner(d, "resnet50", pretrained=False,
                                                                        freeze="none")),
            ("convnext_base_384", big, max(2, opts.bs // 4),
             lambda d: finetune_learner(d, "convnext_base", pretrained=False, freeze="none"))]
    dls_cache = {}
    for name, sz, bs, make in plan[:3] if opts.quick else plan:
        if _left() < 30:
            rows[name] = {"skipped": "out of time"}
            continue
        key = (sz, bs)
        if key not in dls_cache:
            close_all_workers()
            dls_cache.clear()
            dls_cache[key] = inat_dataloaders(root, size=sz, bs=bs, workers=opts.workers, device=opts.device,
                                              progress=False)
        dls = dls_cache[key]
        try:
            if make is None:
                row = _loader_row(dls.train, opts.batches, opts.warmup, monitor)
            else:
                learn = make(dls)
                precision = configure_learner(learn, "auto")
                row = {**_train_row(learn, opts.batches, opts.warmup, monitor), "precision": precision}
                if name in ("resnet50_full", "convnext_base_384") or opts.quick and name == "scratch":
                    model = _model_only_row(learn, bs, sz, opts.batches, opts.warmup, monitor)
                    row["model_only_img_per_s"] = model["img_per_s"]
                    row["model_only_gpu_util_pct"] = model["gpu_util_pct"]
                del learn
        except Exception as e:  # noqa: BLE001 - a row that fails says why; the others still run
            row = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
        row.update(size=sz, bs=bs, workers=opts.workers)
        rows[name] = row
        release_memory()
        print(f"rate  {name:24} " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        _save(results, out)
    close_all_workers()
    release_memory()


# -- presets: one epoch of each, as `fastinat --config NAME` runs it --------------------------------

def _preset_args(name: str) -> tuple[list[str], dict]:
    """CLI options for one epoch of preset `name` with random weights (and what they change)."""
    from fastinat.options import load_yaml
    from fastinat.presets import find_config

    saved = load_yaml(find_config(name))
    args, notes = ["--epochs", "1", "--no-wandb"], {}
    if saved.get("progressive"):  # one epoch at the last (largest) size: an upper bound per epoch
        args += ["--progressive", str(saved["progressive"][-1])]
        notes["progressive"] = f"timed at {saved['progressive'][-1]} px, its largest size"
    if saved["command"] == "finetune":
        args += ["--no-pretrained"]
        if saved.get("freeze") == "gradual":
            args += ["--freeze-epochs", "1"]  # one head-only epoch, then one full epoch
    return [saved["command"], "--config", name, *args], saved


def _epoch_seconds(run: Path) -> list[float]:
    import csv

    with open(run / "history.csv") as f:
        return [float(r["time"]) for r in csv.DictReader(f) if r.get("time")]


def presets(opts, results: dict, out: Path, root: Path) -> None:
    from fastinat.presets import presets as preset_files

    rows = results.setdefault("presets", {})
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    runs = out.parent / "gpu_presets"
    for name in list(preset_files())[:1] if opts.quick else preset_files():
        if _left() < 45:
            rows[name] = {"skipped": "out of time"}
            continue
        args, saved = _preset_args(name)
        cmd = [sys.executable, "-m", "fastinat", *args, "--data", str(root), "--out", str(runs / name)]
        if opts.quick:
            cmd += ["--size", "32", "--bs", "8"] + (["--progressive", "32"] if saved.get("progressive") else [])
        row = _command(cmd, env, max(30.0, _left() - 15))
        run = runs / name / "latest"
        if row["rc"] == 0 and (run / "history.csv").exists():
            secs = _epoch_seconds(run)
            row["epoch_seconds"] = secs
            epochs = int(saved.get("epochs", 1))
            if saved.get("freeze") == "gradual" and len(secs) >= 2:
                head = int(saved.get("freeze_epochs", 1))
                full_run = head * secs[0] + epochs * secs[1]
            else:
                full_run = epochs * secs[-1]
            row["preset_epochs"] = epochs + (int(saved.get("freeze_epochs", 1)) if saved.get("freeze") == "gradual"
                                             else 0)
            row["estimated_full_preset_minutes"] = round((full_run + row["seconds"] - sum(secs)) / 60, 1)
        rows[name] = row
        print(f"preset {name:18} rc {row['rc']}  {row['seconds']} s  epochs {row.get('epoch_seconds')}  "
              f"full preset about {row.get('estimated_full_preset_minutes')} min", flush=True)
        for line in row["tail"]:
            print(f"      | {line}", flush=True)
        _save(results, out)


# -- the check --------------------------------------------------------------------------------------

def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "timm", "fastai", "fastcore", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000, help="synthetic training photos (default 10,000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--batches", type=int, default=40, help="timed batches per throughput row")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--budget", type=float, default=480, help="seconds; no new row starts after them")
    p.add_argument("--only", default="exits,throughput,presets", help="sections, comma-separated")
    p.add_argument("--quick", action="store_true", help="tiny counts: only checks that it runs")
    p.add_argument("--out", type=Path, default=HERE / "gpu_results.json")
    opts = p.parse_args(argv)
    begin = time.monotonic()
    DEADLINE[0] = begin + opts.budget
    if opts.quick:
        opts.images, opts.bs, opts.batches, opts.warmup, opts.workers = 60, 8, 2, 1, 1
    os.environ.setdefault("FASTINAT_CACHE", str(HERE / ".cache" / "fastinat"))
    import torch

    from fastinat.perf import tune_process

    from .synthetic import synthetic_dataset

    opts.device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    opts.cuda = opts.device.type == "cuda"
    sections = set(opts.only.split(","))
    results = json.loads(opts.out.read_text()) if opts.out.exists() and sections != {
        "exits", "throughput", "presets"} else {}
    results.update({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(opts.device),
                    "gpu": torch.cuda.get_device_name(0) if opts.cuda else None, "cores": os.cpu_count(),
                    "versions": _versions(), "quick": opts.quick})
    print(f"GPU check on {results['gpu'] or 'cpu'}, {os.cpu_count()} cores, torch {torch.__version__}", flush=True)
    tune_process()
    monitor = GpuMonitor()
    try:
        if "exits" in sections:
            exits(opts, results, opts.out)
        if sections & {"throughput", "presets"}:
            t = time.monotonic()
            root = synthetic_dataset(opts.images, val_per_class=2 if opts.quick else 200, log=print,
                                     unique=None if opts.quick else 1500)
            results["synthetic"] = {"train_images": opts.images, "test_per_class": 2 if opts.quick else 200,
                                    "distinct": None if opts.quick else 1500,
                                    "seconds_to_make": round(time.monotonic() - t, 1)}
        if "throughput" in sections:
            throughput(opts, results, opts.out, root, monitor)
        if "presets" in sections:
            presets(opts, results, opts.out, root)
    finally:
        monitor.close()
        results["seconds"] = round(time.monotonic() - begin, 1)
        _save(results, opts.out)
    print(f"wrote {opts.out} ({results['seconds']} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
