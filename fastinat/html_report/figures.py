"""The report's pictures: plotly figures as plain dicts (drawn in the browser by the embedded
plotly.js, so no plotly Python objects are built), and static images as data: URIs.

Static pictures come from the run folder's TEST report (report/*.png) and from
`fastinat.explain` (Grad-CAM, first-layer filters), drawn by `fastinat.explain.draw`. A big
PNG of photographs is re-encoded as JPEG so that a report stays small.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from .findings import Metric, groups, is_number

CATEGORIES = 8  # a parameter with at most this many values gets evenly spaced ticks
JPEG_ABOVE = 100_000  # bytes: a bigger PNG (photographs) is embedded as a JPEG
TABLEAU = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


def palette(n: int) -> list[str]:
    """One colour per run: Tableau's ten, or evenly spaced hues for more."""
    if n <= len(TABLEAU):
        return list(TABLEAU[:n])
    return [f"hsl({round(360 * i / n)}, 65%, {42 + 10 * (i % 2)}%)" for i in range(n)]


def _layout(height: int, **more) -> dict:
    return {"height": height, "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "font": FONT,
            "paper_bgcolor": "white", "plot_bgcolor": "white", "hovermode": "closest", **more}


def curves_figure(runs) -> dict:
    """Train loss, valid loss and valid accuracy per epoch; one colour per run, legend shared."""
    panels = (("train_loss", "train loss"), ("valid_loss", "valid loss"), ("valid_accuracy", "valid accuracy"))
    data = []
    for colour, run in zip(palette(len(runs)), runs, strict=True):
        epochs = [r["epoch"] for r in run.history]
        for i, (col, title) in enumerate(panels):
            data.append({"type": "scatter", "mode": "lines+markers", "name": run.label,
                         "legendgroup": run.label, "showlegend": i == 0, "x": epochs,
                         "y": [r.get(col) for r in run.history], "xaxis": f"x{i + 1 if i else ''}",
                         "yaxis": f"y{i + 1 if i else ''}", "line": {"color": colour, "width": 2},
                         "marker": {"size": 4},
                         "hovertemplate": f"{run.label}<br>epoch %{{x}}<br>{title} %{{y:.4f}}<extra></extra>"})
    layout = _layout(380, legend={"orientation": "h", "y": -0.22}, annotations=[])
    for i, (_, title) in enumerate(panels):
        n = i + 1 if i else ""
        layout[f"xaxis{n}"] = {"domain": [i / 3 + 0.02, (i + 1) / 3 - 0.04], "title": {"text": "epoch"},
                               "anchor": f"y{n}", "gridcolor": "#eee", "dtick": 1 if _epochs(runs) <= 20 else None}
        layout[f"yaxis{n}"] = {"anchor": f"x{n}", "gridcolor": "#eee", "title": {"text": title},
                               **({"range": [0, 1.02]} if "accuracy" in title else {})}
    return {"data": data, "layout": layout}


def _epochs(runs) -> int:
    return max((len(r.history) for r in runs), default=0)


def _axis(label: str, values: list[str]) -> dict:
    """One parallel-coordinates axis: a few values (a `values:` list) as evenly spaced ticks in
    their order; many numbers on a number line (log10 when they span two decades or more)."""
    distinct = sorted(set(values), key=lambda v: (float(v), v) if is_number(v) else (math.inf, v))
    if len(distinct) <= CATEGORIES or not all(is_number(v) for v in distinct):
        return {"label": label, "values": [distinct.index(v) for v in values],
                "tickvals": list(range(len(distinct))), "ticktext": distinct}
    nums = [float(v) for v in values]
    if min(nums) > 0 and max(nums) / min(nums) >= 100:
        ticks = list(range(math.floor(math.log10(min(nums))), math.ceil(math.log10(max(nums))) + 1))
        return {"label": f"{label} (log)", "values": [math.log10(x) for x in nums], "tickvals": ticks,
                "ticktext": [f"{10.0 ** t:g}" for t in ticks]}
    return {"label": label, "values": nums}


def parcoords_figure(sweep, trials) -> dict:
    """Parameters -> metric, one line per complete trial, coloured by the metric."""
    m = Metric(sweep.metric, sweep.goal)
    dims = [_axis(k, [str(t.params.get(k, "")) for t in trials]) for k in sweep.keys]
    values = [t.value for t in trials]
    dims.append({"label": m.words, "values": values})
    line = {"color": values, "colorscale": "Viridis", "reversescale": m.sign < 0, "showscale": True,
            "colorbar": {"title": {"text": m.words, "side": "right"}, "thickness": 12}}
    return {"data": [{"type": "parcoords", "dimensions": dims, "line": line,
                      "labelangle": -20, "labelside": "top"}],
            "layout": _layout(460, margin={"l": 130, "r": 70, "t": 90, "b": 30})}


def bars_figure(shares: dict[str, float], title: str) -> dict:
    names = sorted(shares, key=shares.get)
    return {"data": [{"type": "bar", "orientation": "h", "y": names, "x": [shares[n] for n in names],
                      "marker": {"color": "#b07aa1"}, "hovertemplate": "%{y}: %{x:.3f}<extra></extra>"}],
            "layout": _layout(60 + 28 * len(names), xaxis={"title": {"text": title}, "gridcolor": "#eee", "rangemode": "tozero"},
                              margin={"l": 110, "r": 20, "t": 34, "b": 45})}


def values_figure(sweep, key: str) -> dict:
    """The metric of every complete trial per value of `key`: a box per value, every trial a dot."""
    m = Metric(sweep.metric, sweep.goal)
    trials = sweep.complete()
    data = []
    for g in groups(trials, key):
        numbers = [t.number for t in trials if str(t.params.get(key)) == g.label]
        data.append({"type": "box", "name": f"{g.label} (n={g.n})", "y": g.values, "boxpoints": "all",
                     "jitter": 0.4, "pointpos": 0, "text": [f"trial {n}" for n in numbers],
                     "marker": {"color": "#4e79a7", "size": 6}, "line": {"color": "#4e79a7"},
                     "fillcolor": "rgba(78,121,167,0.15)", "boxmean": True,
                     "hovertemplate": "%{text}: %{y:.4f}<extra></extra>"})
    return {"data": data, "layout": _layout(280, showlegend=False,  # named by its <figcaption>
                                            yaxis={"title": {"text": m.words}, "gridcolor": "#eee"},
                                            xaxis={"automargin": True},
                                            margin={"l": 60, "r": 10, "t": 30, "b": 60})}  # t: the buttons


def confusion_figure(cm: list[list[int]], classes: list[str]) -> dict:
    """Counts as text, colour by share of the true class (recall), rows: true class."""
    share = [[c / max(sum(row), 1) for c in row] for row in cm]
    n = len(classes)
    return {"data": [{"type": "heatmap", "z": share, "x": classes, "y": classes, "text": cm,
                      "texttemplate": "%{text}", "colorscale": [[0, "#f7fbff"], [0.5, "#6baed6"], [1, "#08306b"]], "zmin": 0, "zmax": 1,
                      "colorbar": {"title": {"text": "share of row"}, "thickness": 12},
                      "hovertemplate": "true %{y}, predicted %{x}: %{text} (%{z:.0%} of the row)<extra></extra>"}],
            "layout": _layout(max(360, 120 + 34 * n), width=max(460, 160 + 40 * n),
                              xaxis={"title": {"text": "predicted"}, "type": "category", "tickangle": -40},
                              yaxis={"title": {"text": "true"}, "type": "category", "autorange": "reversed"})}


# -- static images -------------------------------------------------------------------------------

def image_uri(path: Path) -> str | None:
    """A picture file as a data: URI (a big PNG re-encoded as JPEG), or None when unreadable."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    if len(raw) <= JPEG_ABOVE:
        return "data:image/png;base64," + base64.b64encode(raw).decode()
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
    except (OSError, UnidentifiedImageError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def one_per_class(data: Path, classes: list[str]) -> list[Path]:
    """One TEST image (val/<class>/, the first by name) per class."""
    from ..inference import image_files

    out = []
    for c in classes:
        files = image_files([data / "val" / c]) if (data / "val" / c).is_dir() else []
        out += files[:1]
    return out


def explanations(run) -> tuple[list[str], list[str], str | None]:
    """(Grad-CAM pictures of one TEST image per class, first-layer filter pictures, a note).

    Filters only for a scratch CNN; Grad-CAM only when the run's dataset is where config.json
    says. A run whose weights cannot be used gives no pictures and a note saying why.
    """
    import tempfile

    from ..errors import FastinatError
    from ..explain import draw, explain
    from ..inference import load_model

    try:
        model = load_model(run.path)
        classes = model.fastinat_card["classes"]
        data = Path(run.config.get("data") or "")
        files = one_per_class(data, classes)
        note = None if files else f"No Grad-CAM: the dataset {data} is not here (val/<class>/)."
        with tempfile.TemporaryDirectory(prefix="fastinat-report-") as tmp:
            cams = draw(explain(model, files, method="gradcam"), Path(tmp) / "cam") if files else []
            kernels = draw(explain(model, [], method="filters"), Path(tmp) / "filters") \
                if run.command == "scratch" else []
            return [image_uri(p) for p in cams], [image_uri(p) for p in kernels], note
    except FastinatError as e:
        return [], [], f"No Grad-CAM or filters: {e}"
