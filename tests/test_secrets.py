"""A sweep storage's password is never written: `safe_url`, sweep.json (0600), the command line
W&B records, error messages; where a process finds the password (`connect_url`). The end-to-end
test against a password-protected PostgreSQL server is in test_shared.py."""

from __future__ import annotations

import json
import os
import sys

import pytest
import yaml
from typer.testing import CliRunner

from fastinat.io import write_json
from fastinat.recipes.cli import app
from fastinat.sweeps.storage import ENV, connect_url, safe_url

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch):
    for name in (ENV, "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"command": ["fastinat", "scratch"], "method": "grid",
                                    "metric": {"name": "valid_accuracy", "goal": "maximize"},
                                    "parameters": {"dropout": {"values": [0.0, 0.2]}}}))
    return path


@pytest.mark.parametrize("url,safe", [
    ("postgresql://alice:hunter2@db/sweeps", "postgresql://alice@db/sweeps"),
    ("postgresql+psycopg://alice:p%40ss%3Aw%2F@db:5433/sweeps?sslmode=require&application_name=x",
     "postgresql+psycopg://alice@db:5433/sweeps?sslmode=require&application_name=x"),
    ("postgresql://al%40ice:pw@db/x", "postgresql://al%40ice@db/x"),  # an @ in the user name
    ("postgresql://:pw@db/x", "postgresql://db/x"),  # no user
    ("postgresql://db/x?user=alice&password=pw&sslmode=require", "postgresql://db/x?user=alice&sslmode=require"),
    ("postgresql://alice:pw@db/x?password=pw2", "postgresql://alice@db/x"),
    ("postgresql://alice:pa/ss@db/x", "postgresql://alice@db/x"),  # SQLAlchemy reads / as part of it
    ("postgresql://alice:p@ss@db/x", "postgresql://alice@db/x"),  # a bare @: none of it is kept
    ("postgresql://alice:p@ss@db", "postgresql://alice@db"),
    ("postgresql://alice@[::1]:5432/x", "postgresql://alice@[::1]:5432/x"),
    ("postgresql:///x?host=/var/run/postgresql", "postgresql:///x?host=/var/run/postgresql"),
    ("sqlite:////tmp/x:y@z/study.db", "sqlite:////tmp/x:y@z/study.db"),  # a path, not a user
    ("mysql://bob:secret@db/x", "mysql://bob@db/x"),
    ("not a url", "not a url"),
])
def test_safe_url_leaves_out_the_password_and_keeps_the_rest(url, safe):
    from sqlalchemy.engine import make_url

    assert safe_url(url) == safe and safe_url(safe) == safe
    if "@ss@" not in url and url.startswith(("postgresql", "mysql")):  # SQLAlchemy reads the same database
        before, after = make_url(url), make_url(safe)
        assert after.password is None and "password" not in after.query
        assert (after.username or None, after.host, after.port, after.database) == \
            (before.username or None, before.host, before.port, before.database)
        assert dict(after.query) == {k: v for k, v in before.query.items() if k != "password"}


@pytest.mark.parametrize("env,used", [
    ("postgresql+psycopg://alice:pw@db/sweeps", True),  # another spelling, the default port
    ("postgres://alice:pw@db:5432/sweeps?sslmode=require", True),
    ("postgresql://alice:pw@db/other", False),
    ("postgresql://bob:pw@db/sweeps", False),
    ("postgresql://alice:pw@db:5433/sweeps", False),
])
def test_fastinat_storage_gives_the_password_for_the_same_database_only(env, used, monkeypatch):
    stored = "postgresql://alice@db:5432/sweeps"
    monkeypatch.setenv(ENV, env)
    assert connect_url(stored) == (env if used else stored)
    assert connect_url("postgresql://alice:mine@db/sweeps") == "postgresql://alice:mine@db/sweeps"


def test_sweep_json_without_a_password_is_as_given_and_only_its_owner_reads_it(config, demo_data, tmp_path):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    for name, storage in (("own", []), ("shared", ["--storage", shared])):
        result = runner.invoke(app, ["sweep", str(config), "--data", str(demo_data), "--out", str(tmp_path),
                                     "--name", name, "--backend", "local", "--count", "0", *storage])
        assert result.exit_code == 0, result.output
        path = tmp_path / name / "sweep.json"
        own = f"sqlite:///{(tmp_path / name / 'study.db').resolve()}"
        meta = json.loads(path.read_text())
        assert meta["storage"] == (shared if storage else own) and meta["study"] == name
        assert set(meta) == {"command", "backend", "source", "overrides", "storage", "study", "metric", "goal",
                             "created", "wandb_sweep_id", "count"}
        assert path.stat().st_mode & 0o777 == 0o600  # also after `fastinat sweep` rewrote it (--count)
        assert "other machines join" not in result.output  # SQLite: the folder is shared, not a URL


def test_fastinat_storage_is_the_storage_when_none_is_given(config, demo_data, tmp_path, monkeypatch):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv(ENV, shared)
    result = runner.invoke(app, ["sweep", str(config), "--data", str(demo_data), "--out", str(tmp_path),
                                 "--name", "s", "--backend", "local", "--count", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["storage"] == shared


def test_a_rewrite_keeps_a_private_file_private(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1}, mode=0o600)
    write_json(tmp_path / "a.json", {"x": 2})
    write_json(tmp_path / "b.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_w_and_b_records_the_command_line_without_the_password(monkeypatch):
    given = ["fastinat", "sweep", "scratch", "--storage", "postgresql://alice:hunter2@db/x",
             "--storage=postgresql://alice:hunter2@db/x", "--name", "s"]
    monkeypatch.setattr(sys, "argv", given)
    seen = []
    monkeypatch.setattr("fastinat.sweeps.sweep", lambda *a, **k: seen.append(list(sys.argv)))
    result = runner.invoke(app, ["sweep", "scratch", "--storage", "postgresql://alice:hunter2@db/x"])
    assert result.exit_code == 0, result.output
    assert seen == [["fastinat", "sweep", "scratch", "--storage", "postgresql://alice@db/x",
                     "--storage=postgresql://alice@db/x", "--name", "s"]]
    assert sys.argv is given  # as it was


@pytest.mark.parametrize("url,message", [
    ("postgresql://alice:hunter2@127.0.0.1:9/x",
     "Cannot open the sweep's study storage postgresql://alice@127.0.0.1:9/x: "),
    ("postgresql://alice:hun@ter2@127.0.0.1:9/x",  # would look up the host "ter2@127.0.0.1"
     "The password in the sweep storage URL postgresql://alice@127.0.0.1:9/x holds an @: write it as %40"),
])
def test_a_storage_that_cannot_be_opened_is_one_line_without_the_password(url, message, config, demo_data,
                                                                        tmp_path):
    pytest.importorskip("psycopg")
    result = runner.invoke(app, ["sweep", str(config), "--data", str(demo_data), "--out", str(tmp_path / "o"),
                                 "--backend", "local", "--storage", url])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "hunter2" not in result.output and "ter2" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_a_password_an_older_sweep_json_holds_is_taken_out(config, demo_data, tmp_path):
    pytest.importorskip("psycopg")
    made = runner.invoke(app, ["sweep", str(config), "--data", str(demo_data), "--out", str(tmp_path),
                               "--name", "s", "--backend", "local", "--count", "0"])
    assert made.exit_code == 0, made.output
    path = tmp_path / "s" / "sweep.json"
    old = {**json.loads(path.read_text()), "storage": "postgresql://alice:hunter2@127.0.0.1:9/x"}
    path.write_text(json.dumps(old))
    path.chmod(0o644)
    result = runner.invoke(app, ["sweep", "--resume", str(tmp_path / "s"), "--count", "0"])
    assert result.exit_code == 2, result.output  # nothing listens there
    assert "Cannot open the sweep's study storage postgresql://alice@127.0.0.1:9/x: " in result.output
    assert "hunter2" not in result.output + path.read_text() and path.stat().st_mode & 0o777 == 0o600
