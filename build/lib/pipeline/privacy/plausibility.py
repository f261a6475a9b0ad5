"""The release gate's noise check (DP mode), as pure maths: what each published value may deviate by.

A published DP value must sit within its mechanism's noise of the true value of its own cell. This
module says, per (level, metric), what an engine must count over the joined (published, true) rows
and judges the counts; the engine does the join and the counting without letting a true value out
(docs/PRIVACY.md, "Release gate"). With Z the mechanism's noise and T its ``GATE_TAIL`` tail bound:

- far: |published − true| > T (+ rounding), impossible but with probability GATE_TAIL per value.
  Clamping at zero and to the bounds only moves a value towards its true value, so it never trips
  this. Means: |mean − μ| <= (T_sum + |μ − mid|·T_count) / (count − T_count) when
  count − T_count >= 1 (else anything within the bounds).
- spread: the number of deviations beyond the median t of |Z| on the side clamping never touches
  (above for values clamped at zero from below) is binomial with P(Z > t) = P(|Z| > t)/2 (symmetric
  noise; rounding widens it to an interval); a Chernoff surprise above ln(1/GATE_TAIL) in either
  direction refuses (too few: noise missing or too small; too many: too large or values on the
  wrong cells). Not for means (their per-cell distribution is not one mechanism's). For the unit
  count of private selection only cells whose true count exceeds the threshold by T take part.
- projected (``consistent: true`` counts and sums): the projection is a contraction in the
  inverse-variance norm and the true values are consistent, so Σ (published − true)² / var <=
  Σ T² / var, per metric over every level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import ReportConfig
from .mechanisms import GATE_TAIL, Mechanism, abs_exceed_probability, binomial_surprise, tail_bound
from .rules import publication_threshold


@dataclass(frozen=True)
class Expectation:
    """What one metric at one level may show. ``true`` names the true ingredient (``units``, ``rows``
    or ``s{i}``; a mean reads ``s{i}`` / ``c{i}``); ``kind`` is ``value``, ``mean`` or ``projected``."""

    level_index: int
    level_name: str
    metric: str
    metric_index: int
    kind: str
    true: str
    tail: float = 0.0  # T, or T_sum for a mean
    rounding: float = 0.0
    cut: float = 0.0  # the spread test's t
    side: float = 1.0  # +1: count deviations above; -1: below
    eligible: float = -math.inf  # spread test over cells whose true value is at least this
    p_low: float = 0.0
    p_high: float = 1.0
    tail_count: float = 0.0  # a mean's T_count
    mid: float = 0.0
    width: float = 0.0  # a mean's hi − lo
    variance: float = 1.0  # projected values: the projection's weight


def _median_abs(mech: Mechanism) -> float:
    """A t near the median of |Z| for the mechanism's noise (the spread test's cut)."""
    return tail_bound(mech, 0.5)


def expectations(cfg: ReportConfig, split: Any) -> list[Expectation]:
    """Every (level, metric) of a DP release with its tolerances (pure; from the budget split)."""
    out: list[Expectation] = []
    for lv, plan in split.levels:
        for i, m in enumerate(cfg.metrics):
            parts = plan.metrics.get(m.name, {})
            if m.agg == "mean":
                lo, hi = m.bounds or (0.0, 0.0)
                out.append(Expectation(lv.index, lv.name, m.name, i, "mean", f"s{i}", tail=tail_bound(parts["sum"]),
                                       tail_count=tail_bound(parts["count"]), mid=(lo + hi) / 2.0, width=hi - lo))
                continue
            eligible = -math.inf
            if m.agg == "count_units" and plan.selection is not None:
                mech: Mechanism = plan.selection
                true = "units"
                # published only when the noisy count passed the threshold: that noise is conditioned
                # on selection, except where the true count exceeds the threshold by the tail bound
                eligible = publication_threshold(mech, cfg.min_units) + tail_bound(mech)
            else:
                mech = parts["sum" if m.agg == "sum" else "count"]
                true = {"count": "rows", "count_units": "units"}.get(m.agg, f"s{i}")
            big_t = tail_bound(mech)
            if cfg.consistent and m.agg in ("count", "sum"):
                from .consistency import variance

                out.append(Expectation(lv.index, lv.name, m.name, i, "projected", true, tail=big_t,
                                       variance=variance(plan, m.name)))
                continue
            rounding = 0.005 if (m.agg == "sum" and not cfg.consistent) else 0.0
            lo_b, hi_b = m.bounds or (0.0, 0.0)
            side = -1.0 if (m.agg == "sum" and lo_b < 0 and hi_b <= 0 and not cfg.consistent) else 1.0
            cut = _median_abs(mech)
            p_high = abs_exceed_probability(mech, max(cut - rounding, 0.0)) / 2.0  # symmetric noise
            p_low = abs_exceed_probability(mech, cut + rounding) / 2.0
            if eligible > -math.inf:  # selection changes the odds by at most GATE_TAIL on these cells
                p_low, p_high = max(p_low - GATE_TAIL, 0.0), min(p_high + GATE_TAIL, 1.0)
            out.append(Expectation(lv.index, lv.name, m.name, i, "value", true, tail=big_t, rounding=rounding,
                                   cut=cut, side=side, eligible=eligible, p_low=p_low, p_high=p_high))
    return out


def judge(found: list[tuple[Expectation, tuple]], unmatched: int, rows: int, published_rows: int) -> tuple[dict[str, Any], list[str]]:
    """The verdict from the engine's counts. ``found`` pairs each expectation with its counts:
    ``value``: (n, beyond tail, eligible, beyond the cut); ``mean``: (n, beyond tail);
    ``projected``: (n, Σ (published − true)²). Returns the gate record and failure messages."""
    failures: list[str] = []
    record: dict[str, Any] = {"tail_probability": GATE_TAIL, "values_checked": 0, "beyond_tail": 0,
                              "spread_tests": 0, "spread_failures": 0, "unmatched_rows": int(unmatched)}
    if unmatched or rows != published_rows:
        failures.append(f"{unmatched} published row(s) match no computed cell (keys or level changed after noise)")
    surprise_limit = math.log(1.0 / GATE_TAIL)
    far: list[str] = []
    spread: list[str] = []
    wnorm: dict[str, list[float]] = {}
    for e, counts in found:
        record["values_checked"] += int(counts[0])
        if e.kind == "projected":
            acc = wnorm.setdefault(e.metric, [0.0, 0.0])
            acc[0] += float(counts[1]) / e.variance
            acc[1] += int(counts[0]) * e.tail * e.tail / e.variance
            continue
        if counts[1]:
            record["beyond_tail"] += int(counts[1])
            far.append(e.metric)
        if e.kind != "value" or not counts[2]:
            continue
        n, over = int(counts[2]), int(counts[3])
        record["spread_tests"] += 1
        if binomial_surprise(over, n, e.p_low, e.p_high) > surprise_limit:
            record["spread_failures"] += 1
            spread.append(f"{e.metric}{'' if e.level_index == 0 else ' (' + e.level_name + ')'}: {over} of {n} "
                          f"deviations beyond {e.cut:.4g}, expected {e.p_low * n:.0f}-{e.p_high * n:.0f}")
    for name, (stat, bound) in wnorm.items():
        if stat > bound * (1 + 1e-9):
            record["beyond_tail"] += 1
            far.append(name + " (consistent)")
    if far:
        failures.append(
            f"{record['beyond_tail']} published value(s) lie beyond the {GATE_TAIL:g} tail of the noise around "
            f"the true values they were drawn from ({', '.join(dict.fromkeys(far))}): misaligned, "
            "unnoised or mis-scaled values")
    if spread:
        failures.append("the published noise does not have its mechanism's spread (" + "; ".join(spread) + ")")
    record["ok"] = not failures
    return record, failures
