"""The command line as a user meets it: help, version, start-up cost, `python -m fastinat`."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from fastinat import __version__
from fastinat.recipes.cli import app

runner = CliRunner()


def test_help_lists_existing_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "scratch", "finetune", "sweep", "evaluate", "predict", "export", "explain"):
        assert command in result.output


def test_data_help_lists_subcommands():
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    for sub in ("demo", "check", "download"):
        assert sub in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"fastinat {__version__}"


def test_help_does_not_import_torch_or_fastai():
    code = (
        "import sys\n"
        "from fastinat.recipes.cli import app\n"
        "try:\n"
        "    app(['--help', ], prog_name='fastinat')\n"
        "except SystemExit:\n"
        "    pass\n"
        "for cmd in (['data', '--help'], ['data', 'check', '--help'], ['scratch', '--help']):\n"
        "    try:\n"
        "        app(cmd, prog_name='fastinat')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'fastai', 'timm', 'wandb', 'sklearn') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in out.stdout


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "fastinat", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"fastinat {__version__}"


def test_every_subpackage_is_installed():
    """A plain `pip install .` ships exactly the packages listed in pyproject.toml."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "fastinat").rglob("__init__.py")}
    data = {"fastinat.recipes.presets", "fastinat.recipes.sweeps"}  # YAML-only packages (no __init__.py)
    assert found | {"fastinat.recipes"} | data == listed
    assert all(any((root / "recipes" / d.rsplit(".", 1)[1]).glob("*.yaml")) for d in data)
