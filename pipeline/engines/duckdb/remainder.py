"""Remainder rows (``remainder: true``, threshold mode): totals that still add up.

Convention (docs/PRIVACY.md, "Remainder rows"): with ``remainder: true`` the report has a
``level`` column (even without ``totals``) and a boolean ``is_remainder`` column. For each table
level (``cell``, ``total``, ``by_<dims>``) at most one extra row is published with
``is_remainder = true``, that level's name in ``level`` and every dimension column NULL; its
metrics aggregate every withheld row of that level (primary and secondary suppressions alike),
so the published rows of a level plus its remainder add up to the level's full total. All other
rows have ``is_remainder = false``.

Which remainder rows are published is decided by :mod:`pipeline.privacy.remainder` (at least two
withheld rows, ``min_units`` and dominance over the union of their units, and no withheld value
pinned); this module builds the candidates in DuckDB (distinct units over the union, judged by
the same k and dominance SQL as cells) and writes the accepted ones. Only aggregate rows cross
into Python (positions and unit counts; never row-level data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...config import ReportConfig
from ...privacy.levels import levels
from .cells import dim_key, metric_output_expr, regroup_cols, unit_regroup_aggs, with_shared_values
from .sql import Params, Query, ident
from .suppression import level_name_case, reason_case

if TYPE_CHECKING:
    import duckdb


def candidates_sql(cfg: ReportConfig, level_indexes: list[int]) -> Query:
    """``__rem_cand``: one row per level in ``level_indexes`` aggregating its withheld rows.

    Columns match ``__cells``' ingredients (``__units``, ``__rows``, ``__s{i}``, ``__c{i}`` and,
    with dominance, ``__top{i}``/``__top2_{i}``/``__abs{i}``), plus ``__reason`` (k or dominance,
    judged exactly as cells are) and ``__level_name``. Units are distinct over the union.
    """
    params = Params()
    dom_n = cfg.dominance.n if cfg.dominance else 0
    lv_by_index = {lv.index: lv for lv in levels(cfg)}
    selects = []
    for index in level_indexes:
        lv = lv_by_index[index]
        keep = lv.kept(cfg)
        on = " AND ".join(f"p.{dim_key(i)} IS NOT DISTINCT FROM w.{dim_key(i)}" for i in keep) or "TRUE"
        keys = ", ".join(dim_key(i) for i in keep) or "1 AS __one"
        inner, outer = unit_regroup_aggs(cfg, dominance_n=dom_n, prefix="p.")
        withheld = f"SELECT {keys} FROM __cells WHERE __level = {int(index)} AND __suppressed"
        per_unit = (
            f"SELECT p.__u, {', '.join(inner)} FROM __per_unit p JOIN ({withheld}) w ON {on} "
            "WHERE p.__u IS NOT NULL GROUP BY p.__u"
        )
        select = f"SELECT {int(index)} AS __level, {', '.join(outer)} FROM ({per_unit})"
        selects.append(with_shared_values(cfg, select, regroup_cols(dom_n)))
    body = " UNION ALL BY NAME ".join(selects)
    sql = (
        "CREATE OR REPLACE TEMP TABLE __rem_cand AS SELECT *, "
        f"{reason_case(cfg, params)} AS __reason, {level_name_case(cfg)} AS __level_name FROM ({body})"
    )
    return Query(sql, tuple(params.values))


def apply_remainder(cfg: ReportConfig, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Build the remainder candidates in DuckDB, let :func:`pipeline.privacy.remainder.choose` decide,
    and write the accepted ones to the ``__remainder`` temp table; return counts for the manifest.

    Needs ``__cells`` with final ``__suppressed`` flags and ``__per_unit``. Every row put into
    ``__remainder`` meets the four conditions of the module docstring.
    """
    from ...privacy.remainder import choose, eligible_levels
    from .secondary import load_system, load_values

    system = load_system(cfg, con)
    values = load_values(cfg, con, system) if cfg.protection_interval is not None else None
    eligible = eligible_levels(cfg, system)
    reasons: dict[int, str | None] = {}
    if eligible:
        q = candidates_sql(cfg, eligible)
        con.execute(q.sql, list(q.params))
        reasons = dict(con.execute("SELECT __level, __reason FROM __rem_cand").fetchall())
    accepted, counts = choose(cfg, system, reasons, values)
    # same ingredient columns as __cells (an empty table when no level qualifies)
    con.execute("CREATE OR REPLACE TEMP TABLE __remainder AS SELECT * FROM "
                + ("__rem_cand" if eligible else "__cells") + " WHERE FALSE")
    if accepted:
        con.execute(
            "INSERT INTO __remainder SELECT * FROM __rem_cand WHERE __level IN "
            f"({', '.join(str(int(i)) for i in accepted)})"
        )
    return counts


def published_select_sql(cfg: ReportConfig) -> Query:
    """Output rows with remainders: ``__level`` (for ordering, dropped before writing), ``level``,
    ``is_remainder``, dimensions, metrics.

    No ORDER BY (the engine does not promise it; see :func:`pipeline.engines.duckdb.connection.connect`): the published order
    (:func:`pipeline.engines.duckdb.cells.published_order`) puts a level's published cells first, ordered by dimension
    values, then its remainder row.
    """
    dims = [ident(d.name) for d in cfg.dims]
    metrics = [f"{metric_output_expr(m, i)} AS {ident(m.name)}" for i, m in enumerate(cfg.metrics)]
    cells = ["__level", "__level_name AS level", "FALSE AS is_remainder"]
    cells += [f"{dim_key(i)} AS {d}" for i, d in enumerate(dims)] + metrics
    rem = ["__level", "__level_name AS level", "TRUE AS is_remainder"]
    rem += [f"NULL AS {d}" for d in dims] + metrics
    body = (
        f"SELECT {', '.join(cells)} FROM __cells WHERE NOT __suppressed "
        f"UNION ALL SELECT {', '.join(rem)} FROM __remainder"
    )
    out = ["__level", "level", "is_remainder"] + dims + [ident(m.name) for m in cfg.metrics]
    return Query(f"SELECT {', '.join(out)} FROM ({body})")
