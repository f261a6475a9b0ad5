"""Release gate: an independent re-check of the written report bytes. Fails closed.

The gate does not trust the aggregation step. It re-reads the Parquet bytes that are about to be
published and refuses (:class:`PrivacyRefusal`, exit 3) when:
- ``columns``: a column is not a declared dimension, metric, interval (``*_ci95``), ``level`` or
  ``is_remainder`` column;
- ``patterns``: any text value looks like an identifier (e-mail, phone, IPv4/IPv6, card number
  passing Luhn, Indian PAN, Aadhaar, GSTIN);
- ``identifier_values``: any published dimension value equals a value of a declared identifier
  column (or the privacy unit) in the source; checked inside DuckDB by a join;
- ``quasi_identifier``: a dimension's distinct values number close to the distinct units, or most of
  its values belong to a single unit (in the source);
- ``min_units`` (threshold mode): a published row aggregates fewer than ``min_units`` distinct
  units, recomputed from the source by joining the published keys back to it; a remainder row
  is recomputed as every source row of its level whose keys are not published (at least
  ``min_units`` units and two withheld keys); rows with an unknown level fail;
- ``noise`` (DP mode, during a run): a published row matches no computed cell; a published value
  lies farther from the true (bounded) value it was drawn from than its mechanism's noise reaches
  with probability ``noise.GATE_TAIL`` (1e-12); or the spread of a metric's deviations over its
  cells is that unlikely under its mechanism (too small: a missing noise draw; too large: a wrong
  scale or values on the wrong cells). The true values stay in the engine: only counts come out.
The result records which checks ran and what they found (counts only, never values).
"""

from __future__ import annotations

import io
import re
import time
from typing import TYPE_CHECKING, Any

from ..engines.duckdb.cells import dimension_expr, filter_sql
from ..engines.duckdb.sql import Params, ident
from ..errors import PrivacyRefusal
from ..privacy.levels import Level, levels

if TYPE_CHECKING:
    import pyarrow as pa

    from ..config.models import ReportConfig
    from ..engines.duckdb.sources import Source

# Patterns are deliberately broad: a false alarm blocks a release, a miss leaks a person.
PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
    "phone_in": r"(\+91[\-\s]?)?[6-9]\d{4}[\-\s]?\d{5}",
    "phone_intl": r"\+\d{1,3}[\-\s]?\(?\d{1,4}\)?([\-\s]?\d{2,4}){2,4}",
    "ipv4": r"\b((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)\b",
    # four or more colon-separated hex groups, or any '::' compression next to a hex group; a time
    # of day (12:30:45) has only three groups and is not an address
    "ipv6": r"\b([0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}\b|\b[0-9A-Fa-f]{1,4}::|::[0-9A-Fa-f]{1,4}\b",
    "pan": r"\b[A-Z]{3}[ABCFGHLJPTK][A-Z]\d{4}[A-Z]\b",
    "aadhaar": r"\b[2-9]\d{3}[\s\-]?\d{4}[\s\-]?\d{4}\b",
    "gstin": r"\b\d{2}[A-Z]{5}\d{4}[A-Z][1-9A-Z]Z[0-9A-Z]\b",
}
CARD = r"\b(?:\d[ \-]?){13,19}\b"
QI_DISTINCT_RATIO = 0.5  # distinct dimension values / distinct units above this → quasi-identifier
QI_SINGLE_UNIT_SHARE = 0.5  # share of a dimension's values held by exactly one unit above this → QI


def luhn_ok(digits: str) -> bool:
    ds = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(ds) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(ds)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def allowed_columns(cfg: ReportConfig) -> set[str]:
    """Columns a report may have: dimensions, metrics, ``level`` (with totals or remainders),
    ``is_remainder`` (with remainders) and ``<metric>_ci95`` (DP mode)."""
    cols = {d.name for d in cfg.dims} | {m.name for m in cfg.metrics}
    if cfg.totals or cfg.remainder:
        cols.add("level")
    if cfg.remainder:
        cols.add("is_remainder")
    if cfg.privacy is not None:
        cols |= {f"{m.name}_ci95" for m in cfg.metrics}
    return cols


def run_gate(
    cfg: ReportConfig,
    report: bytes,
    *,
    con: Any = None,
    source: Source | None = None,
    checks: tuple[str, ...] | None = None,
    unit_pairs: str | None = None,
    cell_units: str | None = None,
    dp_truth: tuple[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every gate check on ``report`` (Parquet bytes). Returns the record; raises on failure.

    ``unit_pairs`` optionally names a temp table the run built from the filtered source with one
    row per (cell, unit) (keys ``__d{i}``, unit ``__u``, as ``__per_unit``); the quasi-identifier
    statistics are then computed from it instead of from another pass over the source;
    ``cell_units`` names the run's cell table (``__cells`` with ``__umin``/``__umax``), from which
    they cost almost nothing (see :func:`_quasi_identifiers`). The recomputed ``min_units`` check
    always reads the source itself.

    With ``con``/``source`` (the run's connection and ``__src`` view) the source-dependent checks
    run too; without them (re-checking an old release with no source) they are recorded as skipped.
    ``dp_truth`` (DP runs only) is ``(table, release plan)``: the run's true cell table (``__dp_cells``)
    and the mechanisms that drew the noise, for the ``noise`` check (skipped without it: the true
    values are never stored).
    """
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, whose import alone costs
    # more than the rest of the gate on a small report
    table = pq.ParquetFile(io.BytesIO(report)).read()
    result: dict[str, Any] = {"passed": False, "checks": {}}
    failures: list[str] = []
    wanted = set(checks) if checks else None
    marks: list[tuple[str, float]] = []  # (check, start): seconds per check, so a slow gate points at its check

    def want(name: str) -> bool:
        ok = wanted is None or name in wanted
        if ok:
            marks.append((name, time.perf_counter()))
        return ok

    if want("columns"):
        extra = [c for c in table.column_names if c not in allowed_columns(cfg)]
        result["checks"]["columns"] = {"ok": not extra, "unexpected": len(extra)}
        if extra:
            failures.append(f"column(s) {', '.join(map(repr, extra))} are not declared dimensions or metrics")

    gcon = con
    own = False
    if gcon is None:
        import duckdb

        gcon, own = duckdb.connect(":memory:"), True
    try:
        gcon.register("__gate_report", table)
        text_cols = [c for c, t in zip(table.column_names, table.schema.types, strict=True) if _is_text(t)]
        if want("patterns"):
            hits = _pattern_hits(gcon, text_cols)
            result["checks"]["patterns"] = {"ok": not hits, "hits": hits}
            if hits:
                desc = ", ".join(f"{col}: {kind}" for col, kind in sorted(hits))
                failures.append(f"published values look like identifiers ({desc})")
        has_source = source is not None and con is not None
        if want("identifier_values"):
            if has_source:
                hits2 = _identifier_value_hits(cfg, gcon, source.schema, table)
                result["checks"]["identifier_values"] = {"ok": not hits2, "columns": sorted(hits2)}
                if hits2:
                    failures.append(
                        "published dimension values equal values of identifier column(s) in the source ("
                        + ", ".join(f"{c} = {i}" for c, i in sorted(hits2)) + ")"
                    )
            else:
                result["checks"]["identifier_values"] = {"skipped": "no source"}
        if want("quasi_identifier"):
            if has_source:
                qi = _quasi_identifiers(cfg, gcon, source.schema, unit_pairs=unit_pairs, cell_units=cell_units)
                result["checks"]["quasi_identifier"] = {"ok": not qi, "dimensions": qi}
                if qi:
                    failures.append(
                        "dimension(s) behave like quasi-identifiers (nearly one value per person): "
                        + ", ".join(qi)
                    )
            else:
                result["checks"]["quasi_identifier"] = {"skipped": "no source"}
        if want("min_units") and cfg.privacy is None:
            if has_source:
                found = _recomputed_min_units(cfg, gcon, source.schema, table)
                low, rem, bad = found["rows_below"], found["remainder_bad"], found["malformed"]
                result["checks"]["min_units"] = {"ok": not (low or rem or bad), **found}
                if low:
                    failures.append(
                        f"{low} published row(s) aggregate fewer than min_units={cfg.min_units} "
                        "distinct units (recomputed from the source)"
                    )
                if rem:
                    failures.append(
                        f"{rem} remainder row(s) cover fewer than min_units={cfg.min_units} distinct units or "
                        "fewer than two withheld rows, or are malformed (recomputed from the source)"
                    )
                if bad:
                    failures.append(f"{bad} row(s) have an unknown level or a value in a rolled-up dimension")
            else:
                small = _declared_min_units(cfg, gcon, table)
                result["checks"]["min_units"] = {"ok": small == 0, "rows_below": small, "recomputed": False}
                if small:
                    failures.append(f"{small} published row(s) show fewer than min_units={cfg.min_units} units")
        if want("noise") and cfg.privacy is not None:
            if dp_truth is not None and con is not None:
                found_noise, why = _noise_check(cfg, gcon, table, *dp_truth)
                result["checks"]["noise"] = found_noise
                failures += why
            else:
                result["checks"]["noise"] = {"skipped": "the true values exist only during a run"}
    finally:
        try:
            gcon.unregister("__gate_report")
        except Exception:  # pragma: no cover
            pass
        if own:
            gcon.close()
    ends = [t for _, t in marks[1:]] + [time.perf_counter()]
    result["seconds"] = {name: round(end - start, 4) for (name, start), end in zip(marks, ends, strict=True)}
    if failures:
        raise PrivacyRefusal("release gate failed: " + "; ".join(failures))
    result["passed"] = True
    return result


def _is_text(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)


def _pattern_hits(con: Any, cols: list[str]) -> list[tuple[str, str]]:
    hits: list[tuple[str, str]] = []
    for col in cols:
        c = ident(col)
        for kind, pattern in PATTERNS.items():
            n = con.execute(
                f"SELECT count(*) FROM __gate_report WHERE regexp_matches({c}, $1)", [pattern]
            ).fetchall()[0][0]
            if n:
                hits.append((col, kind))
        # card numbers: a regex finds candidates, Luhn confirms (candidates are few)
        cands = con.execute(
            f"SELECT DISTINCT regexp_extract({c}, $1) FROM __gate_report WHERE regexp_matches({c}, $1) LIMIT 1000",
            [CARD],
        ).fetchall()
        if any(luhn_ok(v[0]) for v in cands if v[0]):
            hits.append((col, "card_number"))
    return hits


# Identifier column types for which ``CAST(x AS VARCHAR)`` parses back to ``x`` with TRY_CAST: the
# join then compares typed values (DuckDB prunes Parquet row groups by min/max and skips the string
# conversion of every source row) and re-checks the string equality on the few candidate matches.
_TYPED_ID_JOIN = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
)


def _identifier_value_hits(cfg: ReportConfig, con: Any, schema: dict[str, str], table: pa.Table) -> list[tuple[str, str]]:
    """(dimension, identifier) pairs where a published value equals a source identifier value.

    The published values of every dimension go into one small table; each identifier column is then
    read once (one join per identifier, not per dimension × identifier). Semantics are unchanged:
    ``CAST(value AS VARCHAR) = CAST(identifier AS VARCHAR)`` over every source row.

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
    con.execute(f"CREATE OR REPLACE TEMP TABLE __gate_values AS SELECT DISTINCT d, v FROM ({union})")
    hits: set[tuple[str, str]] = set()
    try:
        for idc in ids:
            col = f"s.{ident(idc)}"
            typ = schema[idc].upper()
            if typ == "VARCHAR":
                values, on = "__gate_values", f"{col} = g.v"
            elif typ in _TYPED_ID_JOIN:
                values = f"(SELECT d, v, TRY_CAST(v AS {typ}) AS t FROM __gate_values WHERE TRY_CAST(v AS {typ}) IS NOT NULL)"
                on = f"{col} = g.t AND CAST({col} AS VARCHAR) = g.v"
            else:
                values, on = "__gate_values", f"CAST({col} AS VARCHAR) = g.v"
            for (d,) in con.execute(f"SELECT DISTINCT g.d FROM __src s JOIN {values} g ON {on}").fetchall():
                hits.add((dims[d], idc))
    finally:
        con.execute("DROP TABLE IF EXISTS __gate_values")
    return sorted(hits)


def _quasi_identifiers(
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


def _recomputed_min_units(cfg: ReportConfig, con: Any, schema: dict[str, str], table: pa.Table) -> dict[str, int]:
    """See :func:`_recount`; drops the gate's scratch table whatever happens."""
    try:
        return _recount(cfg, con, schema, table)
    finally:
        con.execute("DROP TABLE IF EXISTS __gate_full")


def _recount(cfg: ReportConfig, con: Any, schema: dict[str, str], table: pa.Table) -> dict[str, int]:
    """Rows of the written report that fail the threshold, recomputed from the source.

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
    out = {"rows_below": 0, "remainder_bad": 0, "malformed": 0}
    if table.num_rows == 0:
        return out
    exprs = [f"{dimension_expr(d, schema.get(d.column, 'VARCHAR'))} AS k{i}" for i, d in enumerate(cfg.dims)]
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
            joins.append(f"SELECT r.__rid, count(DISTINCT s.u) AS __n FROM (SELECT * FROM __rows WHERE __lvl = "
                         f"{lv.index}) r JOIN {s_from} s ON {on} GROUP BY r.__rid")
        ctes.append(f"__counts AS ({' UNION ALL '.join(joins)})")
        return (f"WITH {', '.join(ctes)} SELECT r.__rid, r.__lvl, {dims_out}, coalesce(c.__n, 0) AS __n "
                "FROM __rows r LEFT JOIN __counts c ON r.__rid = c.__rid")

    def published_full(params: Params) -> str:
        return f"(SELECT * FROM __gate_report r WHERE {at_level(params, all_levels[0])})"

    def no_cell_beneath(params: Params, lv: Level) -> str:
        """Margin rows of ``lv`` that no published full-table cell lies under."""
        return f"{at_level(params, lv)} AND NOT {beneath(lv, published_full(params))}"

    def unproven(params: Params, lv: Level) -> str:
        """Margin rows of ``lv`` with published full-table cells beneath, none recounted at >= min_units."""
        proof = f"(SELECT * FROM __gate_full WHERE __lvl = 0 AND __n >= {params.add(cfg.min_units)})"
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
        # margin rows whose published cells all recounted below min_units (the release fails on
        # those cells anyway) are recounted too, so that rows_below counts every row below k
        more = with_rows(unproven)
        if more:
            p_more = Params()
            counts = counted(p_more, [(lv, unproven(p_more, lv)) for lv in more])
            out["rows_below"] += con.execute(
                f"SELECT count(*) FROM ({counts}) WHERE __n < {p_more.add(cfg.min_units)}", p_more.values
            ).fetchall()[0][0]
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
        units, n_keys = con.execute(
            f"WITH rest AS (SELECT * FROM ({src4}) s WHERE NOT EXISTS (SELECT 1 FROM __gate_report p "
            f"WHERE p.level = {lv4} AND NOT {p_is_rem} AND {match})) "
            f"SELECT (SELECT count(DISTINCT u) FROM rest), (SELECT count(*) FROM (SELECT DISTINCT {kcols} FROM rest))",
            p4.values,
        ).fetchall()[0]
        if units < cfg.min_units or n_keys < 2:
            out["remainder_bad"] += n_rem
        else:
            out["remainder_bad"] += max(n_rem - 1, bad_shape)
    return out


def _declared_min_units(cfg: ReportConfig, con: Any, table: pa.Table) -> int:
    unit_metrics = [m.name for m in cfg.metrics if m.agg == "count_units" and m.name in table.column_names]
    if not unit_metrics:
        return 0
    col = ident(unit_metrics[0])
    return con.execute(f"SELECT count(*) FROM __gate_report WHERE {col} < $1", [cfg.min_units]).fetchall()[0][0]


def is_identifier_like(value: str) -> str | None:
    """The first identifier pattern ``value`` matches, or None (used by tests and ``check``)."""
    for kind, pattern in PATTERNS.items():
        if re.search(pattern, value):
            return kind
    for m in re.finditer(CARD, value):
        if luhn_ok(m.group(0)):
            return "card_number"
    return None


# ----- DP: published noise against the true values it was drawn from -----------------------------


def _noise_check(cfg: ReportConfig, con: Any, table: pa.Table, truth: str, rplan: Any) -> tuple[dict[str, Any], list[str]]:
    """Compare every published DP value with the true value of its own cell (joined by level and
    dimension values, never by position). Returns the record and failure messages.

    Per (level, metric), with Z the mechanism's noise and T its ``GATE_TAIL`` tail bound:
    - far: |published − true| > T (+ rounding), impossible but with probability GATE_TAIL per value.
      Clamping at zero and to the bounds only moves a value towards its true value, so it never
      trips this. Means: |mean − μ| <= (T_sum + |μ − mid|·T_count) / (count − T_count) when
      count − T_count >= 1 (else anything within the bounds).
    - spread: over every cell, the number of deviations beyond the median t of |Z| on the side
      clamping never touches (above for values clamped at zero from below) is binomial with
      P(Z > t) = P(|Z| > t)/2 (symmetric noise; rounding widens it to an interval); a Chernoff
      surprise above ln(1/GATE_TAIL) in either direction refuses (too few: noise missing or too
      small; too many: too large or values on the wrong cells). Not for means (their per-cell
      distribution is not one mechanism's).
    - consistent (``consistent: true``) counts and sums are projected: the projection is a
      contraction in the inverse-variance norm and the true values are consistent, so
      Σ (published − true)² / var <= Σ T² / var, checked per metric over every level.
    """
    import math

    from ..engines.duckdb.cells import dim_key
    from ..engines.duckdb.suppression import level_name_case
    from ..privacy.mechanisms import (
        GATE_TAIL,
        Mechanism,
        abs_exceed_probability,
        binomial_surprise,
        publication_threshold,
        tail_bound,
    )

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
    failures: list[str] = []
    record: dict[str, Any] = {"tail_probability": GATE_TAIL, "values_checked": 0, "beyond_tail": 0,
                              "spread_tests": 0, "spread_failures": 0}
    surprise_limit = math.log(1.0 / GATE_TAIL)
    try:
        n_rows, unmatched = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE __tlevel IS NULL) FROM __gate_truth").fetchall()[0]
        record["unmatched_rows"] = int(unmatched)
        if unmatched or n_rows != table.num_rows:
            failures.append(f"{unmatched} published row(s) match no computed cell (keys or level changed after noise)")
        far_metrics: list[str] = []
        spread_metrics: list[str] = []
        wnorm: dict[str, list[float]] = {}
        for lv, plan in rplan.levels:
            where = "r.level = $1" if has_level else "TRUE"
            base = [lv.name] if has_level else []
            for i, m in enumerate(cfg.metrics):
                pub = f"CAST(r.{ident(m.name)} AS DOUBLE)"
                parts = plan.metrics.get(m.name, {})
                if m.agg == "mean":
                    lo, hi = m.bounds or (0.0, 0.0)
                    ts, tc = tail_bound(parts["sum"]), tail_bound(parts["count"])
                    mu = f"(r.__t__s{i} / r.__t__c{i})"
                    # $1 = T_sum, $2 = T_count, $3 = mid, $4 = hi - lo
                    tol = (f"CASE WHEN r.__t__c{i} - $2 >= 1 THEN ($1 + abs({mu} - $3) * $2) / (r.__t__c{i} - $2) "
                           "ELSE $4 END + 1e-4")
                    level_cond = "r.level = $5" if has_level else "TRUE"
                    far = con.execute(
                        f"SELECT count(*), count(*) FILTER (WHERE abs({pub} - {mu}) > {tol}) FROM __gate_truth r "
                        f"WHERE {level_cond} AND r.__t__c{i} > 0",
                        [ts, tc, (lo + hi) / 2.0, hi - lo, *base],
                    ).fetchall()[0]
                    record["values_checked"] += int(far[0])
                    if far[1]:
                        record["beyond_tail"] += int(far[1])
                        far_metrics.append(m.name)
                    continue
                eligible = 0.0  # spread test over cells with a true value above this
                if m.agg == "count_units" and plan.selection is not None:
                    mech: Mechanism = plan.selection
                    true = "r.__t__units"
                    # published only when the noisy count passed the threshold: that noise is conditioned
                    # on selection, except where the true count exceeds the threshold by the tail bound
                    eligible = publication_threshold(mech, cfg.min_units) + tail_bound(mech)
                else:
                    mech = parts["sum" if m.agg == "sum" else "count"]
                    true = {"count": "r.__t__rows", "count_units": "r.__t__units"}.get(m.agg, f"r.__t__s{i}")
                projected = cfg.consistent and m.agg in ("count", "sum")
                rounding = 0.005 if (m.agg == "sum" and not cfg.consistent) else 0.0
                big_t = tail_bound(mech)
                if projected:
                    from ..privacy.consistency import _variance

                    var = _variance(plan, m.name)
                    n, sq = con.execute(
                        f"SELECT count(*), coalesce(sum(({pub} - {true}) ^ 2), 0) FROM __gate_truth r WHERE {where}", base
                    ).fetchall()[0]
                    acc = wnorm.setdefault(m.name, [0.0, 0.0, 0])
                    acc[0] += float(sq) / var
                    acc[1] += int(n) * (big_t * big_t) / var
                    acc[2] += int(n)
                    record["values_checked"] += int(n)
                    continue
                # the spread test reads one side of the deviation: the side clamping never touches
                # (clamping at 0 from below only lowers deviations that were already below zero)
                lo_b, hi_b = m.bounds or (0.0, 0.0)
                side = -1.0 if (m.agg == "sum" and lo_b < 0 and hi_b <= 0 and not cfg.consistent) else 1.0
                t_cut = _median_abs(mech)
                p_hi = abs_exceed_probability(mech, max(t_cut - rounding, 0.0)) / 2.0  # symmetric noise
                p_lo = abs_exceed_probability(mech, t_cut + rounding) / 2.0
                k = 1 + len(base)
                if eligible:  # selection changes the odds by at most GATE_TAIL on these cells
                    p_lo, p_hi = max(p_lo - GATE_TAIL, 0.0), min(p_hi + GATE_TAIL, 1.0)
                n, n_far, n_elig, n_over = con.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE abs({pub} - {true}) > ${k} + ${k + 1}), "
                    f"count(*) FILTER (WHERE {true} >= ${k + 4}), "
                    f"count(*) FILTER (WHERE {true} >= ${k + 4} AND ${k + 3} * ({pub} - {true}) > ${k + 2}) "
                    f"FROM __gate_truth r WHERE {where}",
                    [*base, big_t, rounding + 1e-9, t_cut, side, eligible if eligible else -math.inf],
                ).fetchall()[0]
                record["values_checked"] += int(n)
                if n_far:
                    record["beyond_tail"] += int(n_far)
                    far_metrics.append(m.name)
                n = n_elig
                if n:
                    record["spread_tests"] += 1
                    if binomial_surprise(int(n_over), int(n), p_lo, p_hi) > surprise_limit:
                        record["spread_failures"] += 1
                        spread_metrics.append(
                            f"{m.name}{'' if lv.index == 0 else ' (' + lv.name + ')'}: {int(n_over)} of {int(n)} "
                            f"deviations beyond {t_cut:.4g}, expected {p_lo * n:.0f}-{p_hi * n:.0f}")
        for name, (stat, bound, _) in wnorm.items():
            if stat > bound * (1 + 1e-9):
                record["beyond_tail"] += 1
                far_metrics.append(name + " (consistent)")
        if far_metrics:
            failures.append(
                f"{record['beyond_tail']} published value(s) lie beyond the {GATE_TAIL:g} tail of the noise around "
                f"the true values they were drawn from ({', '.join(dict.fromkeys(far_metrics))}): misaligned, "
                "unnoised or mis-scaled values")
        if spread_metrics:
            failures.append("the published noise does not have its mechanism's spread (" + "; ".join(spread_metrics) + ")")
    finally:
        con.execute("DROP TABLE IF EXISTS __gate_truth")
    record["ok"] = not failures
    return record, failures


def _median_abs(mech: Any) -> float:
    """A t near the median of |Z| for the mechanism's noise (the spread test's cut)."""
    from ..privacy.mechanisms import tail_bound

    return tail_bound(mech, 0.5)
