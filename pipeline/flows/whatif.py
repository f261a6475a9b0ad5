"""What-if planning: how many cells a report would publish, and how noisy, for candidate settings.

INTERNAL ONLY. Guarantees:
- Nothing is written: no release folder, no staging folder, no summary, and the privacy-budget
  ledger is never opened (its file is not even created). No budget is spent.
- Row-level data stays inside DuckDB; only per-cell aggregates (counts and sums) and counts of
  cells reach Python, as in a real run. The result holds counts, shares, noise scales and error
  estimates only: never a dimension value, never a cell value.
- Threshold mode: the report's own aggregation SQL runs once; for every candidate ``min_units`` the
  pipeline's own primary suppression (k and, when configured, dominance) is applied to the same
  cells. The counts are exact for primary suppression; complementary (secondary) suppression for
  margins and difference checks against earlier releases can only withhold more, so
  ``cells_published`` is then an upper bound.
- DP mode: contribution bounding runs in DuckDB with the pipeline's SQL and a fixed planning seed
  (not a release seed); noise scales come from :func:`pipeline.privacy.budget.level_budget` for each
  candidate epsilon, exactly as a release would use them. The expected number of published cells
  is the sum over cells of the probability that the noisy unit count reaches
  ``max(selection threshold, min_units)`` (discrete Laplace / discrete Gaussian tails, in closed
  form or by exact summation). The error of a metric is, per cell, the expected absolute noise
  divided by the bounded (pre-noise) value (E|noisy − true| / |true|; for means to first order),
  and the median of that over the cells likely to be published. It does not include the bias of
  contribution bounding, which is reported separately as the share of rows that bounding keeps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from ..errors import ConfigError, SourceError
from ..privacy.accuracy import (
    expected_abs_difference,
    expected_abs_noise,
    median_relative,
    publish_probability,
)

if TYPE_CHECKING:
    from ..config import ReportConfig

NOTICE = "INTERNAL ONLY — not a release, no budget spent"
PLANNING_SEED = 0x5EED_0F_91A7  # bounding seed for planning only; releases derive theirs from the ledger secret
LIKELY = 0.5  # a cell is "likely published" when its publication probability is at least this


# ----- noise distributions (pure, vectorised) ----------------------------------------------------


# ----- the plan ----------------------------------------------------------------------------------


class Plan(TypedDict, total=False):
    """What :func:`plan_report` returns (JSON-serialisable; ``internal_only`` is always True)."""

    internal_only: bool
    notice: str
    report: str
    mode: str
    source: dict[str, Any]
    configured: dict[str, Any]
    rows: dict[str, Any]
    candidates: list[dict[str, Any]]
    notes: list[str]
    bounding: dict[str, Any]  # DP mode
    noise: str  # DP mode
    delta: float  # DP mode
    reference_cells: int  # DP mode


def plan_report(
    cfg: ReportConfig,
    *,
    min_units: list[int] | None = None,
    epsilons: list[float] | None = None,
    selection_shares: list[float] | None = None,
) -> Plan:
    """What-if table for candidate ``min_units`` (threshold and DP mode), ``epsilons`` and
    ``selection_shares`` (DP mode with private partition selection; every combination is a candidate).

    Returns a JSON-serialisable dict marked ``internal_only`` (see the module docstring for what is
    guaranteed). Defaults: k ∈ {k/2, k, 2k, 5k} in threshold mode, the configured k in DP mode;
    ε ∈ {ε/4, ε/2, ε, 2ε, 4ε}; the configured selection share. Raises ConfigError for impossible
    candidates (k < 2, ε <= 0, a share outside (0, 1), ``epsilons`` on a threshold-mode config,
    shares without private partition selection) and SourceError when the source cannot be read.
    """
    from ..engines import connect
    from ..errors import first_line

    if cfg.window is not None and cfg.window.start is None:
        cfg = cfg.for_window()  # the window a run today would use
    ks = _candidate_ks(cfg, min_units)
    eps = _candidate_epsilons(cfg, epsilons)
    shares = _candidate_shares(cfg, selection_shares)
    con = connect(cfg)
    try:
        source = con.open_source(cfg)
        con.check_columns(cfg, source)
        if cfg.mode == "dp":
            body = _plan_dp(cfg, con, source, eps, ks, shares)
        else:
            body = _plan_threshold(cfg, con, source, ks)
    except con.Error as exc:
        raise SourceError(f"source {cfg.source.path!r}: {first_line(exc)}") from None
    finally:
        con.close()
    return {  # type: ignore[return-value]  # the body's keys are Plan's
        "internal_only": True,
        "notice": NOTICE,
        "report": cfg.report,
        "mode": cfg.mode,
        "source": {"format": source.format, "files": len(source.files), "source_id": source.source_id},
        "configured": {"min_units": cfg.min_units, "epsilon": cfg.privacy.epsilon if cfg.privacy else None,
                       "selection_share": cfg.privacy.selection_share if cfg.privacy else None},
        **body,
    }


def _candidate_ks(cfg: ReportConfig, given: list[int] | None) -> list[int | None]:
    if cfg.min_units is None:  # DP with public partitions: no k applies
        if given:
            raise ConfigError("--min-units has no effect with privacy.public_partitions (listed cells are published "
                              "whatever their size)")
        return [None]
    if given:
        bad = [k for k in given if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2]
        if bad:
            raise ConfigError(f"--min-units {bad[0]!r}: a candidate k must be an integer >= 2")
        return sorted({int(k) for k in given})
    k = int(cfg.min_units)
    if cfg.mode == "dp":
        return [k]
    return sorted({max(2, k // 2), k, 2 * k, 5 * k})


def _candidate_epsilons(cfg: ReportConfig, given: list[float] | None) -> list[float]:
    if cfg.privacy is None:
        if given:
            raise ConfigError("--epsilon applies to DP mode; this config has no privacy: block (threshold mode)")
        return []
    if given:
        bad = [e for e in given if not (isinstance(e, (int, float)) and math.isfinite(e) and e > 0)]
        if bad:
            raise ConfigError(f"--epsilon {bad[0]!r}: a candidate epsilon must be a finite number > 0")
        return sorted({float(e) for e in given})
    e = float(cfg.privacy.epsilon)
    return [e / 4, e / 2, e, 2 * e, 4 * e]


def _candidate_shares(cfg: ReportConfig, given: list[float] | None) -> list[float]:
    if not given:
        return [float(cfg.privacy.selection_share)] if cfg.privacy is not None else []
    if cfg.privacy is None:
        raise ConfigError("--selection-share applies to DP mode; this config has no privacy: block (threshold mode)")
    if cfg.privacy.public_partitions is not None:
        raise ConfigError("--selection-share has no effect with privacy.public_partitions (no partition selection "
                          "runs); compare budget_weight settings instead")
    bad = [x for x in given if not (isinstance(x, (int, float)) and math.isfinite(x) and 0 < x < 1)]
    if bad:
        raise ConfigError(f"--selection-share {bad[0]!r}: a candidate share must lie strictly between 0 and 1")
    return sorted({float(x) for x in given})


def _plan_threshold(cfg: ReportConfig, con: Any, source: Any, ks: list[int]) -> dict[str, Any]:
    from ..engines.duckdb import suppression
    from .threshold import aggregate

    need_per_unit = bool(cfg.totals) or cfg.dominance is not None
    quality = aggregate(cfg, con, source, need_per_unit=need_per_unit)
    con.execute("CREATE OR REPLACE TEMP TABLE __plan_cells AS SELECT * FROM __cells")
    rows = []
    for k in ks:
        con.execute("CREATE OR REPLACE TEMP TABLE __cells AS SELECT * FROM __plan_cells")
        con.run(suppression.primary_sql(cfg.with_overrides(min_units=k)))
        counts = suppression.counts(con)
        kept, total = con.execute(
            "SELECT coalesce(sum(__rows) FILTER (WHERE __reason IS NULL), 0), coalesce(sum(__rows), 0) "
            "FROM __cells WHERE __level = 0"
        ).fetchall()[0]
        computed = counts["cells_computed"]
        rows.append({
            "min_units": k,
            "configured": k == cfg.min_units,
            **counts,
            "suppressed_share": counts["cells_suppressed"] / computed if computed else 0.0,
            "rows_in_published_cells_share": float(kept) / float(total) if total else 0.0,
        })
    notes = ["counts follow primary suppression (fewer than k units" + (", dominance" if cfg.dominance else "") + ")"]
    if cfg.totals:
        notes.append("margins (totals) are included; complementary suppression can withhold more cells, "
                     "so cells_published is an upper bound")
    notes.append("difference checks against earlier releases (when a history exists) can withhold more cells")
    return {"rows": quality, "candidates": rows, "notes": notes}


def budget_split_for(cfg: ReportConfig, epsilon: float, selection_share: float | None = None) -> Any:
    """The release plan (every level's mechanisms) a run would use with ``privacy.epsilon = epsilon``
    (and ``privacy.selection_share``, when given).

    Built by the release code itself (:func:`pipeline.privacy.budget.budget_split`) on a copy of the
    config; ``budget.epsilon_limit`` is raised on that copy when a candidate exceeds it (planning
    spends nothing; the result flags such candidates).
    """
    from ..privacy.budget import budget_split

    assert cfg.privacy is not None
    from ..config import EPSILON_CEILING

    over: dict[str, Any] = {"privacy": {"epsilon": float(epsilon)}}
    if epsilon > EPSILON_CEILING:  # a what-if may look past the ceiling; the result flags it
        over["privacy"]["allow_large_epsilon"] = True
    if selection_share is not None:
        over["privacy"]["selection_share"] = float(selection_share)
    if cfg.budget is not None and epsilon > cfg.budget.epsilon_limit:
        over["budget"] = {"epsilon_limit": float(epsilon)}
    return budget_split(cfg.with_overrides(**over))


def _plan_dp(
    cfg: ReportConfig, con: Any, source: Any, epsilons: list[float], ks: list[int], shares: list[float]
) -> dict[str, Any]:
    from .dp import bound_contributions

    p = cfg.privacy
    assert p is not None
    public = p.public_partitions is not None
    quality, _ = bound_contributions(cfg, con, source, PLANNING_SEED, PLANNING_SEED + 1)
    cols = [c[0] for c in con.execute("DESCRIBE __dp_cells").fetchall()]
    sel = ["CAST(__units AS BIGINT) AS u", "CAST(__rows AS BIGINT) AS r",
           "CAST(__level AS INTEGER) AS lv" if "__level" in cols else "0 AS lv"]
    for i, m in enumerate(cfg.metrics):
        if m.column is not None:
            sel += [f"CAST(coalesce(__s{i}, 0) AS DOUBLE) AS s{i}", f"CAST(coalesce(__c{i}, 0) AS BIGINT) AS c{i}"]
    # per-cell aggregates only (the same numbers a release's noise step reads)
    cells = con.execute(f"SELECT {', '.join(sel)} FROM __dp_cells").fetchnumpy()
    cells = {k: np.asarray(v) for k, v in cells.items()}
    units = cells["u"].astype(np.int64)
    level = cells["lv"].astype(np.int64)
    full = level == 0
    rows_kept = int(cells["r"][full].sum())
    rows_in = int(quality["rows_aggregated"])
    bounding = {
        "max_groups_per_unit": p.max_groups_per_unit,
        "max_rows_per_group": p.max_rows_per_group,
        "rows_aggregated": rows_in,
        "rows_kept_after_bounding": rows_kept,
        "rows_kept_share": rows_kept / rows_in if rows_in else 0.0,
        "cells_computed": len(units),
        "full_table_cells": int(full.sum()),
        "public_partitions": public,
    }
    # the reference cells: full-table cells likely published with the configured epsilon and
    # min_units, so that candidates can be compared on the same cells
    plans: dict[tuple[float, float], Any] = {}

    def plan_for(e: float, share: float) -> Any:  # Gaussian plans take a while (zCDP conversion): build each once
        if (e, share) not in plans:
            plans[e, share] = budget_split_for(cfg, e, share)
        return plans[e, share]

    try:
        reference = (_publish_probabilities(plan_for(p.epsilon, p.selection_share), cfg.min_units, units, level)
                     >= LIKELY) & full
    except (ValueError, ConfigError):
        reference = np.zeros(len(units), dtype=bool)
    candidates = []
    for e in epsilons:
        for share in shares:
            try:
                rplan = plan_for(e, share)
            except (ValueError, ConfigError) as exc:
                candidates += [{"epsilon": e, "selection_share": share, "min_units": k, "error": str(exc)} for k in ks]
                continue
            for k in ks:
                candidates.append(_dp_candidate(cfg, rplan, e, share, k, cells, units, level, reference))
    notes = [
        "planning bounds contributions with a fixed planning seed; a release uses its own secret seed",
        "error = expected |noise| / |bounded value| per full-table cell, median over the cells likely to be "
        f"published (publication probability >= {LIKELY:g}); clamping to bounds/zero only reduces it",
        "the bias from contribution bounding is not in the error: see rows_kept_share",
        f"median_relative_error_reference: over the {int(reference.sum())} full-table cells likely published with "
        "the configured epsilon and min_units, so candidates compare on the same cells",
    ]
    if cfg.totals:
        notes.append("expected published cells include the margins (totals); ε and δ are split over the levels "
                     "as in a release")
    if cfg.budget is not None and any(e > cfg.budget.epsilon_limit for e in epsilons):
        notes.append(f"candidates above budget.epsilon_limit ({cfg.budget.epsilon_limit:g}) could never run")
    return {"rows": quality, "bounding": bounding, "noise": p.noise, "delta": p.delta,
            "reference_cells": int(reference.sum()), "candidates": candidates, "notes": notes}


def _threshold(plan: Any, k: int | None) -> int | None:
    """The noisy-unit-count threshold a release applies at one level (None with public partitions)."""
    from ..privacy.rules import publication_threshold

    return None if plan.selection is None else publication_threshold(plan.selection, k)


def _publish_probabilities(rplan: Any, k: int, units: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Per cell, the probability that a release publishes it (each level with its own mechanism)."""
    prob = np.zeros(len(units))
    for lv, plan in rplan.levels:
        mask = level == lv.index
        t = _threshold(plan, k)
        prob[mask] = 1.0 if t is None else publish_probability(units[mask], plan.selection, t)
    return prob


def _dp_candidate(
    cfg: ReportConfig, rplan: Any, epsilon: float, share: float, k: int, cells: dict, units: np.ndarray,
    level: np.ndarray, reference: np.ndarray,
) -> dict:
    full = level == 0
    n = len(units)
    plan = rplan.levels[0][1]  # the full table's mechanisms
    prob = _publish_probabilities(rplan, k, units, level)
    likely = (prob >= LIKELY) & full
    metrics: dict[str, Any] = {}
    for i, m in enumerate(cfg.metrics):
        parts = plan.metrics.get(m.name, {})
        if m.agg == "count_units" and plan.selection is not None:
            mech = plan.selection
            err = np.full(n, expected_abs_noise(mech))
            true = units.astype(np.float64)
        elif m.agg in ("count", "count_units"):
            mech = parts["count"]
            err = np.full(n, expected_abs_noise(mech))
            true = np.asarray(cells["r" if m.agg == "count" else "u"], dtype=np.float64)
        elif m.agg == "sum":
            mech = parts["sum"]
            err = np.full(n, expected_abs_noise(mech))
            true = np.asarray(cells[f"s{i}"], dtype=np.float64)
        else:  # mean: mid + (S − mid·c + Zs)/(c + Zc) ≈ mean + (Zs − (mean − mid)·Zc)/c to first order
            lo, hi = m.bounds or (0.0, 0.0)
            mid = (lo + hi) / 2.0
            s = np.asarray(cells[f"s{i}"], dtype=np.float64)
            c = np.asarray(cells[f"c{i}"], dtype=np.float64)
            mech = parts["sum"]
            with np.errstate(divide="ignore", invalid="ignore"):
                true = np.where(c > 0, s / np.where(c > 0, c, 1.0), 0.0)
                err = expected_abs_difference(plan.noise, parts["sum"].scale, (true - mid) * parts["count"].scale)
                err = np.where(c > 0, err / np.where(c > 0, c, 1.0), np.inf)
        per_cell = m.agg == "mean"  # a mean's noise depends on its cell's count (the *_ci95 column)
        if per_cell:
            with np.errstate(divide="ignore", invalid="ignore"):
                c_ = np.asarray(cells[f"c{i}"], dtype=np.float64)
                hw = (parts["sum"].ci95_half_width + np.abs(true - mid) * parts["count"].ci95_half_width)
                hw = np.where(c_ > 0, hw / np.where(c_ > 0, c_, 1.0), np.inf)
        else:
            hw = np.full(n, mech.ci95_half_width)
        ratio = median_relative(hw[likely], true[likely])
        from ..privacy.rules import NOISE_DOMINATED
        own = [plan.selection] if m.agg == "count_units" and plan.selection is not None else list(parts.values())
        metrics[m.name] = {
            # this metric's share of the full table's budget (ε for Laplace, ρ for Gaussian; the
            # unit count's is the selection's, which it rides on)
            "budget": sum((x.epsilon if plan.noise == "laplace" else (x.rho or 0.0)) for x in own),
            "scale": None if per_cell else mech.scale,
            "ci95_half_width": None if per_cell else mech.ci95_half_width,
            "median_relative_error": median_relative(err[likely], true[likely]),
            "median_relative_error_reference": median_relative(err[reference], true[reference]),
            # as the release will flag it (privacy.rules.noise_to_value), on the cells likely published
            "median_ci95_over_value": ratio,
            "noise_dominated": bool(likely.any()) and (ratio is None or ratio > NOISE_DOMINATED),
        }
    expected = float(prob.sum())
    out: dict[str, Any] = {
        "epsilon": epsilon,
        "selection_share": share,
        "min_units": k,
        "configured": cfg.privacy is not None and math.isclose(epsilon, cfg.privacy.epsilon) and k == cfg.min_units
        and math.isclose(share, cfg.privacy.selection_share),
        "epsilon_spent": rplan.epsilon,
        "delta_spent": rplan.delta,
        "threshold": _threshold(plan, k),
        "selection_scale": plan.selection.scale if plan.selection is not None else None,
        "expected_cells_published": expected,
        "expected_published_share": expected / n if n else 0.0,
        "cells_likely_published": int(((prob >= LIKELY)).sum()),
        "metrics": metrics,
    }
    if len(rplan.levels) > 1:
        out["levels"] = {
            lv.name: {
                "cells": int((level == lv.index).sum()),
                "threshold": _threshold(lp, k),
                "expected_cells_published": float(prob[level == lv.index].sum()),
            }
            for lv, lp in rplan.levels
        }
    if cfg.budget is not None and epsilon > cfg.budget.epsilon_limit:
        out["exceeds_budget_limit"] = True
    from ..config import EPSILON_CEILING

    if epsilon > EPSILON_CEILING and not (cfg.privacy is not None and cfg.privacy.allow_large_epsilon):
        out["above_epsilon_ceiling"] = True
    return out


# ----- text --------------------------------------------------------------------------------------


def _k(c: dict) -> str:
    return "—" if c.get("min_units") is None else str(c["min_units"])


def _pct(x: float | None) -> str:
    if x is None:
        return "—"
    if x < 0.001:
        return f"{x * 100:.2g}%"
    return f"{x * 100:.1f}%"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    out = [line, "  ".join("─" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return out


def format_plan(result: dict[str, Any]) -> str:
    """Readable text of a :func:`plan_report` result; the first and last lines carry the notice."""
    bar = "═" * len(NOTICE)
    out = [bar, NOTICE, bar, ""]
    rows = result.get("rows", {})
    out.append(f"report {result.get('report')} · {result.get('mode')} mode · "
               f"{rows.get('rows_aggregated', 0):,} rows with a privacy unit "
               f"({rows.get('rows_dropped_null_unit', 0):,} without, dropped)")
    out.append("")
    cands = result.get("candidates", [])
    if result.get("mode") == "threshold":
        table = []
        for c in cands:
            table.append([
                ("* " if c.get("configured") else "  ") + str(c["min_units"]),
                f"{c['cells_computed']:,}",
                f"{c['cells_published']:,}",
                f"{c['cells_suppressed']:,}",
                _pct(c["suppressed_share"]),
                _pct(c["rows_in_published_cells_share"]),
            ])
        out += _table(["  min_units", "cells", "published", "suppressed", "suppressed share",
                       "rows in published cells"], table)
    else:
        b = result.get("bounding", {})
        out.append(f"bounding: L0={b.get('max_groups_per_unit')} cells per unit, Linf={b.get('max_rows_per_group')} "
                   f"rows per cell keeps {_pct(b.get('rows_kept_share'))} of rows "
                   f"({b.get('rows_kept_after_bounding', 0):,} of {b.get('rows_aggregated', 0):,}); "
                   f"{b.get('cells_computed', 0):,} non-empty cells"
                   + (" (public partitions)" if b.get("public_partitions") else ""))
        out.append(f"noise: {result.get('noise')} · δ={result.get('delta'):g}")
        out.append("")
        names = list(next((c["metrics"] for c in cands if "metrics" in c), {}).keys())
        several = len({c.get("selection_share") for c in cands}) > 1

        def eps_label(c: dict) -> str:  # "1" or, when shares are compared, "1 @ 0.4"
            return f"{c['epsilon']:g}" + (f" @ {c['selection_share']:g}" if several else "")

        table = []
        for c in cands:
            mark = "* " if c.get("configured") else "  "
            if "error" in c:
                table.append([mark + eps_label(c), _k(c), "—", "error: " + c["error"], "—"]
                             + ["—"] * len(names))
                continue
            table.append([
                mark + eps_label(c) + (" !" if c.get("exceeds_budget_limit") else "")
                + (" ^" if c.get("above_epsilon_ceiling") else ""),
                _k(c),
                "—" if c["threshold"] is None else str(c["threshold"]),
                f"{c['expected_cells_published']:,.1f}",
                _pct(c["expected_published_share"]),
            ] + [_pct(c["metrics"][n]["median_relative_error"]) for n in names])
        head = "  epsilon @ selection share" if several else "  epsilon"
        out += _table([head, "min_units", "threshold", "expected published", "share"]
                      + [f"{n} err" for n in names], table)
        out.append("")
        by_split: dict[str, dict] = {}  # per (ε, share) the mechanisms are the same whatever k is
        for c in cands:
            if "metrics" in c:
                by_split.setdefault(eps_label(c), c["metrics"])
        loss = "ε" if result.get("noise") == "laplace" else "ρ"
        out.append(f"budget per metric (full table, {loss}; the distinct-unit count is partition selection's):")
        table = [[f"  {e}"] + [f"{ms[n]['budget']:.4g}" for n in names] for e, ms in by_split.items()]
        out += _table([head] + names, table)
        out.append("")
        out.append("noise per metric (95% half-width, absolute):")
        table = [[f"  {e}"] + ["per cell" if ms[n]["ci95_half_width"] is None else f"±{ms[n]['ci95_half_width']:,.4g}"
                                for n in names] for e, ms in by_split.items()]
        out += _table([head] + names, table)
        if len(cands) > 1 and result.get("reference_cells"):
            out.append("")
            out.append(f"median relative error on the same {result['reference_cells']:,} cells "
                       "(those likely published with the configured setting):")
            table = [
                [("* " if c.get("configured") else "  ") + eps_label(c), _k(c)]
                + [_pct(c["metrics"][n]["median_relative_error_reference"]) for n in names]
                for c in cands if "metrics" in c
            ]
            out += _table([head, "min_units"] + names, table)
        flagged = [f"{n} (±{c['metrics'][n]['median_ci95_over_value'] or float('inf'):.3g}× the value)"
                   for c in cands if c.get("configured") and "metrics" in c for n in names
                   if c["metrics"][n].get("noise_dominated")]
        if flagged:
            out.append("")
            out.append("noise-dominated at the configured setting (median 95% half-width above the value): "
                       + ", ".join(flagged))
        if any(c.get("exceeds_budget_limit") for c in cands):
            out.append("! exceeds budget.epsilon_limit")
        if any(c.get("above_epsilon_ceiling") for c in cands):
            out.append("^ above the per-release ceiling ε = 10: refused unless privacy.allow_large_epsilon")
    out.append("")
    out.append("* = configured setting")
    for note in result.get("notes", []):
        out.append(f"note: {note}")
    out += ["", NOTICE]
    return "\n".join(out)
