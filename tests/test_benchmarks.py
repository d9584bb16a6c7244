"""`make bench` and benchmarks/gpu.sh in quick mode: every row is produced and the JSON is
well formed. The numbers mean nothing at these counts; the goals are read off `make bench`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"loader_baseline", "loader", "loader_presize", "fastai_default", "scratch_epoch_baseline",
        "scratch_epoch", "scratch_peak_rss", "scratch_step_channels_last", "malloc_tuning",
        "head_epoch_live", "head_epoch_cached", "import_fastai", "cli_help", "predict_one_by_one",
        "predict_batched", "report_sweep_seconds", "report_sweep_mb"}


def run(*args, timeout=900):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_every_benchmark_row_in_quick_mode(tmp_path):
    out = tmp_path / "results.json"
    proc = run("-m", "benchmarks", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == ROWS
    for name, r in results.items():
        assert set(r) == {"value", "unit", "baseline", "ratio"}, name
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0
                   for k in ("value", "baseline", "ratio")), name
        assert r["ratio"] == r["value"] / r["baseline"]
    for name in ROWS:
        assert name in proc.stdout  # the table


def test_a_measurement_runs_in_a_fresh_interpreter(monkeypatch):
    """Outside --quick every measurement has a process of its own: its answer comes back."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FASTINAT_BENCH_IN_PROCESS", raising=False)
    from benchmarks._worker import isolated

    got = isolated("os:getpid", {})
    assert "error" in got and "TypeError" in got["error"]  # getpid returns no dict: reported, not raised
    got = isolated("benchmarks._worker:probe", {"name": "FASTINAT_BENCH_PROBE"},
                   env={"FASTINAT_BENCH_PROBE": "child"})
    assert got["value"] == "child" and got["pid"] != os.getpid() and got["process_s"] > 0


def test_gpu_script_runs_on_a_cpu(tmp_path, monkeypatch, capsys):
    """In this process (its imports are paid already); the script tunes the process it runs in."""
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")]).returncode == 0
    monkeypatch.chdir(ROOT)
    from benchmarks.gpu import main

    out = tmp_path / "gpu.json"
    assert main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    results = json.loads(out.read_text())
    for key in ("loader", "scratch_train", "resnet50_train"):
        assert results[key] > 0
