"""Run one benchmark measurement in a fresh Python process and hand its numbers back as JSON.

    from benchmarks._worker import isolated
    got = isolated("benchmarks.bench_loader:loader_pass", {"name": "loader", ...})
    # {"images": ..., "seconds": ..., ...}, or {"error": "...", "detail": "..."}

`isolated()` starts `python -m benchmarks._worker SPEC` (a new interpreter: nothing is forked,
so no process-global setting of one row, such as fastinat's glibc malloc tuning, a torch thread
count or an allocator's cached memory, leaks into another), waits for it and returns the dict
that `module:function(**kwargs)` returned there. The function does its own set-up and warm-up
before it times anything, so the ~3-8 s of importing torch/fastai in the new process is only
in the benchmark's wall time, never in its numbers.

`--quick` (`IN_PROCESS=1` in the environment) calls the function in this process instead: the
rows are all produced, in one interpreter, without paying the imports once per row (the numbers
of a quick run mean nothing anyway). `tests/test_benchmarks.py` checks both ways.

The worker prints its answer as one line `BENCH-RESULT {json}` on stdout (libraries may print
other lines); a function that raised gives {"error": one line, "detail": the end of the
message} and the worker still exits 0. A worker that died, printed no answer or ran past
`timeout` seconds gives an error dict too.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

PREFIX = "BENCH-RESULT "
HERE = Path(__file__).resolve().parent
#: Environment of the rows that must run with glibc's default malloc settings: even if some
#: fastinat code they import called `fastinat.perf.tune_malloc()`, it would do nothing there.
UNTUNED_ENV = {"FASTINAT_NO_MALLOC_TUNING": "1"}
#: Set to "1" (by `--quick`): measurements run in the calling process.
IN_PROCESS = "FASTINAT_BENCH_IN_PROCESS"
#: Seconds one measurement process may run before it is killed (its row then fails).
TIMEOUT = 600


def isolated(target: str, kwargs: dict, env: dict | None = None,
             timeout: float = TIMEOUT) -> dict:
    """`module:function(**kwargs)` in a fresh interpreter; its returned dict (JSON types only).

    `env` entries are added to this process's environment for the child (a value of None
    removes the variable). The child's own start-up time is in the answer as "startup_s"
    (interpreter start to the call of the function) and the whole round trip as "process_s".
    """
    start = time.perf_counter()
    if os.environ.get(IN_PROCESS) == "1":
        got = call(target, kwargs)
        got["process_s"] = time.perf_counter() - start
        return got
    child_env = dict(os.environ)
    child_env.setdefault("FASTINAT_CACHE", str(HERE / ".cache" / "fastinat"))
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = str(value)
    spec = json.dumps({"target": target, "kwargs": kwargs, "t0": time.time()})
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks._worker", spec],
                              cwd=HERE.parent, env=child_env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"TimeoutError: the measurement process ran past {timeout:.0f} s",
                "detail": ""}
    answers = [line[len(PREFIX):] for line in proc.stdout.splitlines() if line.startswith(PREFIX)]
    if not answers:
        tail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        last = tail[-1].strip() if tail else "no output"
        return {"error": f"the measurement process exited with status {proc.returncode} "
                         f"without an answer: {last}", "detail": "\n".join(tail[-6:])}
    got = json.loads(answers[-1])
    got["process_s"] = time.perf_counter() - start
    return got


def call(target: str, kwargs: dict, t0: float | None = None) -> dict:
    """`module:function(**kwargs)` here; its dict, or {"error", "detail"} when it raised."""
    module, _, name = target.partition(":")
    startup = float("nan")
    try:
        fn = getattr(importlib.import_module(module), name)
        startup = time.time() - (t0 or time.time())
        got = dict(fn(**kwargs))
    except Exception as e:  # the parent reports it as the row's error
        from . import error_text

        traceback.print_exc()
        got = {"error": error_text(e), "detail": "\n".join(str(e).strip().splitlines()[-6:])}
    got["startup_s"] = startup
    return got


def probe(name: str) -> dict:
    """The measurement process's pid and one environment variable (for the tests)."""
    return {"pid": os.getpid(), "value": os.environ.get(name)}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecations in fastai
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    got = call(spec["target"], spec["kwargs"], spec.get("t0"))
    sys.stdout.flush()
    print(PREFIX + json.dumps(got, allow_nan=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
