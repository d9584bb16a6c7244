"""The suite fails instead of hanging: `make test`'s pytest-xdist options and pyproject.toml's time
limits, on a few generated tests that crash the interpreter, hang in Python and hang in native code.

Once a native crash ("Fatal Python error: Aborted" in loss.backward() on an AVX2-only CPU) took
down both xdist processes that were given its test in turn, and the run then waited forever:
`--dist loadfile` in pytest-xdist 3.8 reruns the test a process died in and can leave the rest
of its file with no process. See the test target in the Makefile and [tool.pytest.ini_options].
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS = {
    "test_guard_pass.py": """
        def test_passes_1():
            pass

        def test_passes_2():
            pass
        """,
    "test_guard_crash.py": """
        import os

        def test_aborts():
            os.abort()  # a native crash: SIGABRT, as from a failed check inside a C++ library

        def test_after_the_crash():
            pass
        """,
    "test_guard_sleep.py": """
        import time

        def test_sleeps_past_the_limit():
            time.sleep(60)
        """,
    "test_guard_native.py": """
        import ctypes

        def test_blocks_in_native_code():
            # A deadlock in C that holds the GIL: SIGALRM's Python handler never gets to run.
            api = ctypes.pythonapi
            api.PyThread_allocate_lock.restype = ctypes.c_void_p
            api.PyThread_acquire_lock.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lock = api.PyThread_allocate_lock()
            api.PyThread_acquire_lock(lock, 1)
            api.PyThread_acquire_lock(lock, 1)
        """,
}


def make_test_options() -> list[str]:
    """The pytest-xdist options of `make test` (the Makefile's test target)."""
    recipe = re.search(r"^test:.*\n\t(.*-m pytest .*)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "the Makefile's test target runs `python -m pytest`"
    options = re.findall(r"(--dist|--max-worker-restart)[ =](\S+)", recipe.group(1))
    assert any(name == "--dist" for name, _ in options), recipe.group(1)
    return [f"{name}={value}" for name, value in options]


def test_a_crash_and_hangs_fail_by_name_and_the_run_reaches_its_summary(tmp_path):
    for name, body in TESTS.items():
        (tmp_path / name).write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugins named here
    env["COLUMNS"] = "300"  # whole FAILED lines
    command = [
        sys.executable, "-m", "pytest", "-p", "xdist", "-p", "timeout", "-p", "no:cacheprovider",
        "-c", str(ROOT / "pyproject.toml"),  # timeout_method, faulthandler_exit_on_timeout
        "--rootdir", str(tmp_path), "--confcutdir", str(tmp_path), "--basetemp", str(tmp_path / "tmp"),
        "-n", "2", *make_test_options(), "--timeout=2", "-o", "faulthandler_timeout=3", str(tmp_path),
    ]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the xdist processes too
        out, _ = proc.communicate()
        raise AssertionError(f"pytest still running after 60 s:\n{out}") from None
    took = time.monotonic() - start

    assert proc.returncode == 1, out
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\b3 failed, 3 passed\b", summary), out
    failed = dict(re.findall(r"^FAILED (\S+) - (.*)$", out, re.M))
    assert "crashed while running" in failed["test_guard_crash.py::test_aborts"], out
    assert "Fatal Python error: Aborted" in out, out
    assert "Timeout (>2.0s) from pytest-timeout" in failed["test_guard_sleep.py::test_sleeps_past_the_limit"], out
    assert "crashed while running" in failed["test_guard_native.py::test_blocks_in_native_code"], out
    assert "test_guard_native.py" in out.split("Timeout (0:00:03)!")[1], "faulthandler's stack dump"
    assert took < 45, f"{took:.0f} s"
