"""Findings: sentences computed from the trials' validation metric, each with its evidence.

Only the sweep's own metric (valid_accuracy, valid_f1 or valid_loss) is used, never a TEST
number: choosing settings on TEST would make the TEST score an optimistic estimate.

For each searched parameter, over the complete trials:

* two values (augment on/off): the difference of the means, with each side's count, mean,
  standard deviation and range;
* three or more: the best value by mean against the next best;
* a number with many distinct values (lr from a log-uniform range): Spearman's rank
  correlation with the metric;
* where trials differ only in this parameter (a grid): how often one value beat the other.

A difference is called clear when each side has at least MIN_N trials and the difference of
the means is more than twice its standard error (|Welch t| > 2: the spreads of the two means
do not overlap); a correlation when |rho| > 2 / sqrt(n - 1); paired wins when a two-sided sign
test gives p <= 0.1 (5 of 5). Anything less is reported as "not clear", with its numbers.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MIN_N = 3  # trials per side before a difference can be called clear
MIN_PAIRS = 3  # paired trials before a paired finding is reported
DISTINCT = 5  # a numeric parameter with more distinct values than this gets a correlation


@dataclass
class Finding:
    text: str
    evidence: str
    clear: bool
    size: float = 0.0  # for ordering: the effect in the metric's unit (points for accuracy)
    label: str | None = None  # the badge, when not "clear" / "not clear"


@dataclass
class Metric:
    """How to speak of a validation metric: name, direction, unit."""

    name: str
    goal: str = "maximize"

    @property
    def percent(self) -> bool:
        return not self.name.endswith("loss")

    @property
    def words(self) -> str:
        return {"valid_accuracy": "valid accuracy", "valid_f1": "valid macro-F1",
                "valid_loss": "valid loss"}.get(self.name, self.name.replace("_", " "))

    @property
    def sign(self) -> int:
        return 1 if self.goal == "maximize" else -1

    def value(self, v: float) -> str:
        return f"{100 * v:.1f}%" if self.percent else f"{v:.3f}"

    def gap(self, d: float) -> str:
        """A difference in favour of the better side ("+4.1 points", "0.120 lower")."""
        if self.percent:
            return f"{'+' if d * self.sign >= 0 else '-'}{abs(100 * d):.1f} points"
        return f"{abs(d):.3f} {'lower' if d < 0 else 'higher'}"

    @property
    def versus(self) -> str:
        """The word after a gap: "+4.1 points over", "0.120 lower than"."""
        return "over" if self.percent else "than"

    def size(self, d: float) -> float:
        return abs(d) * (100 if self.percent else 1)


@dataclass
class Group:
    label: str
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def describe(self, m: Metric) -> str:
        scale = 100 if m.percent else 1
        spread = f" ± {scale * self.sd:.1f}" if m.percent else f" ± {self.sd:.3f}"
        low, high = min(self.values), max(self.values)
        return (f"{self.label}: mean {m.value(self.mean)}{spread if self.n > 1 else ''} "
                f"(n = {self.n}{f', range {m.value(low)} to {m.value(high)}' if self.n > 1 else ''})")


def welch_t(a: Group, b: Group) -> float:
    """(mean a - mean b) / its standard error; inf when both sides are constant and differ."""
    se = math.sqrt(a.sd ** 2 / a.n + b.sd ** 2 / b.n)
    diff = a.mean - b.mean
    return diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))


def clear_difference(a: Group, b: Group) -> tuple[bool, str]:
    """(clear?, why) for the difference of two groups' means (module docstring)."""
    if min(a.n, b.n) < MIN_N:
        return False, f"too few trials ({a.n} vs {b.n}; at least {MIN_N} each needed)"
    t = abs(welch_t(a, b))
    if t <= 2:
        return False, f"the spreads overlap (the difference is {t:.1f}x its standard error)"
    return True, f"the difference is {'many' if math.isinf(t) else f'{t:.1f}'}x its standard error"


def is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def groups(trials, key: str) -> list[Group]:
    """The complete trials' metric grouped by the value of `key` (numeric values in order)."""
    by: dict[str, list[float]] = {}
    for t in trials:
        if key in t.params and t.params[key] not in ("", None):
            by.setdefault(str(t.params[key]), []).append(t.value)
    labels = list(by)
    if all(is_number(x) for x in labels):
        labels.sort(key=float)
    return [Group(x, by[x]) for x in labels]


def compare(key: str, a: Group, b: Group, m: Metric) -> Finding:
    """Two values of one parameter: the better one's gain in mean, or "not clear"."""
    if (a.mean - b.mean) * m.sign < 0:
        a, b = b, a
    ok, why = clear_difference(a, b)
    gap = m.gap(a.mean - b.mean)
    evidence = f"{a.describe(m)}; {b.describe(m)}; {why}"
    if ok:
        return Finding(f"{key} = {a.label}: {gap} mean {m.words} {m.versus} {b.label} "
                       f"({a.n} trials vs {b.n})", evidence, True, m.size(a.mean - b.mean))
    return Finding(f"{key}: the difference between {a.label} and {b.label} is not clear "
                   f"({gap} mean {m.words} for {a.label}, {a.n} trials vs {b.n})", evidence, False,
                   m.size(a.mean - b.mean))


def best_value(key: str, found: list[Group], m: Metric) -> Finding:
    """Three or more values: the best by mean, clear only if it clearly beats the next best."""
    order = sorted(found, key=lambda g: -m.sign * g.mean)
    best, second = order[0], order[1]
    ok, why = clear_difference(best, second)
    evidence = "; ".join(g.describe(m) for g in order) + f"; best vs next best: {why}"
    gap = m.gap(best.mean - second.mean)
    if ok:
        return Finding(f"best {key}: {best.label} (n = {best.n}), {gap} mean {m.words} {m.versus} the next "
                       f"best, {second.label} (n = {second.n})", evidence, True, m.size(best.mean - second.mean))
    return Finding(f"{key}: no clear best; {best.label} leads by mean (n = {best.n}, {gap} {m.versus} "
                   f"{second.label}, n = {second.n})", evidence, False, m.size(best.mean - second.mean))


def ranks(xs: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=xs.__getitem__)
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else 0.0


def trend(key: str, trials, m: Metric) -> Finding:
    """A numeric parameter with many values: the sign and strength of its rank correlation."""
    pairs = [(float(t.params[key]), t.value) for t in trials if is_number(t.params.get(key))]
    rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    n, limit = len(pairs), 2 / math.sqrt(max(len(pairs) - 1, 1))
    evidence = (f"Spearman's rho = {rho:+.2f} over {n} trials (clear beyond ±{limit:.2f}); "
                f"{key} from {min(p[0] for p in pairs):g} to {max(p[0] for p in pairs):g}")
    better = "higher" if rho * m.sign > 0 else "lower"
    if n >= 2 * MIN_N and abs(rho) > limit:
        return Finding(f"higher {key}: {'higher' if rho > 0 else 'lower'} {m.words} ({better} is "
                       f"better; rho = {rho:+.2f}, n = {n})", evidence, True, abs(rho))
    return Finding(f"{key}: no clear trend in {m.words} (rho = {rho:+.2f}, n = {n})", evidence, False, abs(rho))


def sign_test(wins: int, n: int) -> float:
    """Two-sided exact sign test p-value for `wins` of `n` (ties left out)."""
    tail = sum(math.comb(n, k) for k in range(max(wins, n - wins), n + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(key: str, a: str, b: str, trials, keys: list[str], m: Metric) -> Finding | None:
    """Trials equal in every other parameter, one with `key` = a, one with b: who won how often."""
    others = [k for k in keys if k != key]
    by: dict[tuple, dict[str, float]] = {}
    for t in trials:
        if str(t.params.get(key)) in (a, b):
            by.setdefault(tuple(str(t.params.get(k)) for k in others), {})[str(t.params[key])] = t.value
    pairs = [(d[a], d[b]) for d in by.values() if a in d and b in d and d[a] != d[b]]
    if len(pairs) < MIN_PAIRS:
        return None
    wins = sum((x - y) * m.sign > 0 for x, y in pairs)
    if wins * 2 < len(pairs):
        a, b, wins = b, a, len(pairs) - wins
    p = sign_test(wins, len(pairs))
    gaps = [m.size(x - y) for x, y in pairs]
    evidence = (f"{len(pairs)} pairs of trials with the same other parameters; mean gap "
                f"{statistics.fmean(gaps):.1f}{' points' if m.percent else ''}; two-sided sign test p = {p:.2f}")
    verdict = "" if p <= 0.1 else ": not clear"
    return Finding(f"{key} {a} beat {b} in {wins} of {len(pairs)} paired trials{verdict}", evidence,
                   p <= 0.1, wins / len(pairs))


def parameter_findings(key: str, trials, keys: list[str], m: Metric) -> list[Finding]:
    found = [g for g in groups(trials, key) if g.n]
    if len(found) < 2:
        return []
    if len(found) > DISTINCT and all(is_number(g.label) for g in found):
        return [trend(key, trials, m)]
    out = [compare(key, *found, m) if len(found) == 2 else best_value(key, found, m)]
    top = sorted(found, key=lambda g: -m.sign * g.mean)[:2]
    pair = paired(key, top[0].label, top[1].label, trials, keys, m)
    return out + ([pair] if pair else [])


def sweep_findings(sweep) -> list[Finding]:
    """Findings of a sweep (inputs.Sweep), clear ones first, each group by effect size."""
    m = Metric(sweep.metric, sweep.goal)
    trials = sweep.complete()
    if not m.name.startswith("valid"):
        return [Finding(f"No findings: the sweep's metric {m.name} is not a validation metric.", "", False)]
    if len(trials) < 2:
        return [Finding(f"Too few complete trials ({len(trials)}) to compare settings.",
                        f"{len(sweep.trials)} trials in all", False)]
    out = []
    for key in sweep.keys:
        out += parameter_findings(key, trials, sweep.keys, m)
    best = sweep.ranked()[0]
    head = Finding(f"best trial: {best.number}, {m.words} {m.value(best.value)}",
                   f"{len(trials)} complete trials of {len(sweep.trials)}; ranked on {m.words} only", True,
                   label="best")
    return [head, *sorted(out, key=lambda f: (not f.clear, -f.size))]


def run_findings(runs) -> list[Finding]:
    """Standalone runs: which has the best valid accuracy, and why one run each settles little."""
    from .inputs import differing

    done = [r for r in runs if r.metric("valid_accuracy") is not None]
    if len(done) < 2:
        return []
    m = Metric("valid_accuracy")
    done.sort(key=lambda r: -r.metric("valid_accuracy"))
    diff = differing(done)
    out = [Finding(f"best valid accuracy: {done[0].label} ({m.value(done[0].metric('valid_accuracy'))})",
                   "; ".join(f"{r.label} {m.value(r.metric('valid_accuracy'))}" for r in done), True,
                   label="best")]
    a, va = done[0], done[0].metric("valid_accuracy")
    for b in done[1:]:
        out.append(Finding(f"{a.label} vs {b.label}: {m.gap(va - b.metric('valid_accuracy'))} valid "
                           f"accuracy; one run each, so whether the options that differ "
                           f"({', '.join(diff) or 'none'}) cause it is not clear",
                           "a single run per setting cannot separate an effect from run-to-run "
                           "noise; a sweep with several trials per value can", False))
    return out


def variance_share(sweep) -> dict[str, float]:
    """Per parameter: the share of the metric's variance between its values' means (eta squared)."""
    trials = sweep.complete()
    if len(trials) < 3:
        return {}
    mean = statistics.fmean(t.value for t in trials)
    total = sum((t.value - mean) ** 2 for t in trials)
    if total == 0:
        return {}
    return {key: round(sum(g.n * (g.mean - mean) ** 2 for g in groups(trials, key)) / total, 4)
            for key in sweep.keys}
