"""`make bench` and benchmarks/gpu.sh in quick mode: every row is produced and the JSON is
well formed. The numbers mean nothing at these counts; the goals are read off `make bench`."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"loader_baseline", "loader", "loader_presize", "loader_strong", "fastai_default",
        "scratch_epoch_baseline", "scratch_epoch", "scratch_peak_rss", "scratch_step_channels_last", "malloc_tuning",
        "head_epoch_live", "head_epoch_cached", "import_fastai", "cli_help", "predict_one_by_one",
        "predict_batched", "predict_tta", "report_sweep_seconds", "report_sweep_mb", "proxy_mixup",
        "proxy_tta", "cost_ema", "cost_mixcut"}


def test_every_benchmark_row_in_quick_mode(tmp_path, monkeypatch, capsys):
    """`python -m benchmarks --quick`, in this process (whose imports are paid already)."""
    monkeypatch.chdir(ROOT)
    for name in ("FASTINAT_CACHE", "FASTINAT_BENCH_IN_PROCESS"):  # main() sets them: put them back after
        monkeypatch.setenv(name, os.environ.get(name, ""))
    from benchmarks.__main__ import main

    out = tmp_path / "results.json"
    code = main(["--quick", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == ROWS
    for name, r in results.items():
        assert set(r) == {"value", "unit", "baseline", "ratio"}, name
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0
                   for k in ("value", "baseline", "ratio")), name
        assert r["ratio"] == r["value"] / r["baseline"]
    for name in ROWS:
        assert name in stdout  # the table


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
    """In this process (its imports are paid already); the script tunes the process it runs in.
    One row of each section: a command's exit time, throughput rows, one preset's epoch."""
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")]).returncode == 0
    monkeypatch.chdir(ROOT)
    from benchmarks.gpu import main

    out = tmp_path / "gpu.json"
    assert main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    results = json.loads(out.read_text())
    for name in ("scratch", "evaluate"):
        row = results["exits"][name]
        assert row["rc"] == 0 and not row["hung"] and row["exit_after_last_line_s"] < 30, row
    for name in ("loader", "scratch", "resnet50_frozen"):
        assert results["throughput"][name]["img_per_s"] > 0
    (preset, row), = results["presets"].items()
    assert row["rc"] == 0 and row["epoch_seconds"] and row["estimated_full_preset_minutes"] > 0, row
    assert results["versions"]["torch"] and results["device"] == "cpu"
