"""The difference check's SQL: keyed unit hashes of candidate cells, compared with the release history.

The store itself (file, lock, secret) is :mod:`pipeline.state.history`; the rule (populations
differing by 1 to k − 1 people) is :func:`pipeline.privacy.rules.difference_window`. Only cell keys
and counts are compared in DuckDB; no unit identifier is written to the history.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ...config import ReportConfig
from ...errors import LedgerError
from ...privacy.levels import levels
from ...privacy.rules import difference_window
from ...state.history import History
from .cells import dim_key
from .sql import literal

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    release_id VARCHAR PRIMARY KEY, source_id VARCHAR, report VARCHAR, run_id VARCHAR, created_utc VARCHAR
);
CREATE TABLE IF NOT EXISTS cell_units (release_id VARCHAR, cell_key VARCHAR, uh VARCHAR);
"""


def cell_key_expr(cfg: ReportConfig) -> str:
    """SQL for a cell's comparable key: level name plus ``name=value`` of its kept dimensions."""
    parts = []
    for lv in levels(cfg):
        keep = lv.kept(cfg)
        items = " || '\x1f' || ".join(
            f"{literal(cfg.dims[i].name + '=')} || coalesce(CAST({dim_key(i)} AS VARCHAR), '\x1d')" for i in keep
        ) or "''"
        parts.append(f"WHEN {lv.index} THEN {literal(lv.name + chr(0x1E))} || {items}")
    return f"CASE __level {' '.join(parts)} END"


def candidate_units_sql(cfg: ReportConfig, salt_hex: str) -> str:
    """``__cand_units``: (cell_key, unit hash) for every cell still publishable in ``__cells``."""
    selects = []
    for lv in levels(cfg):
        keep = lv.kept(cfg)
        on = " AND ".join(f"p.{dim_key(i)} IS NOT DISTINCT FROM c.{dim_key(i)}" for i in keep) or "TRUE"
        selects.append(
            f"SELECT DISTINCT c.__cell_key AS cell_key, left(sha256({literal(salt_hex)} || CAST(p.__u AS VARCHAR)), 16) AS uh "
            f"FROM __per_unit p JOIN __cells c ON {on} "
            f"WHERE p.__u IS NOT NULL AND c.__level = {lv.index} AND c.__reason IS NULL"
        )
    return "CREATE OR REPLACE TEMP TABLE __cand_units AS " + " UNION ALL ".join(selects)


def apply_difference_check(cfg: ReportConfig, con: Any, hist: History, release_id: str, source_id: str) -> int:
    """Suppress publishable cells too close to a published cell of an earlier release. Returns how many."""
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
    try:
        lo, hi = difference_window(cfg)  # the rule (privacy.rules): 1 .. k - 1
        close = con.execute(
            """
            WITH prev AS (
                SELECT r.release_id FROM __hist.releases r WHERE r.source_id = $1 AND r.release_id <> $2
            ),
            a AS (SELECT cell_key, count(*) AS na FROM __cand_units GROUP BY cell_key),
            b AS (
                SELECT h.release_id, h.cell_key, count(*) AS nb FROM __hist.cell_units h
                WHERE h.release_id IN (SELECT release_id FROM prev) AND h.cell_key IN (SELECT cell_key FROM a)
                GROUP BY ALL
            ),
            i AS (
                SELECT h.release_id, h.cell_key, count(*) AS ni FROM __hist.cell_units h
                JOIN __cand_units n ON n.cell_key = h.cell_key AND n.uh = h.uh
                WHERE h.release_id IN (SELECT release_id FROM prev)
                GROUP BY ALL
            )
            SELECT DISTINCT a.cell_key FROM a JOIN b USING (cell_key) LEFT JOIN i USING (release_id, cell_key)
            WHERE a.na + b.nb - 2 * coalesce(i.ni, 0) BETWEEN $3 AND $4
            """,
            [source_id, release_id, lo, hi],
        ).fetchall()
    finally:
        con.execute("DETACH __hist")
    if close:
        con.execute("CREATE OR REPLACE TEMP TABLE __diff_keys (cell_key VARCHAR)")
        con.executemany("INSERT INTO __diff_keys VALUES (?)", [[c[0]] for c in close])
        con.execute(
            "UPDATE __cells SET __reason = 'difference' WHERE __reason IS NULL AND __cell_key IN (SELECT cell_key FROM __diff_keys)"
        )
    return len(close)


def record_release(cfg: ReportConfig, con: Any, hist: History, release_id: str, source_id: str, run_id: str) -> None:
    """Store the unit hashes of the cells that end up published (replacing an earlier record of this id)."""
    import datetime as dt

    import duckdb

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        con.execute(f"ATTACH {literal(str(hist.path))} AS __hist")
        con.execute(SCHEMA.replace("CREATE TABLE IF NOT EXISTS ", "CREATE TABLE IF NOT EXISTS __hist."))
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM __hist.cell_units WHERE release_id = $1", [release_id])
        con.execute("DELETE FROM __hist.releases WHERE release_id = $1", [release_id])
        con.execute("INSERT INTO __hist.releases VALUES ($1, $2, $3, $4, $5)", [release_id, source_id, cfg.report, run_id, now])
        con.execute(
            "INSERT INTO __hist.cell_units SELECT $1, u.cell_key, u.uh FROM __cand_units u "
            "WHERE u.cell_key IN (SELECT __cell_key FROM __cells WHERE __reason IS NULL)",
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
