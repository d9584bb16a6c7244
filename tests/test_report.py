"""`fastinat report`: one offline HTML page for runs and sweeps, and the findings it computes.

One tiny real run is trained per module; the sweeps are synthetic (the files a sweep leaves,
with a planted effect), so no test here trains more than that one run.
"""

from __future__ import annotations

import base64
import csv
import html as html_lib
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from fastinat.html_report.findings import sweep_findings
from fastinat.html_report.inputs import load_sweep
from fastinat.recipes.cli import app

runner = CliRunner()
RUN_SECTIONS = {"summary", "best-run"}


@pytest.fixture(scope="module")
def run(demo_data, tmp_path_factory) -> Path:
    """A scratch CNN trained for 2 epochs at 16 px on the demo digits (a few seconds)."""
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["scratch", "--data", str(demo_data), "--out", str(out), "--name", "a",
                                 "--size", "16", "--filters", "8,16", "--dense-units", "16", "--epochs", "2",
                                 "--bs", "64", "--workers", "0", "--no-wandb"])
    assert result.exit_code == 0, result.output
    return out / "a"


def copy_run(run: Path, dest: Path, config: dict | None = None, metrics: dict | None = None) -> Path:
    """A copy of `run` with some config.json and metrics.json values replaced."""
    shutil.copytree(run, dest)
    for name, changes in (("config.json", config), ("metrics.json", metrics)):
        data = json.loads((dest / name).read_text())
        target = data["config"] if name == "config.json" else data
        target.update(changes or {})
        (dest / name).write_text(json.dumps(data))
    return dest


def synthetic_sweep(root: Path, run: Path, effect: float, failed: bool = False) -> Path:
    """12 complete trials: augment x dropout x seed (a grid). valid_accuracy = 0.6 + effect when
    augment is on, +-0.01 by seed; dropout does nothing. TEST accuracy is planted the other way
    round, so a finding read off TEST would say the opposite."""
    sweep = root / f"sweep-{round(100 * effect)}"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"command": "scratch", "backend": "local"}))
    (sweep / "sweep.yaml").write_text("metric: {name: valid_accuracy, goal: maximize}\nparameters:\n"
                                      "  augment: {values: [true, false]}\n  dropout: {values: [0, 0.2, 0.4]}\n"
                                      "  seed: {values: [0, 1]}\n")
    rows, n = [], 0
    for augment in (True, False):
        for dropout in (0, 0.2, 0.4):
            for seed in (0, 1):
                valid = 0.6 + (effect if augment else 0) + (0.01 if seed else -0.01)
                folder = copy_run(run, sweep / "runs" / f"trial-{n:03d}",
                                  {"augment": augment, "dropout": dropout, "seed": seed},
                                  {"valid_accuracy": valid, "test_accuracy": 0.9 - (effect if augment else 0)})
                rows.append([n, "complete", valid, augment, dropout, seed, str(folder), ""])
                n += 1
    if failed:
        rows.append([n, "failed", "", True, 0.2, 0, "", "Images of 16 px are too small for 5 blocks"])
    rows.sort(key=lambda r: -(r[2] or 0))
    with open(sweep / "leaderboard.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["rank", "trial", "state", "valid_accuracy", "augment", "dropout", "seed", "run", "error"])
        out.writerows([i + 1, *r] for i, r in enumerate(rows))
    return sweep


class Page(HTMLParser):
    """What the tests look at: section ids, resource references, images, scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.refs, self.images, self.scripts, self.styles = [], [], [], [], []
        self._in = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        self.styles += [a["style"]] if a.get("style") else []
        if tag == "img":
            self.images.append(a["src"])
        self._in = tag if tag in ("script", "style") else None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)


def report(args: list[str]) -> tuple[object, Page | None]:
    result = runner.invoke(app, ["report", *map(str, args)])
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    return result, Page(out.read_text()) if out is not None and out.exists() else None


def check_offline(page: Page) -> None:
    """No http(s) resource reference; every picture decodes; every style url() is local."""
    assert not [r for r in page.refs if re.match(r"\s*(https?:)?//", r, re.I)]
    for css in page.styles:
        assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", css, re.I)
    for uri in page.images:
        head, data = uri.split(",", 1)
        assert head in ("data:image/png;base64", "data:image/jpeg;base64")
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            img.load()


def test_one_run(run, tmp_path):
    result, page = report([run, "--out", tmp_path / "r.html"])
    assert result.exit_code == 0, result.output
    assert set(page.sections) == RUN_SECTIONS | {"findings", "curves"}
    check_offline(page)
    assert len(page.images) >= 2 + 10 + 1  # grid, top losses, Grad-CAM per class, filters
    assert any("Plotly.newPlot" in s for s in page.scripts)


def test_two_runs_and_a_sweep_with_a_failed_trial(run, tmp_path):
    b = copy_run(run, tmp_path / "b", {"augment": False}, {"valid_accuracy": 0.05})
    history = (b / "history.csv").read_text().splitlines()
    head = history[0].split(",")
    diverged = ["nan" if h == "valid_loss" else v for h, v in zip(head, history[1].split(","), strict=True)]
    (b / "history.csv").write_text("\n".join([history[0], ",".join(diverged), *history[2:]]) + "\n")
    sweep = synthetic_sweep(tmp_path, run, 0.1, failed=True)
    result, page = report([run, b, sweep, "--out", tmp_path / "r.html", "--no-explain"])
    assert result.exit_code == 0, result.output
    assert "trial 12 failed: Images of 16 px" in result.output  # named in one line
    assert set(page.sections) == RUN_SECTIONS | {"problems", "findings", "curves", f"sweep-{sweep.name}"}
    check_offline(page)
    html = (tmp_path / "r.html").read_text()
    assert 'class="parcoords plot"' in html and "augment" in html
    assert "a vs b: " in html  # the runs' finding, the best run first


def test_a_sweep_of_runs_trained_with_tta_shows_their_tta_number(run, tmp_path):
    tta = copy_run(run, tmp_path / "tta", {"tta": True}, {"test_accuracy_tta": 0.4321, "tta_views": 6})
    sweep = synthetic_sweep(tmp_path, tta, 0.1)
    result, page = report([sweep, "--out", tmp_path / "r.html", "--no-explain"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert html.count("<th>TEST acc (TTA)</th>") == 2  # the runs' summary and the leaderboard
    assert len(re.findall(r"<td[^>]*>43\.2%</td>", html)) >= 12 + 1  # every trial, and the best one


def test_findings_name_a_planted_effect_and_never_use_test(run, tmp_path):
    found = sweep_findings(load_sweep(synthetic_sweep(tmp_path, run, 0.1)))
    clear = [f.text for f in found if f.clear]
    assert any(t.startswith("augment = True: +10.0 points mean valid accuracy over False (6 trials vs 6)")
               for t in clear), clear
    assert any(t == "augment True beat False in 6 of 6 paired trials" for t in clear), clear
    dropout = next(f for f in found if f.text.startswith("dropout"))
    assert not dropout.clear and "no clear best" in dropout.text


def test_findings_without_an_effect_say_not_clear(run, tmp_path):
    found = sweep_findings(load_sweep(synthetic_sweep(tmp_path, run, 0.0)))
    augment = [f for f in found if "augment" in f.text]
    assert augment and not any(f.clear for f in augment)
    assert "the difference between" in augment[0].text and "is not clear" in augment[0].text


def test_a_run_without_metrics_is_shown_as_such(run, tmp_path):
    crashed = copy_run(run, tmp_path / "crashed")
    (crashed / "metrics.json").unlink()
    result, page = report([crashed, "--out", tmp_path / "r.html", "--no-explain"])
    assert result.exit_code == 0, result.output
    assert "crashed: no metrics.json: crashed or still training; 2 epoch(s)" in result.output
    assert "problems" in page.sections and "best-run" not in page.sections


def test_a_folder_of_runs_and_sweeps_is_one_page_naming_them_all(run, tmp_path):
    """`fastinat report runs/`, as `tensorboard --logdir runs/`: the runs in it and the sweeps at
    any depth (runs/sweeps/...), each once (the `latest` link is not a second run; a sweep's
    trials belong to the sweep), next to a run named on its own."""
    runs = tmp_path / "runs"
    copy_run(run, runs / "a", {"augment": True}, {"valid_accuracy": 0.3})
    copy_run(run, runs / "b", {"augment": False}, {"valid_accuracy": 0.2})
    (runs / "latest").symlink_to(runs / "b", target_is_directory=True)
    (runs / "notes").mkdir()  # neither a run nor a sweep, and holds none: passed over
    sweep = synthetic_sweep(runs / "sweeps", run, 0.1)
    result, page = report([runs, runs / "a", "--out", tmp_path / "r.html", "--no-explain"])
    assert result.exit_code == 0, result.output
    assert set(page.sections) == RUN_SECTIONS | {"findings", "curves", f"sweep-{sweep.name}"}
    html = (tmp_path / "r.html").read_text()
    assert f"<title>fastinat report: a, b, sweep {sweep.name}</title>" in html
    summary = html[html.index('id="summary"'):]
    summary = summary[:summary.index("</table>")]  # the runs' table
    assert re.findall(r"<tr><td>([^<]+)</td>", summary) == ["a", "b", f"{sweep.name}/trial-001"]
    check_offline(page)


class Layout(HTMLParser):
    """Each element's (depth, tag, class) in document order, and figcaption texts."""

    def __init__(self, text: str):
        super().__init__()
        self.elements, self.captions, self._depth, self._caption = [], [], 0, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((self._depth, tag, dict(attrs).get("class", "")))
        if tag not in ("img", "br", "meta"):
            self._depth += 1
        self._caption = tag == "figcaption"

    def handle_endtag(self, tag):
        self._depth -= 1
        self._caption = False

    def handle_data(self, data):
        if self._caption:
            self.captions.append(data)


def test_the_per_value_box_plots_are_laid_out_below_their_table(run, tmp_path):
    """Their own block after the table's (a sibling, not inside or beside it), one figure per
    parameter named by a caption: no plotly title for the plot's buttons to cover."""
    sweep = synthetic_sweep(tmp_path, run, 0.1)
    result, _ = report([sweep, "--out", tmp_path / "r.html", "--no-explain"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    start = html.index("valid accuracy per parameter value</h3>") + len("valid accuracy per parameter value</h3>")
    part = html[start:html.index("<h3>Learning curves of the trials")]
    layout = Layout(part)
    blocks = [(tag, cls) for depth, tag, cls in layout.elements if depth == 0]
    assert blocks == [("div", "scroll tall"), ("div", "value-plots")], blocks
    figures = [e for e in layout.elements if e[1] == "figure"]
    assert len(figures) == 3 and {d for d, _, _ in figures} == {1}
    assert layout.captions == ["augment", "dropout", "seed"]
    figs = json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', html).group(1))
    boxes = [f for f in figs.values() if f["data"] and f["data"][0]["type"] == "box"]
    assert len(boxes) == 3 and not any("title" in f["layout"] for f in boxes)
    assert ".value-plots {" in html and "margin-top:16px" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

ERRORS = "<script>window.errors = []; window.addEventListener('error', function (e) { errors.push(e.message); });</script>"
PROBE = """<script>
setTimeout(function () {
  var out = [errors], plots = document.querySelector('.value-plots'), table = plots.previousElementSibling;
  out.push(table.getBoundingClientRect().bottom <= plots.getBoundingClientRect().top);
  plots.querySelectorAll('figure').forEach(function (f) {
    var r = f.getBoundingClientRect(), s = f.querySelector('.main-svg').getBoundingClientRect();
    out.push(s.top >= r.top && s.bottom <= r.bottom + 1 && s.height > 100);
  });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 1000);
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="a headless browser (Debian's chromium) draws the page")
@pytest.mark.parametrize("width", [1400, 700])
def test_in_a_browser_the_box_plots_are_drawn_below_the_table_and_the_script_runs(run, tmp_path, width):
    """Drawn by a real browser: no script error (the leaderboard's links and sorting run), and each
    box plot lies inside its own figure, below the per-value table."""
    import subprocess

    sweep = synthetic_sweep(tmp_path, run, 0.1)
    result, _ = report([sweep, "--out", tmp_path / "r.html", "--no-explain"])
    assert result.exit_code == 0, result.output
    head, _, tail = (tmp_path / "r.html").read_text().rpartition("</body>")
    page = (head + PROBE + "</body>" + tail).replace("<head>", "<head>" + ERRORS, 1)  # before the page's script
    (tmp_path / "probe.html").write_text(page)
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},3000",
                          "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "probe.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    probe = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout)
    assert probe, out.stderr[-2000:]
    errors, *placed = json.loads(html_lib.unescape(probe.group(1)))
    assert errors == [], f"the page's script failed: {errors}"
    assert placed == [True] * 4  # the block below the table; 3 plots inside their figures


@pytest.mark.parametrize("what, message", [
    ("empty", "is neither a run folder (it has no config.json) nor a sweep folder (no sweep.json), and holds "
              "none."),
    ("missing", "does not exist; give a run folder"),
])
def test_bad_paths_are_one_line_and_leave_no_file(tmp_path, what, message):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "r.html"
    out.write_text("the old report")
    result = runner.invoke(app, ["report", str(tmp_path / what), "--out", str(out)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert out.read_text() == "the old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "r.html"]  # no temporary file left
