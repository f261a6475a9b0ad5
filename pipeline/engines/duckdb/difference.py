"""The difference check's SQL: keyed unit hashes and contribution digests of candidate cells,
compared with everything already published into the same release history.

The store itself (file, lock, secret) is :mod:`pipeline.state.history`; the rule (populations or
contributions differing by 1 to k − 1 people) is :func:`pipeline.privacy.rules.difference_window`.

Guarantees (docs/PRIVACY.md, "Across releases"):
- A cell is identified by what it aggregates, never by output names: the source columns and time
  grains of its kept dimensions, in canonical (sorted) order, with their values. A renamed
  dimension (``as:``), dimensions in another order, a margin of one report and a plain cell of
  another, and the same data under another file name, glob or report name all get the same key.
  Filters and metrics are not part of the key: cells over the same dimension values are compared
  whatever rows they select, so "searches" against "searches and orders" is compared too.
- Per (cell, person) the history keeps, besides the keyed unit hash, one digest per published
  quantity the person contributes to (row count, clamped sum and value count of each value column
  with its bounds). Two cells are *close* when the people present in only one of them plus the
  people present in both whose digest of a quantity both releases publish differs number 1 to
  k − 1: then the new cell is withheld (reason ``difference``).
- Every earlier release in the history is compared, whatever its source id: a day file and the
  next day's file are the same population under two names. Only cell keys, hashes and counts are
  compared in DuckDB; no identifier is written to the history.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ...config import ReportConfig
from ...errors import LedgerError
from ...privacy.levels import levels
from ...privacy.rules import difference_window
from ...state.history import History
from .cells import dim_key, value_slots
from .sql import literal

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    release_id VARCHAR PRIMARY KEY, source_id VARCHAR, report VARCHAR, run_id VARCHAR, created_utc VARCHAR
);
CREATE TABLE IF NOT EXISTS cell_units (release_id VARCHAR, cell_key VARCHAR, uh VARCHAR);
ALTER TABLE releases ADD COLUMN IF NOT EXISTS components VARCHAR[];
ALTER TABLE cell_units ADD COLUMN IF NOT EXISTS ch UBIGINT[];
"""


def _bound(b: float) -> str:
    return repr(float(b))


def components(cfg: ReportConfig) -> list[tuple[str, str]]:
    """The quantities a release publishes per cell, as (canonical name, per-unit SQL over
    ``__per_unit``) in a fixed order: ``rows`` for counts and means, and per value column (with its
    multiplier and bounds) its clamped ``sum`` and, for means, its value count ``vals``. Metrics that
    publish the same quantity share one entry; ``count_units`` publishes presence only."""
    slots = value_slots(cfg)
    out: dict[str, str] = {}
    for i, m in enumerate(cfg.metrics):
        if m.agg == "count":
            out.setdefault("rows", "sum(p.__n)")
        if m.agg in ("sum", "mean"):
            j = slots[i]
            bounds = "none" if m.bounds is None else f"{_bound(m.bounds[0])}..{_bound(m.bounds[1])}"
            what = f"{m.column}*{m.multiply_by or 1}[{bounds}]"
            out.setdefault(f"sum:{what}", f"round(sum(p.__s{j}), 6)")
            if m.agg == "mean":
                out.setdefault(f"vals:{what}", f"sum(p.__c{j})")
    return sorted(out.items())


def cell_key_expr(cfg: ReportConfig) -> str:
    """SQL for a cell's comparable key: ``column/grain=value`` of its kept dimensions, sorted by
    column and grain (output names, dimension order and level names do not enter)."""
    parts = []
    for lv in levels(cfg):
        keep = sorted(lv.kept(cfg), key=lambda i: (cfg.dims[i].column, cfg.dims[i].grain or ""))
        items = []
        for i in keep:
            d = cfg.dims[i]
            value = f"CAST({dim_key(i)} AS DATE)" if d.grain else dim_key(i)
            label = literal(f"{d.column}/{d.grain or ''}=")
            items.append(f"{label} || coalesce(CAST({value} AS VARCHAR), '\x1d')")
        parts.append(f"WHEN {lv.index} THEN " + (" || '\x1f' || ".join(items) or "''"))
    return f"CASE __level {' '.join(parts)} END"


def candidate_units_sql(cfg: ReportConfig, salt_hex: str) -> str:
    """``__cand_units``: (cell_key, unit hash, digests) for every cell still publishable in ``__cells``.

    The digests are one keyed 64-bit hash per entry of :func:`components` of the person's
    contribution to the cell (summed over the person's rows of the full table under the cell)."""
    comps = components(cfg)
    values = "".join(f", {expr} AS __x{k}" for k, (_, expr) in enumerate(comps))
    digests = ", ".join(f"hash(uh, {literal(name)}, __x{k})" for k, (name, _) in enumerate(comps))
    selects = []
    for lv in levels(cfg):
        keep = lv.kept(cfg)
        on = " AND ".join(f"p.{dim_key(i)} IS NOT DISTINCT FROM c.{dim_key(i)}" for i in keep) or "TRUE"
        selects.append(
            f"SELECT c.__cell_key AS cell_key, p.__u{values} "
            f"FROM __per_unit p JOIN __cells c ON {on} "
            f"WHERE p.__u IS NOT NULL AND c.__level = {lv.index} AND c.__reason IS NULL "
            f"GROUP BY c.__cell_key, p.__u"
        )
    # a cell key can occur at two levels of one report only for the same cells (same kept columns)
    hashed = (f"SELECT *, left(sha256({literal(salt_hex)} || CAST(__u AS VARCHAR)), 16) AS uh "
              f"FROM ({' UNION ALL '.join(selects)})")
    return (f"CREATE OR REPLACE TEMP TABLE __cand_units AS SELECT DISTINCT cell_key, uh, "
            f"[{digests}]::UBIGINT[] AS ch FROM ({hashed})")


def _close_sql(pairs: list[tuple[int, int]]) -> str:
    """Cells of ``__cand_units`` close to a cell with the same key in one of the releases ``$1``,
    whose components at 1-based list positions ``(new, old)`` in ``pairs`` are the quantities both
    publish."""
    differs = " OR ".join(f"h.ch[{j}] <> n.ch[{i}]" for i, j in pairs) or "FALSE"
    return f"""
        WITH a AS (SELECT cell_key, count(*) AS na FROM __cand_units GROUP BY cell_key),
        b AS (
            SELECT h.release_id, h.cell_key, count(*) AS nb FROM __hist.cell_units h
            WHERE list_contains($1, h.release_id) AND h.cell_key IN (SELECT cell_key FROM a)
            GROUP BY ALL
        ),
        i AS (
            SELECT h.release_id, h.cell_key, count(*) AS ni,
                   count(*) FILTER (WHERE coalesce({differs}, FALSE)) AS nd
            FROM __hist.cell_units h JOIN __cand_units n ON n.cell_key = h.cell_key AND n.uh = h.uh
            WHERE list_contains($1, h.release_id)
            GROUP BY ALL
        )
        SELECT DISTINCT a.cell_key FROM a JOIN b USING (cell_key) LEFT JOIN i USING (release_id, cell_key)
        WHERE a.na + b.nb - 2 * coalesce(i.ni, 0) + coalesce(i.nd, 0) BETWEEN $2 AND $3
    """


def apply_difference_check(cfg: ReportConfig, con: Any, hist: History, release_id: str, source_id: str) -> int:
    """Withhold publishable cells close to a published cell of any earlier release in the history
    (module docstring). Returns how many were withheld."""
    import duckdb

    con.execute("ALTER TABLE __cells ADD COLUMN IF NOT EXISTS __cell_key VARCHAR")
    con.execute(f"UPDATE __cells SET __cell_key = {cell_key_expr(cfg)}")
    con.execute(candidate_units_sql(cfg, hist.secret_hex()))
    if not hist.path.exists():
        return 0
    try:
        con.execute(f"ATTACH {literal(str(hist.path))} AS __hist (READ_ONLY)")
    except duckdb.Error as exc:
        raise LedgerError(f"cannot open the release history {hist.path}: {str(exc).splitlines()[0]}") from None
    mine = [name for name, _ in components(cfg)]
    close: set[str] = set()
    try:
        cols = {r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = '__hist' AND table_name = 'releases'"
        ).fetchall()}
        comp_col = "components" if "components" in cols else "NULL::VARCHAR[]"
        prev = con.execute(
            f"SELECT release_id, {comp_col} FROM __hist.releases WHERE release_id <> $1", [release_id]
        ).fetchall()
        if prev and "ch" not in {r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = '__hist' AND table_name = 'cell_units'"
        ).fetchall()}:
            prev = [(rid, None) for rid, _ in prev]  # a history written before digests: presence only
        groups: dict[tuple[str, ...], list[str]] = {}
        for rid, comps in prev:
            groups.setdefault(tuple(comps or ()), []).append(rid)
        lo, hi = difference_window(cfg)  # the rule (privacy.rules): 1 .. k - 1
        for theirs, ids in sorted(groups.items()):
            pairs = [(mine.index(c) + 1, theirs.index(c) + 1) for c in theirs if c in mine]
            close.update(r[0] for r in con.execute(_close_sql(pairs), [ids, lo, hi]).fetchall())
    finally:
        con.execute("DETACH __hist")
    if close:
        con.execute("CREATE OR REPLACE TEMP TABLE __diff_keys (cell_key VARCHAR)")
        con.executemany("INSERT INTO __diff_keys VALUES (?)", [[c] for c in sorted(close)])
        con.execute(
            "UPDATE __cells SET __reason = 'difference' WHERE __reason IS NULL AND __cell_key IN (SELECT cell_key FROM __diff_keys)"
        )
    return len(close)


def record_release(cfg: ReportConfig, con: Any, hist: History, release_id: str, source_id: str, run_id: str) -> None:
    """Store the unit hashes and digests of the cells that end up published (replacing an earlier
    record of this id), with the release's component names."""
    import datetime as dt

    import duckdb

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    comps = [name for name, _ in components(cfg)]
    try:
        con.execute(f"ATTACH {literal(str(hist.path))} AS __hist")
        con.execute(SCHEMA.replace("TABLE IF NOT EXISTS ", "TABLE IF NOT EXISTS __hist.").replace(
            "ALTER TABLE ", "ALTER TABLE __hist."))
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM __hist.cell_units WHERE release_id = $1", [release_id])
        con.execute("DELETE FROM __hist.releases WHERE release_id = $1", [release_id])
        con.execute(
            "INSERT INTO __hist.releases (release_id, source_id, report, run_id, created_utc, components) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [release_id, source_id, cfg.report, run_id, now, comps],
        )
        con.execute(
            "INSERT INTO __hist.cell_units (release_id, cell_key, uh, ch) SELECT $1, u.cell_key, u.uh, u.ch "
            "FROM __cand_units u WHERE u.cell_key IN (SELECT __cell_key FROM __cells WHERE __reason IS NULL)",
            [release_id],
        )
        con.execute("COMMIT")
    except duckdb.Error as exc:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise LedgerError(f"cannot record the release in {hist.path}: {str(exc).splitlines()[0]}") from None
    finally:
        with contextlib.suppress(Exception):
            con.execute("DETACH __hist")
