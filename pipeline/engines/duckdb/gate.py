"""The release gate's checks that read data, as DuckDB SQL (the orchestration is ``flows.gate``).

Each function runs against the report registered as ``__gate_report`` and, where it says so, the
source view ``__src`` or the run's own temp tables; only counts and column names come back to
Python, never a data value.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ...privacy.identifiers import (
    CARD_MIN_DIGITS,
    DIGITS_MIN,
    NUMBER,
    PATTERNS,
    QI_DISTINCT_RATIO,
    QI_SINGLE_UNIT_SHARE,
    WHITESPACE,
    has_card_number,
)
from ...privacy.levels import Level, levels
from .cells import dim_key, dimension_expr, filter_sql
from .sql import Params, ident, literal

if TYPE_CHECKING:
    import pyarrow as pa

    from ...config import ReportConfig


def pattern_hits(con: Any, cols: list[str]) -> list[tuple[str, str]]:
    """(column, kind) for every text column of the report with a value matching an identifier
    pattern (:data:`~pipeline.privacy.identifiers.PATTERNS`, searched, not full-matched) or holding
    a card number. One scan counts every (column, pattern) pair; the values with at least
    ``CARD_MIN_DIGITS`` digits (a superset of those holding a card number) are then read, only when
    there are any, and judged by :func:`~pipeline.privacy.identifiers.has_card_number`."""
    if not cols:
        return []
    params = Params()
    aggs, keys = [], []
    digits = f"{int(CARD_MIN_DIGITS)}"
    for col in cols:
        c = ident(col)
        for kind, pattern in PATTERNS.items():
            aggs.append(f"count(*) FILTER (WHERE regexp_matches({c}, {params.add(pattern)}))")
            keys.append((col, kind))
        aggs.append(f"count(*) FILTER (WHERE length(regexp_replace({c}, '[^0-9]', '', 'g')) >= {digits})")
        keys.append((col, "card_candidates"))
    counts = con.execute(f"SELECT {', '.join(aggs)} FROM __gate_report", params.values).fetchall()[0]
    # the counts are columns of one row, in the order of ``aggs`` (written above), not rows
    found = dict(zip(keys, counts, strict=True))
    hits = [(col, kind) for (col, kind), n in found.items() if n and kind != "card_candidates"]
    cand_cols = [(j, col) for j, col in enumerate(cols) if found[(col, "card_candidates")]]
    if cand_cols:
        union = " UNION ALL ".join(
            f"SELECT {j} AS j, {ident(col)} AS v FROM __gate_report "
            f"WHERE length(regexp_replace({ident(col)}, '[^0-9]', '', 'g')) >= {digits}"
            for j, col in cand_cols
        )
        carded = {cols[int(j)] for j, v in con.execute(f"SELECT DISTINCT j, v FROM ({union})").fetchall()
                  if has_card_number(v)}
        hits += [(col, "card_number") for col in cols if col in carded]
    return hits


# up to this many published forms of one kind are matched as a list of values, more by a join
IN_LIST_MAX = 5000

_INTEGER_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
)


def _form_exprs(x: str) -> dict[str, str]:
    """Per kind of normal form, SQL for the form of the text expression ``x`` without its prefix
    (NULL when ``x`` has no form of that kind): the one place the rule of
    :mod:`pipeline.privacy.identifiers` is written in SQL."""
    # trimmed of WHITESPACE only where an end holds one (the end test is cheaper than trim with a
    # character list, which DuckDB runs at half the speed of its plain trim)
    chars = " || ".join(f"chr({ord(c)})" for c in WHITESPACE)
    ends = ", ".join(f"chr({ord(c)})" for c in WHITESPACE)
    text = (f"(CASE WHEN substr({x}, 1, 1) IN ({ends}) OR substr({x}, -1, 1) IN ({ends}) "
            f"THEN trim({x}, {chars}) ELSE {x} END)")
    num = f"CASE WHEN regexp_matches({text}, '^(?:{NUMBER})$') THEN TRY_CAST({text} AS DOUBLE) END"  # portable: Spark RLIKE
    digits = f"regexp_replace({x}, '[^0-9]', '', 'g')"
    return {
        "t": f"lower({text})",
        "n": f"CASE WHEN isfinite({num}) THEN CAST({num} AS VARCHAR) END",
        "d": f"CASE WHEN length({digits}) >= {int(DIGITS_MIN)} THEN {digits} END",
    }


def normal_forms_sql(x: str) -> str:
    """SQL list of the normal forms of the text expression ``x`` (the rule of
    :mod:`pipeline.privacy.identifiers`: ``t:`` text trimmed of ``WHITESPACE``, lower-cased; ``n:`` the finite number
    it parses as; ``d:`` its digits when there are at least ``DIGITS_MIN``)."""
    forms = ", ".join(f"'{k}:' || {e}" for k, e in _form_exprs(x).items())
    return f"list_filter([{forms}], lambda f: f IS NOT NULL)"


def identifier_value_hits(cfg: ReportConfig, con: Any, schema: dict[str, str], table: pa.Table) -> list[tuple[str, str]]:
    """(dimension, identifier) pairs where a published value and a source identifier value share a
    normal form (:func:`normal_forms_sql`): however a phone number, id or device id is spelled.

    The published values of every dimension go into one small table of forms; every identifier
    column is then read in one statement (one scan per column, not per dimension × identifier). An
    integer column is joined on its typed values (the integers a published value's number or digits
    name), which keeps DuckDB's Parquet min/max pruning; any other column's values are put in their
    normal forms and kept where they equal a published form, listed as values (a hash filter on
    both engines: Spark would sort-merge join a table it cannot size) up to ``IN_LIST_MAX`` forms of
    a kind, joined beyond. What comes back is published forms (and dimension indexes), never a
    source value the release does not already hold.

    Time-bucket dimensions (``grain``) are not compared: their values are dates the pipeline
    computes (``date_trunc`` of a column that config validation forbids from being an identifier),
    not values copied from the source, so an equal identifier value could only be a coincidence
    that reveals nothing. Leaving them out also keeps DuckDB's Parquet min/max pruning effective:
    a set of dates falls inside the range of almost any text identifier column (IP addresses, say)
    and forced a full read of it.
    """
    ids = [c for c in dict.fromkeys([cfg.privacy_unit, *cfg.identifiers]) if c in schema]
    dims = [d.name for d in cfg.dims if d.grain is None and d.name in table.column_names]
    if not ids or not dims:
        return []
    union = " UNION ALL ".join(
        f"SELECT {i} AS d, CAST({ident(dim)} AS VARCHAR) AS v FROM __gate_report WHERE {ident(dim)} IS NOT NULL"
        for i, dim in enumerate(dims)
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE __gate_values AS SELECT DISTINCT d, unnest({normal_forms_sql('v')}) AS f "
        f"FROM (SELECT DISTINCT d, v FROM ({union}))"
    )
    hits: set[tuple[str, str]] = set()
    try:
        # the published values' forms (the release's own values, not source rows) by kind
        by_form: dict[str, dict[str, set[int]]] = {}
        for d, f in con.execute("SELECT d, f FROM __gate_values").fetchall():
            by_form.setdefault(f[0], {}).setdefault(f[2:], set()).add(int(d))
        kinds = set(by_form)
        params = Params()
        scans: list[tuple[str, str]] = []  # (identifier column, SQL of the (kind, form) pairs it matches)
        for idc in ids:
            col = ident(idc)
            typ = schema[idc].upper()
            if typ in _INTEGER_TYPES:
                # the integers a published value names: its number (when whole) or its digits
                named = (
                    f"SELECT d, TRY_CAST(CASE WHEN substr(f, 1, 1) = 'n' THEN TRY_CAST(TRY_CAST(substr(f, 3) AS DOUBLE) AS HUGEINT) "
                    f"WHEN substr(f, 1, 1) = 'd' THEN TRY_CAST(substr(f, 3) AS HUGEINT) END AS {typ}) AS t FROM __gate_values "
                    "WHERE substr(f, 1, 1) IN ('n', 'd')"
                )
                sql = (f"SELECT DISTINCT '#' AS k, CAST(g.d AS VARCHAR) AS f FROM __src s JOIN "
                       f"(SELECT * FROM ({named}) WHERE t IS NOT NULL) g ON s.{col} = g.t")
            else:
                # one join per kind of form the published values have: a source value's forms of
                # other kinds cannot match (the forms are prefixed by kind), so they are not computed
                # (published city names have text forms only; the digits of 1M phone numbers cost seconds)
                parts = []
                for k, expr in _form_exprs("x").items():
                    if k not in kinds:
                        continue
                    forms = f"(SELECT {expr} AS f FROM (SELECT CAST({col} AS VARCHAR) AS x FROM __src WHERE {col} IS NOT NULL))"
                    if len(by_form[k]) <= IN_LIST_MAX:
                        # the published forms as a list of values: a hash filter over the scan
                        # (Spark would otherwise sort-merge join 10M strings with a table it cannot size)
                        listed = ", ".join(params.add(f) for f in by_form[k])
                        parts.append(f"SELECT DISTINCT {literal(k)} AS k, s.f FROM {forms} s WHERE s.f IN ({listed})")
                    else:
                        parts.append(
                            f"SELECT DISTINCT {literal(k)} AS k, s.f FROM {forms} s JOIN (SELECT substr(f, 3) AS f "
                            f"FROM __gate_values WHERE substr(f, 1, 1) = {literal(k)}) g ON g.f = s.f"
                        )
                sql = " UNION ".join(parts)
            if sql:
                scans.append((idc, f"SELECT {len(scans)} AS i, k, f FROM ({sql})"))
        if scans:
            # every column in one statement: one engine job (Spark runs the scans side by side);
            # each row names its column by the index ``i`` written into its own branch, and the
            # published form it equals (kind ``k``), or for an integer column the dimension (``#``)
            union = " UNION ALL ".join(q for _, q in scans)
            for i, k, f in con.execute(f"SELECT DISTINCT i, k, f FROM ({union})", params.values).fetchall():
                found = {int(f)} if k == "#" else by_form[k][f]
                hits.update((dims[d], scans[i][0]) for d in found)
    finally:
        con.execute("DROP TABLE IF EXISTS __gate_values")
    return sorted(hits)


def quasi_identifiers(
    cfg: ReportConfig,
    con: Any,
    schema: dict[str, str],
    *,
    unit_pairs: str | None = None,
    cell_units: str | None = None,
) -> list[str]:
    """Dimensions that behave like quasi-identifiers in the (filtered) source.

    A dimension is one when its distinct values number more than ``QI_DISTINCT_RATIO`` × the
    distinct units, or when (with at least 10 values) more than ``QI_SINGLE_UNIT_SHARE`` of its
    values are held by exactly one unit. A value is held by exactly one unit iff its smallest and
    largest unit are equal, so no per-value count(DISTINCT) is needed; all dimensions are done at
    once with GROUPING SETS.

    The per-value statistics come from, in order of preference: ``cell_units`` (the run's cell
    table: full-table rows ``__level = 0`` with ``__units``, ``__umin``, ``__umax``; the min and
    max over a value's cells are the value's min and max), ``unit_pairs`` (the run's (cell, unit)
    table over the same filtered source), or the source itself. With ``cell_units`` the distinct
    units are bounded by the largest cell and the sum over cells, and counted exactly (one pass
    over the pairs or the source) only when those bounds cannot decide a rule. The answer is the
    same from every input.
    """
    dims = [(j, d) for j, d in enumerate(cfg.dims) if d.grain is None]  # time buckets are coarse by construction
    params = Params()
    for name in (unit_pairs, cell_units):
        if name is not None and not re.fullmatch(r"__[a-z_]+", name):
            raise ValueError(f"unit_pairs/cell_units must name a pipeline temp table, not {name!r}")
    if unit_pairs is not None:
        cols = "".join(f", __d{j} AS k{j}" for j, _ in dims)
        rows = f"SELECT __u AS u{cols} FROM {unit_pairs} WHERE __u IS NOT NULL"
    else:
        unit = ident(cfg.privacy_unit)
        where = filter_sql(cfg, params)
        cols = "".join(f", {dimension_expr(d, schema.get(d.column, 'VARCHAR'))} AS k{j}" for j, d in dims)
        rows = f"SELECT {unit} AS u{cols} FROM __src WHERE ({where}) AND {unit} IS NOT NULL"

    def exact_units() -> int:
        return int(con.execute(f"SELECT count(DISTINCT u) FROM ({rows})", params.values).fetchall()[0][0] or 0)

    sets = ", ".join(f"(k{j})" for j, _ in dims)
    which = "CASE " + " ".join(f"WHEN GROUPING(k{j}) = 0 THEN {j}" for j, _ in dims) + " END"
    if cell_units is not None:
        lo_n, hi_n = con.execute(
            f"SELECT coalesce(max(__units), 0), coalesce(sum(__units), 0) FROM {cell_units} "
            "WHERE __level = 0 AND __units > 0"
        ).fetchall()[0]
        lo_n, hi_n = int(lo_n), int(hi_n)
        keys = "".join(f", __d{j} AS k{j}" for j, _ in dims)
        stat_rows = f"SELECT __umin, __umax{keys} FROM {cell_units} WHERE __level = 0 AND __units > 0"
        lo_hi = "min(__umin) AS lo, max(__umax) AS hi"
        stat_params: list[Any] = []
    else:
        lo_n = hi_n = exact_units()
        stat_rows, lo_hi, stat_params = rows, "min(u) AS lo, max(u) AS hi", params.values
    found: list[str] = []
    if not hi_n or not dims:
        return found
    by_dim: dict[int, tuple[int, int]] = {}
    if hi_n >= 2 * cfg.k:
        stats = con.execute(
            f"SELECT j, count(*), count(*) FILTER (WHERE lo = hi) FROM ("
            f"SELECT {which} AS j, {lo_hi} FROM ({stat_rows}) GROUP BY GROUPING SETS ({sets})"
            ") GROUP BY j",
            stat_params,
        ).fetchall()
        by_dim = {int(j): (int(n), int(single)) for j, n, single in stats}
    # bounds that cannot decide the size rule or a ratio rule: count the units exactly
    undecided = lo_n < 2 * cfg.k <= hi_n or any(
        lo_n * QI_DISTINCT_RATIO < n <= hi_n * QI_DISTINCT_RATIO for n, _ in by_dim.values()
    )
    if lo_n != hi_n and undecided:
        lo_n = hi_n = exact_units()
    if hi_n < 2 * cfg.k:
        return found
    for j, d in dims:
        n_values, single = by_dim.get(j, (0, 0))
        # lo_n == hi_n (exact), or the bounds agree: more than the ratio of the most units possible
        if n_values and (n_values / hi_n > QI_DISTINCT_RATIO or (n_values >= 10 and single / n_values > QI_SINGLE_UNIT_SHARE)):
            found.append(d.name)
    return found


def recomputed_min_units(cfg: ReportConfig, con: Any, schema: dict[str, str], table: pa.Table) -> dict[str, int]:
    """See :func:`_recount`; drops the gate's scratch table whatever happens."""
    try:
        return _recount(cfg, con, schema, table)
    finally:
        con.execute("DROP TABLE IF EXISTS __gate_full")


def _recount(cfg: ReportConfig, con: Any, schema: dict[str, str], table: pa.Table) -> dict[str, int]:
    """Rows of the written report that fail the threshold, recomputed from the source.

    - ``metric_below``: level rows with a sum/mean whose column holds a value for at least one
      but fewer than ``min_units`` of those units (the k rule per number);
    - ``rows_below``: level rows whose keys match fewer than ``min_units`` units in the source
      (full-table rows first; a margin row with a published full-table cell recounted at
      ``min_units`` or more is proven by it, since the margin holds every unit of that cell, and
      only the other margin rows are recounted);
    - ``remainder_bad``: remainder rows (``is_remainder``) whose withheld rows, i.e. every source
      row of that level whose keys are not published at that level, hold fewer than ``min_units``
      units or fewer than two distinct keys (one withheld row must never be published as such);
      also a second remainder row for one level, or one with a dimension value;
    - ``malformed``: rows with an unknown level, or a rolled-up dimension that is not NULL.
    """
    out = {"rows_below": 0, "metric_below": 0, "remainder_bad": 0, "malformed": 0}
    if table.num_rows == 0:
        return out
    exprs = [f"{dimension_expr(d, schema.get(d.column, 'VARCHAR'))} AS k{i}" for i, d in enumerate(cfg.dims)]
    # per sum/mean metric: does the row carry a value (non-null and finite, as it is aggregated)?
    # Written here, not taken from the aggregation's SQL: the recount stays independent of it.
    valued = [i for i, m in enumerate(cfg.metrics) if m.column is not None]
    for i in valued:
        m = cfg.metrics[i]
        x = f"TRY_CAST({ident(m.column)} AS DOUBLE)"
        if m.multiply_by is not None:
            x = f"({x} * TRY_CAST({ident(m.multiply_by)} AS DOUBLE))"
        exprs.append(f"CASE WHEN isfinite({x}) THEN TRUE END AS v{i}")
    cu_aggs = "".join(f", count(DISTINCT s.u) FILTER (WHERE s.v{i}) AS __cu{i}" for i in valued)
    cu_cols = "".join(f", coalesce(c.__cu{i}, 0) AS __cu{i}" for i in valued)
    # a row whose sum or mean aggregates the values of 1..k-1 people (the k rule per number)
    metric_low = " OR ".join(f"(__cu{i} > 0 AND __cu{i} < {int(cfg.min_units)})" for i in valued) or "FALSE"
    cu_ok = "".join(f" AND __cu{i} >= {int(cfg.min_units)}" for i in valued)
    unit = ident(cfg.privacy_unit)

    def source_rows(params: Params) -> str:
        return f"SELECT {unit} AS u, {', '.join(exprs)} FROM __src WHERE {filter_sql(cfg, params)} AND {unit} IS NOT NULL"

    has_level = "level" in table.column_names
    has_rem = "is_remainder" in table.column_names
    is_rem = "coalesce(r.is_remainder, FALSE)" if has_rem else "FALSE"
    all_levels = levels(cfg)
    level_names = {lv.name: lv for lv in all_levels}
    if has_level:
        params = Params()
        known = ", ".join(params.add(n) for n in level_names)
        out["malformed"] += con.execute(
            f"SELECT count(*) FROM __gate_report r WHERE r.level IS NULL OR r.level NOT IN ({known})", params.values
        ).fetchall()[0][0]
        present = [r[0] for r in con.execute(
            "SELECT DISTINCT level FROM __gate_report WHERE level IS NOT NULL ORDER BY 1").fetchall()]
        todo = sorted((level_names[n] for n in present if n in level_names), key=lambda lv: lv.index)
    else:
        todo = [all_levels[0]]
    con.execute("DROP TABLE IF EXISTS __gate_full")
    dims_out = ", ".join(f"r.{ident(d.name)}" for d in cfg.dims)
    margins = [lv for lv in todo if lv.index > 0]

    def kept(lv: Level) -> list[int]:
        return lv.kept(cfg)

    def at_level(params: Params, lv: Level) -> str:
        return (f"r.level = {params.add(lv.name)}" if has_level else "TRUE") + f" AND NOT {is_rem}"

    def beneath(lv: Level, table_sql: str) -> str:
        """A row of ``table_sql`` (alias f) with margin row r's values on r's dimensions."""
        match = "".join(f" AND f.{ident(cfg.dims[i].name)} IS NOT DISTINCT FROM r.{ident(cfg.dims[i].name)}"
                        for i in kept(lv))
        return f"EXISTS (SELECT 1 FROM {table_sql} f WHERE TRUE{match})"

    def counted(params: Params, parts: list[tuple[Level, str]]) -> str:
        """(__rid, __lvl, dimensions, __n) of the rows each part selects (a WHERE over report rows r):
        distinct units over the matching source rows only, keys attached afterwards (0 when nothing
        matches). One source scan serves every part: with several, it is materialised once."""
        sel = " UNION ALL ".join(f"SELECT r.*, {lv.index} AS __lvl FROM __all r WHERE {cond}" for lv, cond in parts)
        ctes = ["__all AS MATERIALIZED (SELECT row_number() OVER () AS __rid, * FROM __gate_report)",
                f"__rows AS MATERIALIZED ({sel})"]
        s_from = f"({source_rows(params)})"
        if len(parts) > 1:
            ctes.append(f"__gsrc AS MATERIALIZED {s_from}")
            s_from = "__gsrc"
        joins = []
        for lv, _ in parts:
            on = " AND ".join(f"r.{ident(cfg.dims[i].name)} IS NOT DISTINCT FROM s.k{i}" for i in kept(lv)) or "TRUE"
            joins.append(f"SELECT r.__rid, count(DISTINCT s.u) AS __n{cu_aggs} FROM (SELECT * FROM __rows WHERE __lvl = "
                         f"{lv.index}) r JOIN {s_from} s ON {on} GROUP BY r.__rid")
        ctes.append(f"__counts AS ({' UNION ALL '.join(joins)})")
        return (f"WITH {', '.join(ctes)} SELECT r.__rid, r.__lvl, {dims_out}, coalesce(c.__n, 0) AS __n{cu_cols} "
                "FROM __rows r LEFT JOIN __counts c ON r.__rid = c.__rid")

    def published_full(params: Params) -> str:
        return f"(SELECT * FROM __gate_report r WHERE {at_level(params, all_levels[0])})"

    def no_cell_beneath(params: Params, lv: Level) -> str:
        """Margin rows of ``lv`` that no published full-table cell lies under."""
        return f"{at_level(params, lv)} AND NOT {beneath(lv, published_full(params))}"

    def unproven(params: Params, lv: Level) -> str:
        """Margin rows of ``lv`` with published full-table cells beneath, none recounted at >= min_units
        (people, and people with a value of each sum/mean: a margin holds at least a cell's)."""
        proof = f"(SELECT * FROM __gate_full WHERE __lvl = 0 AND __n >= {params.add(cfg.min_units)}{cu_ok})"
        return f"{at_level(params, lv)} AND {beneath(lv, published_full(params))} AND NOT {beneath(lv, proof)}"

    def with_rows(where: Any) -> list[Level]:
        """Margin levels with a report row matching ``where(params, lv)``: the report is small, so
        this is cheap, and it spares counting (and materialising the source) for empty parts."""
        out_levels = []
        for lv in margins:
            p = Params()
            if con.execute(f"SELECT count(*) FROM __gate_report r WHERE {where(p, lv)}", p.values).fetchall()[0][0]:
                out_levels.append(lv)
        return out_levels

    # One scan: the full table's rows, and the margin rows no published full-table cell lies under.
    # A margin row holds every unit of each full-table cell beneath it, so one published cell that
    # recounts at >= min_units proves it without a scan of its own.
    params = Params()
    parts = [(lv, at_level(params, lv)) for lv in todo if lv.index == 0]
    parts += [(lv, no_cell_beneath(params, lv)) for lv in with_rows(no_cell_beneath)]
    if parts:
        con.execute(f"CREATE TEMP TABLE __gate_full AS {counted(params, parts)}", params.values)
        out["rows_below"] += con.execute(
            "SELECT count(*) FROM __gate_full WHERE __n < $1", [cfg.min_units]
        ).fetchall()[0][0]
        out["metric_below"] += con.execute(f"SELECT count(*) FROM __gate_full WHERE {metric_low}").fetchall()[0][0]
        # margin rows whose published cells all recounted below min_units (the release fails on
        # those cells anyway) are recounted too, so that rows_below counts every row below k
        more = with_rows(unproven)
        if more:
            p_more = Params()
            counts = counted(p_more, [(lv, unproven(p_more, lv)) for lv in more])
            below, metric_below = con.execute(
                f"SELECT count(*) FILTER (WHERE __n < {p_more.add(cfg.min_units)}), count(*) FILTER (WHERE {metric_low}) "
                f"FROM ({counts})", p_more.values
            ).fetchall()[0]
            out["rows_below"] += below
            out["metric_below"] += metric_below
    for lv in todo:
        keep = kept(lv)
        rolled = [d.name for d in cfg.dims if d.name not in lv.dims]
        if rolled:
            p2 = Params()
            cond = " OR ".join(f"r.{ident(n)} IS NOT NULL" for n in rolled)
            filt = f"r.level = {p2.add(lv.name)}" if has_level else "TRUE"
            out["malformed"] += con.execute(
                f"SELECT count(*) FROM __gate_report r WHERE {filt} AND NOT {is_rem} AND ({cond})", p2.values
            ).fetchall()[0][0]
        if not has_rem:
            continue
        # remainder rows of this level, recomputed from the source on their own terms
        p3 = Params()
        lvp = p3.add(lv.name)
        n_rem = con.execute(
            f"SELECT count(*) FROM __gate_report r WHERE r.level = {lvp} AND {is_rem}", p3.values
        ).fetchall()[0][0]
        if not n_rem:
            continue
        dims_set = " OR ".join(f"r.{ident(d.name)} IS NOT NULL" for d in cfg.dims)
        bad_shape = con.execute(
            f"SELECT count(*) FROM __gate_report r WHERE r.level = {lvp} AND {is_rem} AND ({dims_set})", p3.values
        ).fetchall()[0][0]
        p4 = Params()
        src4 = source_rows(p4)
        lv4 = p4.add(lv.name)
        match = " AND ".join(f"p.{ident(cfg.dims[i].name)} IS NOT DISTINCT FROM s.k{i}" for i in keep) or "TRUE"
        p_is_rem = "coalesce(p.is_remainder, FALSE)"
        kcols = ", ".join(f"k{i}" for i in keep) or "1"
        rest_cu = "".join(f", (SELECT count(DISTINCT u) FILTER (WHERE v{i}) FROM rest)" for i in valued)
        units, n_keys, *cus = con.execute(
            f"WITH rest AS (SELECT * FROM ({src4}) s WHERE NOT EXISTS (SELECT 1 FROM __gate_report p "
            f"WHERE p.level = {lv4} AND NOT {p_is_rem} AND {match})) "
            f"SELECT (SELECT count(DISTINCT u) FROM rest), (SELECT count(*) FROM (SELECT DISTINCT {kcols} FROM rest))"
            f"{rest_cu}",
            p4.values,
        ).fetchall()[0]
        if units < cfg.min_units or n_keys < 2 or any(0 < c < cfg.min_units for c in cus):
            out["remainder_bad"] += n_rem
        else:
            out["remainder_bad"] += max(n_rem - 1, bad_shape)
    return out


def declared_min_units(cfg: ReportConfig, con: Any, table: pa.Table) -> int:
    unit_metrics = [m.name for m in cfg.metrics if m.agg == "count_units" and m.name in table.column_names]
    if not unit_metrics:
        return 0
    col = ident(unit_metrics[0])
    return con.execute(f"SELECT count(*) FROM __gate_report WHERE {col} < $1", [cfg.min_units]).fetchall()[0][0]



def noise_counts(cfg: ReportConfig, con: Any, table: pa.Table, truth: str, exps: list[Any]) -> tuple[list[tuple], int, int]:
    """Counts for :func:`pipeline.privacy.plausibility.judge`: every published row joined to the true
    cell of its own level and dimension values in ``truth`` (never by position), then per expectation
    the counts it asks for. Returns (pairs of expectation and counts, unmatched rows, joined rows);
    the true values never leave DuckDB."""
    from .suppression import level_name_case

    if not re.fullmatch(r"__[a-z_]+", truth):
        raise ValueError(f"dp_truth must name a pipeline temp table, not {truth!r}")
    has_level = "level" in table.column_names
    on = [f"r.{ident(d.name)} IS NOT DISTINCT FROM t.{dim_key(i)}" for i, d in enumerate(cfg.dims)]
    on.append("r.level = t.__lname" if has_level else "t.__level = 0")
    t_cols = ["__units", "__rows"] + [f"__{c}{i}" for i, m in enumerate(cfg.metrics) if m.column is not None for c in "sc"]
    picked = ", ".join(f"CAST(coalesce(t.{c}, 0) AS DOUBLE) AS __t{c}" for c in t_cols)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE __gate_truth AS SELECT r.*, t.__level AS __tlevel, {picked} "
        f"FROM __gate_report r LEFT JOIN (SELECT {level_name_case(cfg)} AS __lname, * FROM {truth}) t ON {' AND '.join(on)}"
    )
    try:
        rows, unmatched = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE __tlevel IS NULL) FROM __gate_truth").fetchall()[0]
        found = []
        for e in exps:
            params = Params()
            where = f"r.level = {params.add(e.level_name)}" if has_level else "TRUE"
            pub = f"CAST(r.{ident(e.metric)} AS DOUBLE)"
            if e.kind == "mean":
                i = e.metric_index
                mu = f"(r.__t__s{i} / r.__t__c{i})"
                ts, tc, mid, width = (params.add(x) for x in (e.tail, e.tail_count, e.mid, e.width))
                tol = (f"CASE WHEN r.__t__c{i} - {tc} >= 1 THEN ({ts} + abs({mu} - {mid}) * {tc}) / (r.__t__c{i} - {tc}) "
                       f"ELSE {width} END + 1e-4")
                sql = (f"SELECT count(*), count(*) FILTER (WHERE abs({pub} - {mu}) > {tol}) FROM __gate_truth r "
                       f"WHERE {where} AND r.__t__c{i} > 0")
            elif e.kind == "projected":
                sql = f"SELECT count(*), coalesce(sum(({pub} - r.__t__{e.true}) ^ 2), 0) FROM __gate_truth r WHERE {where}"
            else:
                true = f"r.__t__{e.true}"
                big_t, slack, cut, side, elig = (params.add(x) for x in (e.tail, e.rounding + 1e-9, e.cut, e.side, e.eligible))
                sql = (f"SELECT count(*), count(*) FILTER (WHERE abs({pub} - {true}) > {big_t} + {slack}), "
                       f"count(*) FILTER (WHERE {true} >= {elig}), "
                       f"count(*) FILTER (WHERE {true} >= {elig} AND {side} * ({pub} - {true}) > {cut}) "
                       f"FROM __gate_truth r WHERE {where}")
            found.append((e, tuple(con.execute(sql, params.values).fetchall()[0])))
    finally:
        con.execute("DROP TABLE IF EXISTS __gate_truth")
    return found, int(unmatched), int(rows)
