"""Threshold-mode disclosure control on the ``__cells`` table (inside DuckDB).

Guarantees (each cell row gets ``__reason``: NULL = publishable, else why it is withheld):
- ``k``: fewer than ``min_units`` distinct privacy units.
- ``k_metric``: a sum or mean of the row aggregates values of fewer than ``min_units`` distinct
  people (``__cu{i}``; the others have no value): the whole row is withheld.
- ``dominance``: a cell whose top ``n`` units hold more than ``max_share`` of a sum/mean's
  absolute total or of its row count (when a ``count`` is published), or that fails the p% rule
  on one of them (total minus the two largest < p% of the largest).
- ``difference``: see :mod:`pipeline.engines.duckdb.difference` (added by the threshold flow when configured).
- ``secondary``: complementary suppression so no withheld cell can be derived from margins
  (see :mod:`pipeline.privacy.secondary`).
Counts per reason are reported; which cells were withheld is never reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...config import ReportConfig
from ...privacy.levels import levels
from ...privacy.rules import k_threshold
from .sql import Params, Query

if TYPE_CHECKING:
    import duckdb


def primary_sql(cfg: ReportConfig) -> Query:
    """Adds ``__reason`` and ``__level_name`` to ``__cells`` with k-threshold and dominance reasons."""
    params = Params()
    sql = (
        "CREATE OR REPLACE TEMP TABLE __cells AS SELECT *, "
        f"{reason_case(cfg, params)} AS __reason, "
        f"{level_name_case(cfg)} AS __level_name, "
        "FALSE AS __suppressed FROM __cells"
    )
    return Query(sql, tuple(params.values))


def reason_case(cfg: ReportConfig, params: Params) -> str:
    """SQL ``CASE`` giving a row's primary reason ('k', 'dominance') or NULL, from its ingredients.

    Reads ``__units`` and, with dominance, ``__top{i}``, ``__top2_{i}``, ``__abs{i}`` (see
    :func:`pipeline.engines.duckdb.cells.cells_from_per_unit_sql`); any table with those columns can be judged the same way.
    """
    k = params.add(k_threshold(cfg))  # the k rule (privacy.rules)
    reasons = [f"WHEN __units < {k} THEN 'k'"]
    dom = cfg.dominance
    if dom is not None:
        # (top n, two largest, absolute total) per dominated number: every sum/mean and, when a
        # row count is published, the rows (one person's 50,000 of 50,400 rows is their count)
        ingredients = [(f"__top{i}", f"__top2_{i}", f"__abs{i}")
                       for i, m in enumerate(cfg.metrics) if m.agg in ("sum", "mean")]
        if any(m.agg == "count" for m in cfg.metrics):
            ingredients.append(("__topn", "__top2n", "__rows"))
        for top, top2, total in ingredients:
            if dom.max_share is not None:
                share = params.add(float(dom.max_share))
                reasons.append(
                    f"WHEN {total} > 0 AND CAST({top} AS DOUBLE) > {share} * CAST({total} AS DOUBLE) THEN 'dominance'"
                )
            else:
                p = params.add(float(dom.p_percent or 0) / 100.0)
                # p% rule: the second largest contributor can estimate the largest to within
                # (total - x1 - x2); sensitive when that is below p% of x1.
                reasons.append(
                    f"WHEN {total} > 0 AND CAST({total} - {top2}[1] - coalesce({top2}[2], 0) AS DOUBLE)"
                    f" < {p} * CAST({top2}[1] AS DOUBLE) THEN 'dominance'"
                )
    # the k rule holds for every number: a sum or mean aggregates at least k people with a value
    # (a mean over 60 people of whom one has a value is that person's value)
    for i, m in enumerate(cfg.metrics):
        if m.column is not None:
            reasons.append(f"WHEN __cu{i} > 0 AND __cu{i} < {k} THEN 'k_metric'")
    return f"CASE {' '.join(reasons)} ELSE NULL END"


def level_name_case(cfg: ReportConfig) -> str:
    """SQL ``CASE`` mapping ``__level`` to the published level name ('cell', 'total', 'by_…')."""
    names = " ".join(f"WHEN {lv.index} THEN '{lv.name}'" for lv in levels(cfg))
    return f"CASE __level {names} END"


def finalize_sql() -> str:
    return "UPDATE __cells SET __suppressed = (__reason IS NOT NULL)"


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Cells computed / published / suppressed, overall and per reason (aggregate counts only)."""
    total, published = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE __reason IS NULL) FROM __cells"
    ).fetchall()[0]
    by_reason = dict(
        con.execute(
            "SELECT __reason, count(*) FROM __cells WHERE __reason IS NOT NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    return {
        "cells_computed": int(total),
        "cells_published": int(published),
        "cells_suppressed": int(total - published),
        **{f"suppressed_{k}": int(v) for k, v in by_reason.items()},
    }
