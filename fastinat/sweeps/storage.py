"""Where a local sweep's Optuna study lives: `SWEEP/study.db`, or a database several processes
or machines share.

    fastinat sweep scratch --storage postgresql://user@db-host/sweeps    # needs fastinat[postgres]
    fastinat sweep --resume runs/sweeps/scratch-20261128-120000          # in each process

* PostgreSQL: `postgresql://` (or `postgres://`) means SQLAlchemy's default driver,
  psycopg2; when only psycopg 3 is installed (`pip install 'fastinat[postgres]'`) the URL is
  read as `postgresql+psycopg://`. Either spelling works with either driver installed.
* SQLite: every process waits up to BUSY_TIMEOUT s for another's write to end, so two
  processes on one `study.db` never fail with "database is locked".

A password is never written: `sweep.json`, printed lines and W&B's copy of the command line get
the URL without it (`safe_url`). A password given in `--storage` serves the process it was given
to (`keep_password`); every other process that joins or resumes supplies it itself: PostgreSQL's
own PGPASSWORD or `~/.pgpass` (libpq reads them when the URL has no password), or FASTINAT_STORAGE,
the whole URL, used when it names the same database (`connect_url`) or when --storage is not given.

A running trial beats every HEARTBEAT s; one silent for GRACE s (its process was killed) is
failed, and run again once, when a process next works on the study. `PerTrialSeed` gives each
trial its own random stream, so processes that share a study never draw the same values.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
import warnings
from urllib.parse import unquote

from ..errors import UsageError

HEARTBEAT, GRACE = 10, 30  # seconds
BUSY_TIMEOUT = 120  # seconds a SQLite write waits for another process's
POSTGRES_EXTRA = "pip install 'fastinat[postgres]'"
ENV = "FASTINAT_STORAGE"  # the whole storage URL, password included: never written
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
    """`url` without its password (after `user:`, or a `password=` query parameter): what is
    written and printed. Everything else (user, host, port, database, query) is kept as given,
    so a URL without a password comes back unchanged."""
    return _split_password(url)[0]


def _split_password(url: str) -> tuple[str, list[str]]:
    """(`url` without its password, the passwords it held as written, maybe percent-encoded)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, []
    found = []
    # SQLAlchemy's reading: user (no : or /), then the password up to an @ ...
    user = re.match(r"([^:/]*):([^@]*)@", rest)
    if user and user.group(2):
        # ... or up to the last @ before the host ends: a bare @ in a password (it should be %40)
        # hides no part of it either
        host = re.search(r"[/?]", rest[user.end():])
        end = rest.rfind("@", 0, user.end() + host.start() if host else len(rest))
        found.append(rest[user.end(1) + 1:end])
        rest = user.group(1) + rest[end:] if user.group(1) else rest[end + 1:]  # no user: no @ either
    base, q, query = rest.partition("?")
    kept = []
    for item in query.split("&") if q else []:
        key, _, value = item.partition("=")
        if unquote(key) == "password" and value:
            found.append(value)
        else:
            kept.append(item)
    if found and q:
        rest = base + ("?" + "&".join(kept) if kept else "")
    return (f"{scheme}://{rest}" if found else url), found


def _scrub(text: str, url: str) -> str:
    """`text` (a driver's message) without the passwords of `url`, encoded or not."""
    text = text.replace(url, safe_url(url))
    for secret in _split_password(url)[1]:
        for form in {secret, unquote(secret)}:
            text = text.replace(form, "***")
    return text


#: safe_url(url) -> url, for each URL with a password this process was given: the process
#: connects with it; nothing else ever sees it.
_given: dict[str, str] = {}


def keep_password(url: str) -> str:
    """`url` as it is written and printed (`safe_url`); its password stays in this process's
    memory, for `connect_url`."""
    safe = safe_url(url)
    if safe != url:
        _given[safe] = url
    return safe


def env_storage() -> str | None:
    """FASTINAT_STORAGE: the storage URL, password included, when --storage is not given."""
    return os.environ.get(ENV, "").strip() or None


def connect_url(url: str) -> str:
    """The URL to connect to the storage `url` names: `url` itself when it holds a password;
    else the one this process was given (`keep_password`); else FASTINAT_STORAGE when it names
    the same database; else `url`, and PostgreSQL's libpq reads PGPASSWORD or ~/.pgpass."""
    if safe_url(url) != url:
        return url
    if url in _given:
        return _given[url]
    env = env_storage()
    return env if env is not None and _database(env) == _database(url) else url


def _database(url: str):
    """What `url` names: (dialect, user, host, port, database), whatever the driver or password."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
        dialect = u.drivername.partition("+")[0]
        dialect = {"postgres": "postgresql"}.get(dialect, dialect)
        return dialect, u.username, u.host, u.port or {"postgresql": 5432, "mysql": 3306}.get(dialect), u.database
    except Exception:  # noqa: BLE001 - not SQLAlchemy's: the same URL, less its password
        return safe_url(url)


def sharing_note(url: str, study: str) -> str | None:
    """The line that tells how other machines join the study `study` in `url` (None: SQLite)."""
    if url.startswith("sqlite"):
        return None
    where = "PGPASSWORD, ~/.pgpass or FASTINAT_STORAGE" if url.startswith("postgres") else ENV
    return (f"Study {study} in {safe_url(url)}: other machines join with --storage {safe_url(url)} "
            f"--name {study}; a password is never written: each machine gives it in {where}.")


def open_storage(url: str):
    """The Optuna storage at `url`, with the password `connect_url` finds for it (see the
    module's docstring).

    Raises:
        UsageError: the URL, its database driver or the database cannot be used.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    url = connect_url(url)
    user = re.match(r"[^:/]*:([^@]*)@", url.partition("://")[2])
    if user and user.group(1) and "@" in _split_password(url)[1][0]:  # the rest would be the host
        raise UsageError(f"The password in the sweep storage URL {safe_url(url)} holds an @: write it as %40 "
                         "(and : / % as %3A %2F %25).")
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
    text = _scrub(re.sub(r"\(Background on this error at: [^)]*\)", "", str(cause)), url)
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
