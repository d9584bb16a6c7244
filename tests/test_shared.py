"""Several processes at once: two on one sweep (its SQLite study.db, or a real PostgreSQL server
this test starts), and two runs or sweeps started with the same --name."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tree_digest
from fastinat.errors import UsageError
from fastinat.recipes.cli import app

runner = CliRunner()
#: The cheapest real trial: a one-block CNN, one epoch at 16 px on two digits.
FIXED = {"filters": {"value": [4]}, "dense-units": {"value": 4}, "epochs": {"value": 1},
         "size": {"value": 16}, "bs": {"value": 8}, "workers": {"value": 0},
         "augment": {"value": False}, "lr": {"value": 1.0e-2}}


@pytest.fixture(scope="module")
def two_digits(demo_data, tmp_path_factory) -> Path:
    """Digits 0 and 1 of the demo, 10 train and 2 val images each."""
    root = tmp_path_factory.mktemp("two") / "digits"
    for split, n in (("train", 10), ("val", 2)):
        for digit in ("0", "1"):
            (root / split / digit).mkdir(parents=True)
            for f in sorted((demo_data / split / digit).iterdir())[:n]:
                shutil.copy(f, root / split / digit / f.name)
    return root


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump({
        "command": ["fastinat", "scratch"], "method": "random",
        "metric": {"name": "valid_accuracy", "goal": "maximize"},
        "parameters": {**FIXED, "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5}}}))
    return path


def fastinat(*args, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """`fastinat ARGS` in its own process (W&B off unless `env` says, the test's cache folder)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "COLUMNS": "200", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "fastinat", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def at_once(other: list, here: list, cwd: Path, timeout: float = 180) -> None:
    """`fastinat *other` in another process while `fastinat *here` runs in this one (it has paid
    for its imports already); both must exit 0 with no traceback and no locked database."""
    process = fastinat(*other, cwd=cwd)
    result = runner.invoke(app, [str(a) for a in here])
    out = process.communicate(timeout=timeout)[0]
    for code, text in ((process.returncode, out), (result.exit_code, result.output)):
        assert code == 0, text
        assert "Traceback" not in text and "database is locked" not in text and "Error:" not in text, text


def finished_trials(storage: str, study: str) -> list:
    import optuna

    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return [t for t in trials if t.state.is_finished() and not t.user_attrs.get("surplus")]


# -- SQLite: two processes on one sweep folder ------------------------------------------------

def test_two_processes_resume_one_sweep_and_share_its_trials(two_digits, config, tmp_path):
    made = runner.invoke(app, ["sweep", str(config), "--data", str(two_digits), "--out", str(tmp_path),
                               "--name", "s", "--backend", "local", "--count", "0"])
    assert made.exit_code == 0, made.output
    sweep = tmp_path / "s"
    at_once(["sweep", "--resume", sweep, "--count", 4], ["sweep", "--resume", sweep, "--count", 4], tmp_path)
    trials = finished_trials(f"sqlite:///{sweep / 'study.db'}", "s")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["params"]["dropout"] for t in trials}) == 4  # no values drawn twice
    runs = sorted(p.name for p in (sweep / "runs").iterdir() if not p.is_symlink())
    assert runs == [f"trial-{n:03d}" for n in range(4)]
    assert all((sweep / "runs" / r / "metrics.json").is_file() for r in runs)
    with open(sweep / "leaderboard.csv") as fh:  # the last process to finish saw every trial
        assert len(fh.read().splitlines()) == 1 + 4


# -- PostgreSQL: a throwaway server --------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A PostgreSQL server of its own (Debian's binaries), on a free 127.0.0.1 port; its URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        pytest.skip("the PostgreSQL server is not installed (apt-get install postgresql)")
    bin_dir = Path(found[-1]).parent
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="fastinat-pg-"))  # not under root's 0700 pytest folder
    if os.geteuid() == 0:  # initdb refuses root: run the server as an unprivileged user
        import pwd

        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a postgres/nobody user or runuser to start PostgreSQL")
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", user, "--"]
    port = _free_port()
    data = folder / "data"
    try:
        subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "fastinat", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True)
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o",
                        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise AssertionError(f"PostgreSQL did not start: {e.stderr.decode(errors='replace')}") from e
    try:
        yield f"postgresql://fastinat@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_two_sweep_processes_share_one_study_in_postgresql(two_digits, config, tmp_path, postgres):
    """Two machines' worth of `fastinat sweep ... --storage URL --name s` (each its own folder),
    one with each spelling of the URL: four distinct trials between them."""
    pytest.importorskip("psycopg")
    spellings = (postgres, postgres.replace("postgresql://", "postgresql+psycopg://"))
    common = ["sweep", config, "--data", two_digits, "--name", "s", "--backend", "local", "--count", 4]
    at_once([*common, "--out", tmp_path / "a", "--storage", spellings[0]],
            [*common, "--out", tmp_path / "b", "--storage", spellings[1]], tmp_path)
    trials = finished_trials(spellings[1], "s")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    runs = {t.user_attrs["run"] for t in trials}
    assert len(runs) == 4 and all(Path(tmp_path, r, "metrics.json").is_file() for r in runs)
    assert {Path(r).relative_to(tmp_path).parts[0] for r in runs} <= {"a", "b"}


def test_postgresql_without_its_driver_names_the_extra(config, demo_data, tmp_path, monkeypatch):
    import fastinat.sweeps.storage as storage

    monkeypatch.setattr(storage, "_installed", lambda module: False)
    for url in ("postgresql://me:secret@127.0.0.1:9/db", "postgresql+psycopg://me:secret@127.0.0.1:9/db"):
        result = runner.invoke(app, ["sweep", str(config), "--data", str(demo_data), "--out", str(tmp_path / "o"),
                                     "--backend", "local", "--storage", url])
        assert result.exit_code == 2, result.output
        assert "pip install 'fastinat[postgres]'" in result.output and "secret" not in result.output
        assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def password_role(url: str, user: str, password: str, database: str) -> str:
    """A role of the server at `url` that logs in over 127.0.0.1 with `password` only (SCRAM),
    owning a new `database`; its URL without the password."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(url)
    with psycopg.connect(host=server.host, port=server.port, user=server.username, dbname=server.database,
                         autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {database} OWNER {user}")
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    return f"postgresql://{user}@{server.host}:{server.port}/{database}"


def test_a_password_for_the_shared_study_is_never_written(two_digits, config, tmp_path, postgres,
                                                           monkeypatch):
    """The first process has the password in --storage (W&B on, offline: it records the command
    line); the next gets it from PGPASSWORD, then FASTINAT_STORAGE, then a pgpass file; without
    it the sweep stops in one line. No file of the sweep (trials, W&B's, sweep.json) holds it."""
    pytest.importorskip("psycopg")
    password = "hunter2@sw:eep"  # @ and : go into the URL percent-encoded
    url = password_role(postgres, "alice", password, "sweeps")
    given = url.replace("alice@", "alice:hunter2%40sw%3Aeep@")
    for name in ("PGPASSWORD", "FASTINAT_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # not this machine's ~/.pgpass
    sweep, outputs = tmp_path / "a" / "s", []

    def fastinat_with(env: dict, *args) -> str:
        process = fastinat(*args, cwd=tmp_path, env=env)
        out = process.communicate(timeout=180)[0]
        assert process.returncode == 0 and "Traceback" not in out, out
        return out

    outputs.append(fastinat_with({"WANDB_MODE": "offline", "WANDB_BASE_URL": "http://127.0.0.1:9"},
                                 "sweep", config, "--data", two_digits, "--out", tmp_path / "a", "--name", "s",
                                 "--backend", "local", "--count", 1, "--storage", given))
    assert f"other machines join with --storage {url} --name s" in outputs[-1]
    recorded, = sweep.glob("runs/trial-000/wandb/offline-run-*/run-*.wandb")  # W&B's copy of the command line
    assert b"--storage" in recorded.read_bytes()
    outputs.append(fastinat_with({"PGPASSWORD": password}, "sweep", "--resume", sweep, "--count", 2))
    pgpass = tmp_path / "pgpass"  # libpq's ~/.pgpass format: a : in the password is \:
    pgpass.write_text("127.0.0.1:*:sweeps:alice:" + password.replace(":", "\\:") + "\n")
    pgpass.chmod(0o600)
    for env, value in (("FASTINAT_STORAGE", given.replace("postgresql://", "postgresql+psycopg://")),
                       ("PGPASSFILE", pgpass)):
        with monkeypatch.context() as m:
            m.setenv(env, str(value))
            result = runner.invoke(app, ["sweep", "--resume", str(sweep), "--count", "0"])
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
    assert len(finished_trials(given, "s")) == 2
    refused = runner.invoke(app, ["sweep", "--resume", str(sweep), "--count", "0"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
    assert f"Cannot open the sweep's study storage {url}: " in refused.output
    outputs.append(refused.output)

    assert json.loads((sweep / "sweep.json").read_text())["storage"] == url
    assert (sweep / "sweep.json").stat().st_mode & 0o777 == 0o600
    files = [p for p in sweep.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 10 and any(p.name == "config.json" for p in files)
    for secret in ("hunter2", "sw%3Aeep"):
        assert [p for p in files if secret.encode() in p.read_bytes()] == []
        assert [out for out in outputs if secret in out] == []


# -- the same --name twice at once -----------------------------------------------------------------

@pytest.mark.parametrize("what", ["run", "sweep"])
def test_of_two_claims_on_one_name_exactly_one_wins(tmp_path, what):
    from fastinat.run_folder import claim_folder

    won, lost, start = [], [], threading.Barrier(8)

    def claim():
        start.wait()
        try:
            won.append(claim_folder(tmp_path / "out", "same", what, what))
        except UsageError as e:
            lost.append(str(e))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won == [tmp_path / "out" / "same"] and len(lost) == 7
    assert all(f"The {what} folder {tmp_path / 'out' / 'same'} already exists" in e for e in lost)


def test_timestamped_folders_started_in_the_same_second_differ(tmp_path):
    from fastinat.run_folder import claim_folder

    folders = [claim_folder(tmp_path, None, "scratch") for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() for f in folders)


def test_a_second_run_with_the_same_name_stops_and_mixes_no_files(two_digits, tmp_path, monkeypatch):
    args = ["scratch", "--data", str(two_digits), "--out", str(tmp_path), "--name", "x", "--size", "16",
            "--filters", "4", "--dense-units", "4", "--epochs", "1", "--workers", "0", "--no-wandb"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before = tree_digest(tmp_path / "x")
    # both checked the name before either made the folder: the second learns at its mkdir
    monkeypatch.setattr("fastinat.run_folder.check_name_free", lambda *a: None)
    second = runner.invoke(app, args)
    assert second.exit_code == 2 and "Traceback" not in second.output
    assert f"The run folder {tmp_path / 'x'} already exists" in second.output
    assert tree_digest(tmp_path / "x") == before


def test_two_sweeps_with_the_same_name_at_once(two_digits, config, tmp_path, monkeypatch):
    """The second of two sweeps started with one --name stops in one line; the first's folder is
    untouched (here the second reaches its mkdir while the first's trial runs)."""
    from fastinat.sweeps import run as sweep_run

    seen = {}
    real = sweep_run.run_trial

    def files(sweep_dir):  # study.db: the first sweep's trial heartbeat writes it meanwhile
        return {k: v for k, v in tree_digest(sweep_dir).items() if not k.startswith("study.db")}

    def run_trial(sweep_dir, *a, **k):
        if not seen:
            seen["folder"] = files(sweep_dir)
            with monkeypatch.context() as m:  # both checked the name before either made the folder
                m.setattr("fastinat.run_folder.check_name_free", lambda *a: None)
                seen["second"] = runner.invoke(app, ["sweep", str(config), "--data", str(two_digits), "--out",
                                                     str(tmp_path), "--name", "s", "--backend", "local"])
            assert files(sweep_dir) == seen["folder"]
        return real(sweep_dir, *a, **k)

    monkeypatch.setattr(sweep_run, "run_trial", run_trial)
    first = runner.invoke(app, ["sweep", str(config), "--data", str(two_digits), "--out", str(tmp_path),
                                "--name", "s", "--backend", "local", "--count", "1"])
    assert first.exit_code == 0, first.output
    second = seen["second"]
    assert second.exit_code == 2 and "Traceback" not in second.output, second.output
    assert f"The sweep folder {tmp_path / 's'} already exists" in second.output
