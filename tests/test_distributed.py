"""Data-parallel training with torchrun: 2 CPU processes (gloo) on the demo digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: --standalone: a single-node rendezvous on a free port (parallel test runs don't collide)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
SPY = '''
import json, os, sys
from fastinat.distributed import ShardedDL

real = ShardedDL.get_idxs
SEEN = sys.argv[2]

def spy(self):  # what each rank trains on, per epoch
    idxs = real(self)
    with open(os.path.join(SEEN, f"rank{os.environ['RANK']}.jsonl"), "a") as fh:
        fh.write(json.dumps([int(i) for i in idxs]) + "\\n")
    return idxs

ShardedDL.get_idxs = spy
import runpy

# what `torchrun -m fastinat scratch ...` runs, with the spy in place
sys.argv = ["fastinat", "scratch", "--data", sys.argv[1], "--out", sys.argv[3], "--size", "16",
            "--filters", "8,16", "--dense-units", "16", "--epochs", "2", "--bs", "32", "--workers", "0",
            "--no-augment", "--no-wandb", "--lr", "1e-2"]
runpy.run_module("fastinat", run_name="__main__")
'''


def env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def run_folders(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]


def test_torchrun_runs_the_cli_on_disjoint_shards_into_one_run_folder(demo_data, tmp_path):
    script = tmp_path / "spy.py"
    script.write_text(SPY)
    seen, out = tmp_path / "seen", tmp_path / "runs"
    seen.mkdir()
    proc = subprocess.run([*TORCHRUN, str(script), str(demo_data), str(seen), str(out)], env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = run_folders(out)  # rank 0 alone wrote
    for name in ("config.json", "history.csv", "model.safetensors", "model.json", "metrics.json",
                 "valid_files.txt", "report"):
        assert (run / name).exists(), name
    assert json.loads((run / "config.json").read_text())["processes"] == 2
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, written once
    shards = {r: [json.loads(line) for line in (seen / f"rank{r}.jsonl").read_text().splitlines()]
              for r in (0, 1)}
    for epoch in range(2):
        a, b = shards[0][epoch], shards[1][epoch]
        assert len(a) == len(b) == 576  # 1,151 training images, padded to 2 equal shards
        assert len(set(a) | set(b)) == 1151  # together: the whole training split
        assert len(set(a) & set(b)) == 1  # disjoint but for the one padding image (fastai's
        assert b[-1] == a[0]  # DistributedDL repeats the first index to even the shards)
    assert shards[0][0] != shards[0][1]  # reshuffled every epoch
    assert proc.stdout.count("TEST (val/)") == 1  # one summary: rank 0's
