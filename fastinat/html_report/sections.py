"""The report's sections, in page order: problems, runs, findings, curves, sweeps, the best run."""

from __future__ import annotations

import re

from . import figures as fig
from .findings import Finding, Metric, groups, run_findings, sweep_findings, variance_share
from .inputs import Run, Sweep, differing, json_object, per_class
from .page import Page, Raw, image, join, table, tag

WIDE = 6  # more differing options than this share one column


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def seconds(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f} s" if v < 90 else f"{v / 60:.1f} min"


def shown(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-") or "x"


def problems_section(page: Page, problems: list[str]) -> None:
    if problems:
        page.section("problems", "Problems", tag("ul", join(tag("li", p) for p in problems), class_="problems"),
                     tag("p", "Runs without metrics are listed with their problem; failed trials are in "
                              "the leaderboard with their error.", class_="note"))


def best_trials(sweeps: list[Sweep]) -> list[tuple[Run, str]]:
    """(run, note) of each sweep's best complete trial that has its run folder."""
    out = []
    for s in sweeps:
        best = next((t for t in s.ranked() if t.run is not None), None)
        if best is not None:
            out.append((best.run, f"best of sweep {s.label} (trial {best.number}, "
                                  f"{len(s.complete())} complete of {len(s.trials)})"))
    return out


def summary_section(page: Page, runs: list[Run], sweeps: list[Sweep]) -> None:
    listed = [(r, r.problem or "") for r in runs] + best_trials(sweeps)
    if not listed:
        return
    keys = differing([r for r, _ in listed if r.config])
    wide = len(keys) > WIDE
    tta = any(r.metric("test_accuracy_tta") is not None for r, _ in listed)  # runs trained with --tta
    headers = ["run", "command", "model", "valid acc", "TEST acc", *(["TEST acc (TTA)"] if tta else []),
               "valid macro-F1", "TEST macro-F1", "epochs", "time", *(["options that differ"] if wide else keys)]
    noted = any(note for _, note in listed)
    headers += ["note"] if noted else []
    rows, attrs = [], []
    for r, note in listed:
        options = [tag("td", ", ".join(f"{k}={shown(r.config.get(k))}" for k in keys), class_="wrap")] \
            if wide else [shown(r.config.get(k, "-")) for k in keys]
        m = r.metrics or {}
        epochs = f"{m['epochs_trained']} (best {m.get('best_epoch')})" if "epochs_trained" in m else "-"
        rows.append([r.label, r.command, r.shape(), pct(r.metric("valid_accuracy")),
                     pct(r.metric("test_accuracy")), *([pct(r.metric("test_accuracy_tta"))] if tta else []),
                     pct(r.metric("valid_f1")), pct(r.metric("test_f1")),
                     epochs, seconds(r.metric("train_seconds")), *options,
                     *([tag("td", note, class_="wrap")] if noted else [])])
        attrs.append({"class_": "bad" if r.metrics is None else None})
    page.section("summary", "Runs", table(headers, rows, class_="sortable", row_attrs=attrs),
                 tag("p", "valid: the run's validation split of train/ (what runs are compared and "
                          "chosen on); TEST: val/, held out." + (" TTA: with test-time augmentation "
                          "(--tta: the mean of several views of each image)." if tta else "")
                     + " Click a column to sort.", class_="note"),
                 options_table([r for r, _ in listed]))


def options_table(runs: list[Run]) -> Raw:
    """Every option of every run, folded away."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    rows = [[k, *(shown(r.config.get(k, "-")) for r in runs)] for k in keys]
    return tag("details", join([tag("summary", "All options of each run (config.json)"),
                                table(["option", *(r.label for r in runs)], rows)]))


def findings_list(found: list[Finding]) -> Raw:
    items = [tag("li", join([tag("span", f.label or ("clear" if f.clear else "not clear"), class_="tag"), f.text,
                             tag("span", f.evidence, class_="evidence")]),
                 class_=None if f.clear else "unclear") for f in found]
    return tag("ul", join(items), class_="findings")


def findings_section(page: Page, runs: list[Run], sweeps: list[Sweep]) -> None:
    parts = []
    for s in sweeps:
        parts += [tag("h3", f"Sweep {s.label} ({Metric(s.metric).words})"), findings_list(sweep_findings(s))]
    found = run_findings(runs)
    if found:
        parts += [tag("h3", "Runs"), findings_list(found)]
    if not parts:
        parts = [tag("p", "Findings need two or more finished runs, or a sweep.", class_="note")]
    rule = ("Computed from the validation metric only, never from TEST. A difference is clear when each side "
            "has at least 3 trials and the difference of the means is more than twice its standard error; "
            "a trend when |Spearman rho| > 2/sqrt(n-1); paired wins when a sign test gives p <= 0.1.")
    page.section("findings", "Findings", *parts, tag("p", rule, class_="note"))


def curves_section(page: Page, runs: list[Run]) -> None:
    drawn = [r for r in runs if r.history]
    if drawn:
        page.section("curves", "Learning curves", page.figure(fig.curves_figure(drawn)),
                     tag("p", "One colour per run; click a name in the legend to hide or show it, "
                              "double-click to show it alone.", class_="note"))


# -- a sweep ----------------------------------------------------------------------------------------

def leaderboard(sweep: Sweep, board: str) -> Raw:
    """Every trial: complete ones best first (their line in the parallel coordinates), then the rest."""
    m = Metric(sweep.metric, sweep.goal)
    ranked = sweep.ranked()
    rest = sorted((t for t in sweep.trials if t not in ranked), key=lambda t: (t.state, t.number))
    tta = any(t.run and t.run.metric("test_accuracy_tta") is not None for t in sweep.trials)
    rows, attrs = [], []
    for i, t in enumerate(ranked + rest):
        test = [t.run.metric(k) if t.run else None for k in ("test_accuracy", "test_accuracy_tta")[:1 + tta]]
        where = t.error or (t.run.path.name if t.run else "-")
        rows.append([str(i + 1) if t in ranked else "-", t.number, t.state,
                     "-" if t.value is None else f"{t.value:.4f}", *map(pct, test), tag("td", where, class_="wrap"),
                     *(t.params.get(k, "") for k in sweep.keys)])
        summary = (f"trial {t.number}: {m.words} {m.value(t.value)}; "
                   + ", ".join(f"{k}={t.params.get(k, '')}" for k in sweep.keys)) if t in ranked else None
        attrs.append({"class_": "bad" if t.state == "failed" else ("best" if i == 0 and t in ranked else None),
                      "data_line": ranked.index(t) if t in ranked else None, "data_summary": summary})
    headers = ["rank", "trial", "state", sweep.metric, "TEST acc", *(["TEST acc (TTA)"] if tta else []),
               "run / error", *sweep.keys]
    return table(headers, rows, id_=board, class_="sortable", row_attrs=attrs, tall=True)


def importance_parts(page: Page, sweep: Sweep) -> list:
    shares = variance_share(sweep)
    if not shares and not sweep.importance:
        return [tag("p", "Too few complete trials (or no spread in the metric) for parameter importance.",
                    class_="note")]
    main, title = (sweep.importance, "Optuna importance (fANOVA)") if sweep.importance \
        else (shares, "share of variance between the values' means (eta squared)")
    rows = [[k, f"{sweep.importance[k]:.3f}" if sweep.importance and k in sweep.importance else "-",
             f"{shares[k]:.3f}" if k in shares else "-"] for k in sorted(main, key=lambda k: -main[k])]
    return [tag("div", join([page.figure(fig.bars_figure(main, title)),
                             table(["parameter", "Optuna importance", "eta squared (one at a time)"], rows)]),
                class_="pair"),
            tag("p", "Optuna's importance (local sweeps) models all parameters together; eta squared is "
                     "the share of the metric's variance explained by one parameter's values, and is "
                     "inflated by chance when a value has few trials.", class_="note")]


def per_value_parts(page: Page, sweep: Sweep) -> list:
    m = Metric(sweep.metric, sweep.goal)
    rows = []
    for key in sweep.keys:
        for g in groups(sweep.complete(), key):
            best = max(g.values) if m.sign > 0 else min(g.values)
            rows.append([key, tag("td", g.label), g.n, m.value(g.mean), f"{(100 if m.percent else 1) * g.sd:.2f}"
                         if g.n > 1 else "-", m.value(min(g.values)), m.value(max(g.values)), m.value(best)])
    # each box plot in its own figure, named by a caption (not a plotly title, under the plot's
    # buttons), all in one block laid out below the table: nothing is drawn over the table
    plots = [tag("figure", join([tag("figcaption", k), page.figure(fig.values_figure(sweep, k))]))
             for k in sweep.keys if groups(sweep.complete(), k)]
    spread = "SD (points)" if m.percent else "SD"
    return [table(["parameter", "value", "trials", "mean", spread, "min", "max", "best"], rows, tall=True),
            tag("div", join(plots), class_="value-plots")]


def sweep_section(page: Page, sweep: Sweep) -> None:
    sid = slug(sweep.label)
    done, states = sweep.complete(), [t.state for t in sweep.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "failed") if states.count(s))
    m = Metric(sweep.metric, sweep.goal)
    parts = [tag("p", f"fastinat {sweep.command}; {len(sweep.trials)} trials ({counts or 'none yet'}); "
                      f"{sweep.metric} ({sweep.goal}). Folder: {sweep.path}", class_="note"),
             tag("h3", "Leaderboard"), leaderboard(sweep, f"board-{sid}")]
    if len(done) >= 2 and sweep.keys:
        info = f"info-{sid}"
        parts += [tag("h3", "Parameters and metric (parallel coordinates)"),
                  page.figure(fig.parcoords_figure(sweep, sweep.ranked()), class_="parcoords plot",
                              data_board=f"board-{sid}", data_info=info),
                  tag("div", "Hover a line to see its trial (highlighted in the leaderboard); drag along an "
                             "axis to keep a range of values (brushing), click beside the range to clear it; "
                             "drag an axis title to reorder.", id=info, class_="info"),
                  tag("h3", "Parameter importance"), *importance_parts(page, sweep),
                  tag("h3", f"{m.words} per parameter value"), *per_value_parts(page, sweep)]
    drawn = [t.run for t in sweep.ranked() if t.run is not None and t.run.history]
    if drawn:
        parts += [tag("h3", "Learning curves of the trials (best first)"), page.figure(fig.curves_figure(drawn))]
    page.section(f"sweep-{sid}", f"Sweep {sweep.label}", *parts)


# -- the best run ---------------------------------------------------------------------------------

def best_run(runs: list[Run], sweeps: list[Sweep]) -> Run | None:
    """The finished run with the best valid accuracy (never chosen on TEST)."""
    pool = [r for r in runs if r.metric("valid_accuracy") is not None]
    pool += [t.run for s in sweeps for t in s.complete() if t.run and t.run.metric("valid_accuracy") is not None]
    return max(pool, key=lambda r: r.metric("valid_accuracy"), default=None)


def class_table(run: Run) -> Raw | None:
    rows = per_class(run)
    if not rows:
        return None

    def cell(v: float) -> Raw:
        return tag("td", f"{v:.3f}", class_="bar", style=f"--w:{100 * v:.0f}%")

    body = [[r["class"], cell(r["precision"]), cell(r["recall"]), cell(r["f1"]), int(r["support"])]
            for r in rows]
    return table(["class", "precision", "recall", "F1", "support"], body, class_="sortable")


def _tta_words(run: Run) -> str:
    """' (with test-time augmentation: 91.2%)' for a run trained with --tta, else ''."""
    tta = run.metric("test_accuracy_tta")
    return "" if tta is None else f" (with test-time augmentation: {pct(tta)})"


def best_section(page: Page, run: Run | None, explain: bool = True) -> None:
    """The best run in depth: per-class table, confusion matrix, pictures, Grad-CAM, filters."""
    if run is None:
        return
    from ..run_folder import REPORT

    report = run.path / REPORT
    parts = [tag("p", f"{run.label} ({run.shape()}): the best valid accuracy "
                      f"{pct(run.metric('valid_accuracy'))} (chosen on valid, never on TEST); TEST accuracy "
                      f"{pct(run.metric('test_accuracy'))}{_tta_words(run)}, TEST macro-F1 "
                      f"{pct(run.metric('test_f1'))}. "
                      f"Folder: {run.path}", class_="note")]
    classes = class_table(run)
    metrics = json_object(report / "metrics.json") or {}
    if classes is None:
        parts.append(tag("p", f"No TEST report in {report}: write it with `fastinat evaluate {run.path}`.",
                         class_="note"))
    else:
        matrix = [tag("h3", "Confusion matrix (TEST)"),
                  page.figure(fig.confusion_figure(metrics["confusion_matrix"], [r["class"] for r in per_class(run)]))] \
            if metrics.get("confusion_matrix") else []
        parts.append(tag("div", join([tag("div", join([tag("h3", "Per class on TEST"), classes])),
                                      tag("div", join(matrix))]), class_="pair"))
    left, right = [picture(report, "predictions_grid.png", "Predictions: three TEST images per class")], \
        [picture(report, "top_losses.png", "Top losses: the most confident mistakes")]
    if explain:
        right += explanation_parts(run)
    parts.append(tag("div", join([tag("div", join(left)), tag("div", join(right))]), class_="pair"))
    page.section("best-run", f"Best run: {run.label}", *parts)


def picture(report, name: str, title: str) -> Raw:
    path = report / name
    return join([tag("h3", title), image(fig.image_uri(path), title)]) if path.is_file() else Raw("")


def explanation_parts(run: Run) -> list:
    cams, filters, note = fig.explanations(run)
    parts = [tag("p", note, class_="note")] if note else []
    if cams:
        parts += [tag("h3", "Grad-CAM: one TEST image per class"),
                  tag("div", join(image(u, "Grad-CAM") for u in cams), class_="grid")]
    if filters:
        parts += [tag("h3", "First-layer filters"), join(image(u, "first-layer filters", "pic filters")
                                                         for u in filters)]
    return parts
