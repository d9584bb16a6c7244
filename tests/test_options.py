"""Every option defined once: --help, YAML, sweeps and range checks all come from fastinat.config;
one exit-code policy for every command (usage 2, content 1, Ctrl-C 130); old runs still work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from conftest import demo_subset
from fastinat.config import FinetuneConfig, ScratchConfig, SweepOptions
from fastinat.errors import UsageError
from fastinat.options import resolve, specs
from fastinat.recipes.cli import app

runner = CliRunner()
COMMANDS = {"scratch": ScratchConfig, "finetune": FinetuneConfig, "sweep": SweepOptions}
FIXTURE = Path(__file__).parent / "fixtures" / "scratch-v0"  # written by fastinat before the options moved


def click_params(command: str) -> dict:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


def cases():
    return [(command, name) for command, cls in COMMANDS.items() for name in specs(cls)]


def expected_default(cls, name: str) -> str:
    """The default as a user should read it, from a fresh instance of the config."""
    value, spec = getattr(cls(), name), specs(cls)[name]
    if value is None:
        return spec.shown or "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def bad_value(spec):
    """A value just outside the option's range or choices (None: it has neither)."""
    if spec.min is not None:
        return spec.min - 1
    if spec.above is not None:
        return spec.above
    if spec.below is not None:
        return spec.below
    if spec.max is not None:
        return spec.max + 1
    if spec.choices:
        return "nope"
    return None


@pytest.mark.parametrize("command,name", cases())
def test_every_option_from_its_one_definition(command, name, tmp_path):
    cls, spec = COMMANDS[command], specs(COMMANDS[command])[name]
    param = click_params(command)[name]
    assert spec.cli in param.opts, f"{spec.cli} is not a flag of fastinat {command}"
    assert f"[default: {expected_default(cls, name)}]" in param.help.replace("\\", "")
    assert param.default is None  # not given -> not passed -> the config's default applies
    if command != "sweep":  # a YAML key and a sweep parameter, both accepted with the default
        default = getattr(cls(), name)
        if default is not None:
            (tmp_path / "run.yaml").write_text(yaml.safe_dump({spec.cli[2:]: default}))
            assert getattr(resolve(cls, tmp_path / "run.yaml"), name) == default
            if name not in ("data", "out", "name"):
                sweep_yaml = {"command": ["fastinat", command], "method": "random",
                              "parameters": {spec.cli[2:]: {"value": default}}}
                (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep_yaml))
                from fastinat.sweeps.config import load_sweep_config

                assert load_sweep_config(tmp_path / "sweep.yaml").fixed()[name] == default
    bad = bad_value(spec)
    if bad is not None:
        result = runner.invoke(app, [command, spec.cli, str(bad)])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert lines == [f"Error: Bad option {spec.cli}: must be {spec.rule()}, got {bad!r}."] or \
            (len(lines) == 1 and f"Bad option {spec.cli}: must be" in lines[0]), result.output
        with pytest.raises(UsageError, match=f"Bad option {spec.cli}"):
            resolve(cls, overrides={name: bad})


@pytest.fixture(scope="module")
def broken(tmp_path_factory, demo_data):
    """Files and folders a user gets wrong: a file as a dataset, an empty class, bad weights, a run."""
    root = tmp_path_factory.mktemp("broken")
    (root / "a_file").write_text("not a folder")
    empty = demo_subset(demo_data, root / "empty_class", 10, 4)
    for f in (empty / "train" / "3").iterdir():
        f.write_bytes(b"not an image")
    (root / "garbage.pt").write_bytes(b"\x00garbage" * 10)
    (root / "run.yaml").write_text("epochs: [oops\n")
    run = root / "run"
    shutil.copytree(FIXTURE, run)
    truncated = root / "truncated_run"
    shutil.copytree(FIXTURE, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (root / "no_images").mkdir()
    return root


BAD_INPUTS = [  # (arguments, exit code, text in the one line); {root}: the `broken` folder
    (["scratch", "--dropout", "-0.5"], 2, "--dropout: must be at least 0 and below 1, got -0.5"),
    (["scratch", "--activation", "nope"], 2, "--activation: must be relu, elu, silu, gelu or mish"),
    (["scratch", "--activation", "rleu"], 2, "did you mean relu?"),
    (["scratch", "--filters", "8,16", "--kernel-sizes", "3,5,3"], 2, "3 kernel sizes for 2 blocks"),
    (["scratch", "--l2", "-1"], 2, "--l2: must be at least 0, got -1.0"),
    (["scratch", "--lr", "fast"], 2, "--lr: must be a number above 0, or auto, got 'fast'"),
    (["scratch", "--epochs", "abc"], 2, "Invalid value for '--epochs'"),
    (["scratch", "--epoch", "3"], 2, "No such option: --epoch"),
    (["scratch", "--data", "{root}/missing"], 2, "does not exist"),
    (["scratch", "--data", "{root}/a_file"], 2, "is a file, not a dataset folder"),
    (["scratch", "--data", "{root}/empty_class"], 1, "class folder train/3 has no readable image"),
    (["scratch", "--config", "{root}/run.yaml"], 2, "is not valid YAML"),
    (["scratch", "--config", "{root}/missing.yaml"], 2, "Cannot read the config file"),
    (["scratch", "--resume", "{root}/no_images"], 2, "is not a fastinat run folder"),
    (["scratch", "--resume", "{root}/run", "--epochs", "3"], 2, "drop --epochs"),
    (["finetune", "--arch", "resnet5"], 2, "Unknown architecture 'resnet5' (did you mean resnet50"),
    (["finetune", "--freeze", "last:0"], 2, "--freeze: unknown freeze mode 'last:0'"),
    (["finetune", "--cache-features", "--freeze", "none"], 2, "--cache-features needs --freeze head"),
    (["finetune", "--weights", "{root}/missing.pt"], 2, "--weights: no such file"),
    (["finetune", "--no-pretrained", "--weights", "{root}/garbage.pt"], 2, "drop --no-pretrained"),
    (["evaluate", "{root}/missing"], 2, "is not a run folder"),
    (["evaluate", "{root}/run", "--split", "train"], 2, "--split: must be test or valid"),
    (["evaluate", "{root}/truncated_run"], 1, "is damaged or truncated"),
    (["predict", "{root}/run", "{root}/no_images"], 2, "No image files found"),
    (["predict", "{root}/run", "{root}/run", "--top-k", "0"], 2, "--top-k: must be at least 1"),
    (["explain", "{root}/run", "--method", "saliency"], 2, "--method: must be gradcam, guided-backprop"),
    (["export", "{root}/run"], 2, "Choose a format: --onnx"),
    (["sweep", "--count", "-1"], 2, "--count: must be at least 0, got -1"),
    (["sweep", "no-such-sweep"], 2, "No sweep config no-such-sweep"),
    (["sweep", "scratch", "--backend", "cloud"], 2, "--backend: must be local or wandb"),
    (["sweep", "scratch", "--data", "{root}/empty_class", "--out", "{root}/sweeps", "--backend", "local",
      "--storage", "nosuchdb://x"], 2, "Cannot open the sweep's study storage nosuchdb://x"),
    (["data", "check", "{root}/missing"], 2, "does not exist"),
    (["data", "download", "{root}/dl", "--expected-bytes", "0"], 2, "--expected-bytes: must be at least 1"),
    (["data", "download", "{root}/dl", "--url", "ftp://127.0.0.1/x.zip"], 2, "--url: 'ftp://127.0.0.1/x.zip' is not a valid http(s) URL"),
    (["scatch"], 2, "No such command 'scatch'"),
]


@pytest.mark.parametrize("args,code,text", BAD_INPUTS, ids=[" ".join(a[0][:3]) for a in BAD_INPUTS])
def test_bad_input_is_one_line_and_its_exit_code(broken, demo_data, args, code, text, tmp_path):
    args = [a.replace("{root}", str(broken)) for a in args]
    if args[0] in ("scratch", "finetune") and "--data" not in args and "--resume" not in args:
        args += ["--data", str(demo_data)]
    if args[0] in ("scratch", "finetune") and "--resume" not in args:
        args += ["--out", str(tmp_path / "runs"), "--no-wandb", "--workers", "0"]
    before = {p: p.stat().st_mtime_ns for p in Path(demo_data).rglob("*")}
    result = runner.invoke(app, args)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.output
    assert not (tmp_path / "runs").exists()  # nothing was started
    assert {p: p.stat().st_mtime_ns for p in Path(demo_data).rglob("*")} == before


def test_yaml_written_by_hand_reads_as_meant(tmp_path):
    """Real config files: dashes or underscores, numbers YAML reads as text, lists as text,
    choices in any case, switches as yes/no."""
    (tmp_path / "run.yaml").write_text(
        "dense-units: 128\nlr: 1e-3\nfilters: 16 32 64\nkernel_sizes: 3\nactivation: ReLU\n"
        "augment: no\nprecision: FP32\nvalid_pct: 0.1\n")
    cfg = resolve(ScratchConfig, tmp_path / "run.yaml")
    assert (cfg.dense_units, cfg.lr, cfg.filters, cfg.kernel_sizes) == (128, 1e-3, [16, 32, 64], [3])
    assert (cfg.activation, cfg.augment, cfg.precision, cfg.valid_pct) == ("relu", False, "fp32", 0.1)
    (tmp_path / "bad.yaml").write_text("dense_units: [512, 256]\n")
    with pytest.raises(UsageError, match=r"--dense-units: expected a whole number, got \[512, 256\]"):
        resolve(ScratchConfig, tmp_path / "bad.yaml")


def test_ctrl_c_exits_130(monkeypatch, demo_data, tmp_path):
    import fastinat.train

    def interrupted(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastinat.train, "train_scratch", interrupted)
    result = runner.invoke(app, ["scratch", "--data", str(demo_data)])
    assert result.exit_code == 130 and result.output.strip() == "Error: Interrupted."


def test_a_run_from_before_the_change_resumes_evaluates_and_predicts(demo_data, tmp_path):
    run = tmp_path / "scratch-v0"
    shutil.copytree(FIXTURE, run)
    saved = json.loads((run / "config.json").read_text())
    saved["config"]["data"] = str(demo_data)  # the fixture was made on another machine's copy
    (run / "config.json").write_text(json.dumps(saved))
    resumed = runner.invoke(app, ["scratch", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming" in resumed.output and "after epoch 1 of 2" in resumed.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 2 and 0 <= metrics["test_accuracy"] <= 1
    evaluated = runner.invoke(app, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((run / "report" / "metrics.json").read_text())["accuracy"] == \
        pytest.approx(metrics["test_accuracy"])
    predicted = runner.invoke(app, ["predict", str(run), str(demo_data / "val" / "3"), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert all("label" in json.loads(ln) for ln in predicted.output.splitlines())


def test_counts_in_messages_have_their_plural_forms():
    from fastinat.config import ScratchConfig
    from fastinat.errors import plural

    assert (plural(1, "epoch"), plural(3, "epoch"), plural(0, "file")) == ("1 epoch", "3 epochs", "0 files")
    assert plural(2, "process", "processes") == "2 processes" and plural(1200, "image") == "1,200 images"
    with pytest.raises(UsageError) as e:
        resolve(ScratchConfig, overrides={"progressive": [16, 24, 32], "epochs": 1})
    assert "gives 3 sizes for 1 epoch;" in str(e.value)
