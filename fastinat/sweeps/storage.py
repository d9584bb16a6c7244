"""Where a local sweep's Optuna study lives: `SWEEP/study.db`, or a database several processes
or machines share.

    fastinat sweep scratch --storage postgresql://user@db-host/sweeps    # needs fastinat[postgres]
    fastinat sweep --resume runs/sweeps/scratch-20261128-120000          # in each process

* PostgreSQL: `postgresql://` (or `postgres://`) means SQLAlchemy's default driver,
  psycopg2; when only psycopg 3 is installed (`pip install 'fastinat[postgres]'`) the URL is
  read as `postgresql+psycopg://`. Either spelling works with either driver installed.
* SQLite: every process waits up to BUSY_TIMEOUT s for another's write to end, so two
  processes on one `study.db` never fail with "database is locked".

A running trial beats every HEARTBEAT s; one silent for GRACE s (its process was killed) is
failed, and run again once, when a process next works on the study. `PerTrialSeed` gives each
trial its own random stream, so processes that share a study never draw the same values.
"""

from __future__ import annotations

import importlib.util
import re
import time
import warnings

from ..errors import UsageError

HEARTBEAT, GRACE = 10, 30  # seconds
BUSY_TIMEOUT = 120  # seconds a SQLite write waits for another process's
POSTGRES_EXTRA = "pip install 'fastinat[postgres]'"
#: SQLAlchemy's name for a PostgreSQL driver -> the module it imports.
_PG_DRIVERS = {"psycopg2": "psycopg2", "psycopg": "psycopg", "psycopg2cffi": "psycopg2cffi",
               "pg8000": "pg8000", "asyncpg": "asyncpg"}
_PG_PACKAGES = {"psycopg2": "psycopg2-binary"}  # driver -> the package that installs it


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def database_url(url: str) -> str:
    """`url` as SQLAlchemy should read it: a PostgreSQL URL without a driver gets the installed one.

    Raises:
        UsageError: a PostgreSQL URL whose driver is not installed (names the extra to install).
    """
    scheme, sep, rest = url.partition("://")
    dialect, _, driver = scheme.partition("+")
    if not sep or dialect not in ("postgresql", "postgres"):
        return url
    chosen = driver
    if not driver:  # SQLAlchemy's default is psycopg2; fastinat[postgres] installs psycopg 3
        driver = "psycopg2" if _installed("psycopg2") or not _installed("psycopg") else "psycopg"
    if not _installed(_PG_DRIVERS.get(driver, driver)):
        fix = (f"pip install {_PG_PACKAGES.get(driver, driver)}, or {POSTGRES_EXTRA} and write "
               f"{safe_url('postgresql://' + rest)}" if chosen and chosen != "psycopg" else POSTGRES_EXTRA)
        raise UsageError(f"The sweep storage {safe_url(url)} needs a PostgreSQL driver ({driver} is not "
                         f"installed): {fix}.")
    return f"postgresql+{driver}://{rest}"


def safe_url(url: str) -> str:
    """`url` with its password hidden, to print."""
    scheme, sep, rest = url.partition("://")
    who, at, where = rest.rpartition("@")
    if not sep or not at or ":" not in who:
        return url
    return f"{scheme}://{who.split(':', 1)[0]}:***@{where}"


def open_storage(url: str):
    """The Optuna storage at `url` (see the module's docstring).

    Raises:
        UsageError: the URL, its database driver or the database cannot be used.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    if not url.startswith(("sqlite", "postgres", "mysql")):
        try:
            return optuna.storages.get_storage(url)
        except Exception as e:  # noqa: BLE001 - one line naming the URL
            raise _cannot_open(url, e) from None
    engine = {"connect_args": {"timeout": BUSY_TIMEOUT}} if url.startswith("sqlite") else {}
    if url.startswith("postgres"):
        engine = {"pool_pre_ping": True}  # a connection the server closed is replaced, not an error
    full = database_url(url)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)  # optuna 4.9 renames failed_trial_callback
                return RDBStorage(full, engine_kwargs=engine, heartbeat_interval=HEARTBEAT, grace_period=GRACE,
                                  failed_trial_callback=RetryFailedTrialCallback(max_retry=1))
        except Exception as e:  # noqa: BLE001 - a driver, URL or database error: one line naming the URL
            if attempt < 2 and _lost_race(e):  # another process made the tables at the same moment
                time.sleep(0.5 + attempt)
                continue
            raise _cannot_open(url, e) from None


def _lost_race(e: BaseException) -> bool:
    text = f"{e} {e.__cause__ or ''}".lower()
    return "already exists" in text or "duplicate key" in text


def _cannot_open(url: str, e: Exception) -> UsageError:
    cause = e.__cause__ if e.__cause__ is not None and not str(e).strip() else e
    text = re.sub(r"\(Background on this error at: [^)]*\)", "", str(cause))
    why = " ".join(text.split()[:30]) or type(cause).__name__
    return UsageError(f"Cannot open the sweep's study storage {safe_url(url)}: {why}")


class PerTrialSeed:
    """An Optuna sampler that samples trial k with `make(seed + k)`: processes that share a study
    never draw the same values, and a trial draws the same ones whichever process runs it. (A
    grid needs none: its point is the trial's number; its seed only shuffles the grid, once.)"""

    def __init__(self, make, seed: int):
        self.make, self.seed, self.inner = make, seed, make(seed)

    def before_trial(self, study, trial) -> None:
        self.inner = self.make(self.seed + trial.number)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
