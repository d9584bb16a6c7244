"""The HTML page: escaping, tables, the style sheet, the script, and the one file they make.

Everything is inline: the style sheet, plotly.js (read from the installed plotly package, so
no network request), each figure's JSON, and every picture as a data: URI.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import datetime
from importlib import resources

from .._version import __version__
from ..errors import FastinatError

VOID = {"img", "br", "meta"}  # elements without an end tag
NUMBER = re.compile(r"^(-|[-+]?[0-9][0-9.,e+-]*( ?%| s| min)?( \(best \d+\))?)$")  # right-aligned cells


class Raw(str):
    """A piece of HTML that is not escaped again."""


def esc(value) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def tag(name: str, body="", **attrs) -> Raw:
    """`<name attrs>body</name>`; attribute names: class_ -> class, data_x -> data-x."""
    text = "".join(f' {k.rstrip("_").replace("_", "-")}="{html.escape(str(v))}"' for k, v in attrs.items()
                   if v is not None)
    return Raw(f"<{name}{text}>" if name in VOID else f"<{name}{text}>{esc(body)}</{name}>")


def join(parts) -> Raw:
    return Raw("".join(esc(p) for p in parts))


def table(headers: list, rows: list[list], *, id_=None, class_="", row_attrs: list[dict] | None = None,
          tall: bool = False) -> Raw:
    """A table in a scrolling box (`tall`: at most ~16 rows high); `row_attrs[i]` are the
    attributes of row i."""
    head = tag("thead", tag("tr", join(tag("th", h) for h in headers)))
    body = join(tag("tr", join(c if _is_td(c) else tag("td", c, class_="num" if NUMBER.match(str(c)) else None)
                               for c in r), **((row_attrs or [{}] * len(rows))[i]))
                for i, r in enumerate(rows))
    return tag("div", tag("table", join([head, tag("tbody", body)]), id=id_, class_=class_ or None),
               class_="scroll tall" if tall else "scroll")


def _is_td(cell) -> bool:
    return isinstance(cell, Raw) and cell.startswith("<td")


def image(uri: str | None, alt: str, class_: str = "pic") -> Raw:
    return tag("img", src=uri, alt=alt, class_=class_) if uri else tag("p", f"({alt}: not available)", class_="note")


class Page:
    """Sections and figures collected in order, then written as one self-contained page."""

    def __init__(self, title: str):
        self.title, self.sections, self.figures = title, [], {}

    def figure(self, fig: dict, class_: str = "plot", **attrs) -> Raw:
        fid = f"fig{len(self.figures)}"
        self.figures[fid] = finite(fig)
        return tag("div", "", id=fid, class_=class_, **attrs)

    def section(self, id_: str, title: str, *parts) -> None:
        self.sections.append((id_, title, tag("section", join([tag("h2", title), *parts]), id=id_)))

    def html(self, inputs: list[str]) -> str:
        nav = join(tag("a", title, href=f"#{sid}") for sid, title, _ in self.sections)
        when = datetime.now().strftime("%Y-%m-%d %H:%M")
        header = tag("header", join([tag("h1", self.title), tag("p", f"fastinat {__version__}, {when}; "
                                                                     f"from {', '.join(inputs)}", class_="note"),
                                     tag("nav", nav)]))
        figures = json.dumps(self.figures, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        body = join([header, tag("main", join(s for _, _, s in self.sections))])
        return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(self.title)}</title><style>{CSS}</style>"
                f"<script>{plotly_js()}</script></head>\n<body>{body}\n"
                f"<script type=\"application/json\" id=\"figures\">{figures}</script>\n"
                f"<script>{SCRIPT}</script></body></html>\n")


def finite(data):
    """`data` with every NaN or infinity replaced by None (a gap in a plot; JSON has no NaN)."""
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return None if isinstance(data, float) and not math.isfinite(data) else data


def plotly_js() -> str:
    """plotly.min.js from the installed plotly package (no network request).

    Raises:
        FastinatError: plotly is not installed.
    """
    try:
        text = resources.files("plotly").joinpath("package_data", "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError) as e:
        raise FastinatError(f"The report's plots need plotly ({type(e).__name__}); install it with "
                            "`pip install plotly`.") from None
    return text.replace("</script", "<\\/script")


CSS = """
:root { --ink:#1d2433; --muted:#5f6b7a; --line:#e3e7ee; --bg:#f6f7fb; --good:#1a7f37; --bad:#c62828; --accent:#4e79a7; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
header { background:#1d2433; color:#fff; padding:18px 32px 10px; position:sticky; top:0; z-index:10; }
header h1 { margin:0; font-size:22px; } header .note { color:#c9d1dd; margin:2px 0 6px; }
nav a { color:#cfe0ff; margin-right:16px; text-decoration:none; font-size:13px; } nav a:hover { text-decoration:underline; }
main { max-width:1280px; margin:0 auto; padding:16px 24px 60px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:8px 22px 18px; margin:18px 0; scroll-margin-top:90px; }
h2 { font-size:19px; border-bottom:1px solid var(--line); padding-bottom:6px; }
h3 { font-size:15px; margin:20px 0 6px; }
.note { color:var(--muted); font-size:13px; }
.scroll { overflow-x:auto; max-width:100%; }
.scroll.tall { max-height:480px; overflow-y:auto; }
table { border-collapse:collapse; font-size:13px; margin:6px 0 10px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
th { background:#eef1f6; position:sticky; top:0; cursor:default; }
table.sortable th { cursor:pointer; } table.sortable th:hover { background:#dde3ee; }
tbody tr:nth-child(even) { background:#fafbfd; }
tr.bad td { color:var(--bad); } tr.best td { font-weight:600; background:#eef7ee; }
tr.hot td { background:#fff3c4 !important; } tr.out { opacity:.28; }
td.wrap { white-space:normal; min-width:260px; max-width:560px; text-align:left; }
.bar { background:linear-gradient(90deg,#cfe0f3 var(--w),transparent var(--w)); }
ul.findings { list-style:none; padding:0; } ul.findings li { margin:8px 0; padding:6px 10px; border-left:4px solid var(--good); background:#f4faf5; }
ul.findings li.unclear { border-left-color:#b6bcc6; background:#f7f8fa; color:#3b4350; }
ul.findings .evidence { display:block; color:var(--muted); font-size:12px; }
.tag { display:inline-block; font-size:11px; padding:0 6px; border-radius:8px; margin-right:6px; background:var(--good); color:#fff; }
li.unclear .tag { background:#8a94a3; }
.problems li { color:var(--bad); }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(280px,1fr)); gap:10px; }
.grid img { width:100%; }
.value-plots { display:grid; grid-template-columns:repeat(auto-fill,minmax(300px,1fr)); gap:12px 18px; align-items:start;
         clear:both; margin-top:16px; padding-top:10px; border-top:1px solid var(--line); }
.value-plots figure { margin:0; min-width:0; position:relative; }
.value-plots figcaption { font-weight:600; font-size:13px; }
.pair { display:grid; grid-template-columns:1fr 1fr; gap:16px; align-items:start; }
img.pic { max-width:100%; border:1px solid var(--line); border-radius:4px; }
.info { min-height:1.6em; font-size:13px; color:var(--ink); background:#fffbe6; padding:4px 8px; border-radius:4px; }
.plot { width:100%; }
"""

SCRIPT = """
(function () {
  // plotGlPixelRatio 1: parcoords' hover picks the line under the mouse (at 2 it mostly misses)
  var config = {plotGlPixelRatio: 1, displaylogo: false, responsive: true, modeBarButtonsToRemove: ['sendDataToCloud']};
  var figures = JSON.parse(document.getElementById('figures').textContent);
  Object.keys(figures).forEach(function (id) {
    var f = figures[id];
    try { Plotly.newPlot(id, f.data, f.layout, config); }
    catch (e) { document.getElementById(id).textContent = 'This plot could not be drawn: ' + e; }
  });
  function inside(v, range) {
    if (!range || !range.length) return true;
    var ranges = Array.isArray(range[0]) ? range : [range];
    return ranges.some(function (r) { return v >= r[0] && v <= r[1]; });
  }
  // the report's parcoords figures only: plotly names elements inside them .parcoords too
  document.querySelectorAll('div.parcoords[data-board]').forEach(function (div) {
    var rows = Array.prototype.slice.call(document.querySelectorAll('#' + div.dataset.board + ' tr[data-line]'));
    var info = document.getElementById(div.dataset.info), idle = info.textContent;
    function byLine(i) { return rows.filter(function (r) { return +r.dataset.line === i; })[0]; }
    div.on('plotly_hover', function (d) {
      var row = byLine(d.curveNumber);
      rows.forEach(function (r) { r.classList.toggle('hot', r === row); });
      if (row) info.textContent = row.dataset.summary;
    });
    div.on('plotly_unhover', function () { rows.forEach(function (r) { r.classList.remove('hot'); }); });
    div.on('plotly_restyle', function () {
      var dims = div.data[0].dimensions, kept = 0;
      rows.forEach(function (r) {
        var i = +r.dataset.line;
        var ok = dims.every(function (d) { return inside(d.values[i], d.constraintrange); });
        r.classList.toggle('out', !ok); kept += ok ? 1 : 0;
      });
      info.textContent = kept === rows.length ? idle : kept + ' of ' + rows.length +
        ' complete trials inside the brushed ranges (greyed out in the leaderboard: the others).';
    });
  });
  document.querySelectorAll('table.sortable').forEach(function (t) {
    t.querySelectorAll('th').forEach(function (th, col) {
      th.title = 'sort';
      th.addEventListener('click', function () {
        var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows), up = th.dataset.up !== '1';
        function key(r) { var s = r.cells[col].textContent, n = parseFloat(s); return isNaN(n) ? s : n; }
        rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
        rows.forEach(function (r) { body.appendChild(r); });
        th.dataset.up = up ? '1' : '0';
      });
    });
  });
})();
"""
