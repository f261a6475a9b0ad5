"""The table's linear structure read out of DuckDB for secondary suppression, and the result written back.

Only aggregate cell keys' positions and unit counts come out (never row-level data); the linear
algebra and the choice of complements are engine-free (:mod:`pipeline.privacy.secondary`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import ReportConfig
from ...errors import PrivacyRefusal
from ...privacy.levels import levels
from ...privacy.protection import CellValues, ValueSlot, protect_intervals
from ...privacy.secondary import TableSystem, protect
from .cells import dim_key, value_owners

if TYPE_CHECKING:
    import duckdb


def load_system(cfg: ReportConfig, con: duckdb.DuckDBPyConnection) -> TableSystem:
    """Read the structure of ``__cells`` (keys stay in DuckDB; only positions and counts come out).

    Variables are numbered by (level, dimension values NULLS FIRST), so the numbering, and every
    choice made from it, does not depend on physical row order.
    """
    nd = len(cfg.dims)
    keys = [dim_key(i) for i in range(nd)]
    order = ", ".join(["__level"] + [f"{k} NULLS FIRST" for k in keys])
    con.execute(
        "CREATE OR REPLACE TEMP TABLE __vars AS SELECT "
        f"CAST(row_number() OVER (ORDER BY {order}) - 1 AS BIGINT) AS __pos, "
        f"__level, {', '.join(keys)}, __units, __reason IS NOT NULL AS __sup FROM __cells"
    )
    # each value is placed at its own __pos: the engine's output order is never relied on
    got = con.execute("SELECT __pos, __level, __units, __sup FROM __vars").fetchnumpy()
    pos = np.asarray(got["__pos"], dtype=np.int64)
    if not np.array_equal(np.sort(pos), np.arange(len(pos))):  # pragma: no cover - row_number() is 0..n-1
        raise PrivacyRefusal("secondary suppression: cell positions are not a permutation; nothing published")

    def placed(col: str, dtype: Any) -> np.ndarray:
        out = np.empty(len(pos), dtype=dtype)
        out[pos] = np.asarray(got[col], dtype=dtype)
        return out

    system = TableSystem(
        rowids=np.arange(len(pos), dtype=np.int64),  # variable v is the cell at position v (level, then values)
        level=placed("__level", np.int64),
        units=placed("__units", np.int64),
        suppressed=placed("__sup", bool),
    )
    for lv in levels(cfg)[1:]:
        keep = lv.kept(cfg)
        on = " AND ".join(f"c.{keys[i]} IS NOT DISTINCT FROM m.{keys[i]}" for i in keep) or "TRUE"
        for head, members in _grouped_pairs(
            con,
            f"SELECT m.__pos AS a, c.__pos AS b FROM __vars m JOIN __vars c ON {on} "
            f"WHERE m.__level = {int(lv.index)} AND c.__level = 0",
        ):
            system.add_equation(head, members)
    eq_of_head = {h: e for e, h in enumerate(system.head)}
    margin_levels = levels(cfg)[1:]
    for coarse in margin_levels:
        for fine in margin_levels:
            if not set(coarse.dims) < set(fine.dims):
                continue
            on = " AND ".join(
                f"c.{keys[i]} IS NOT DISTINCT FROM f.{keys[i]}" for i, d in enumerate(cfg.dims) if d.name in coarse.dims
            ) or "TRUE"
            for parent, kids in _grouped_pairs(
                con,
                f"SELECT c.__pos AS a, f.__pos AS b FROM __vars c JOIN __vars f ON {on} "
                f"WHERE c.__level = {int(coarse.index)} AND f.__level = {int(fine.index)}",
            ):
                system.children.setdefault(eq_of_head[parent], []).append(
                    np.array([eq_of_head[int(x)] for x in kids], dtype=np.int64)
                )
    return system


def _grouped_pairs(con: Any, sql: str) -> Iterator[tuple[int, Any]]:
    """Rows (a, b) of ``sql``, sorted by (a, b) here (not by the engine), grouped as (a, array of its b's)."""
    pairs = con.execute(sql).fetchnumpy()
    heads = np.asarray(pairs["a"], dtype=np.int64)
    members = np.asarray(pairs["b"], dtype=np.int64)
    order = np.lexsort((members, heads))
    heads, members = heads[order], members[order]
    if len(heads) == 0:
        return
    cut = np.flatnonzero(np.diff(heads)) + 1
    for h, m in zip(np.split(heads, cut), np.split(members, cut), strict=True):
        yield int(h[0]), m


def load_values(cfg: ReportConfig, con: duckdb.DuckDBPyConnection, system: TableSystem) -> CellValues:
    """The additive values of every variable of ``system`` (built by :func:`load_system`, whose
    ``__vars`` table it reads): rows when a ``count`` is published, and per sum/mean value column
    its clamped sum and value count with the clamp bounds. Aggregates only; each value is placed at
    its variable's own position."""
    has_rows = any(m.agg == "count" for m in cfg.metrics)
    owners = [j for j in value_owners(cfg) if cfg.metrics[j].bounds is not None]
    cols = ["v.__pos", "CAST(c.__rows AS DOUBLE) AS r"]
    cols += [f"CAST(coalesce(c.__s{j}, 0) AS DOUBLE) AS s{j}, CAST(c.__c{j} AS DOUBLE) AS c{j}" for j in owners]
    got = con.execute(f"SELECT {', '.join(cols)} FROM __vars v JOIN __cells c ON {_same_cell(cfg)}").fetchnumpy()
    pos = np.asarray(got["__pos"], dtype=np.int64)
    if len(pos) != system.n or not np.array_equal(np.sort(pos), np.arange(system.n)):  # pragma: no cover
        raise PrivacyRefusal("secondary suppression: cell values do not match the cells; nothing published")

    def placed(col: str) -> np.ndarray:
        out = np.empty(system.n, dtype=np.float64)
        out[pos] = np.asarray(got[col], dtype=np.float64)
        return out

    slots = []
    for j in owners:
        lo, hi = (float(b) for b in cfg.metrics[j].bounds)  # type: ignore[union-attr]
        slots.append(ValueSlot(s=placed(f"s{j}"), c=placed(f"c{j}"), lo=lo, hi=hi))
    return CellValues(rows=placed("r") if has_rows else None, slots=slots)


def apply_secondary_suppression(cfg: ReportConfig, con: duckdb.DuckDBPyConnection) -> int:
    """Mark complementary suppressions in ``__cells`` (``__reason = 'secondary'``). Returns how many.

    Afterwards no withheld row of ``__cells`` is determined by the published rows, and every
    withheld value keeps its protection interval against the reader of
    :mod:`pipeline.privacy.protection` (see module doc).
    """
    system = load_system(cfg, con)
    interval = cfg.protection_interval
    if interval is None:
        newly = protect(system)  # the algebraic check only (protection: false, recorded in the manifest)
    else:
        newly = protect_intervals(system, load_values(cfg, con, system), interval)
    if newly:
        # cells are named by (level, dimension values), not by a physical row id (portable SQL)
        con.execute("CREATE OR REPLACE TEMP TABLE __secondary (pos BIGINT)")
        con.executemany("INSERT INTO __secondary VALUES (?)", [[int(system.rowids[v])] for v in sorted(newly)])
        con.execute(f"UPDATE __cells SET __reason = 'secondary' WHERE {_identity(cfg)} IN "
                    f"(SELECT {_identity(cfg, 'v.')} FROM __vars v WHERE v.__pos IN (SELECT pos FROM __secondary))")
    return len(newly)


def _identity(cfg: ReportConfig, prefix: str = "") -> str:
    """A cell's name as text: its level and dimension values (nulls as a separator character; a
    value holding the separators can only make more cells match, never fewer)."""
    parts = [f"CAST({prefix}__level AS VARCHAR)"] + [
        f"coalesce(CAST({prefix}{dim_key(i)} AS VARCHAR), '\x1d')" for i in range(len(cfg.dims))]
    return " || '\x1f' || ".join(parts)


def _same_cell(cfg: ReportConfig) -> str:
    return " AND ".join(["v.__level = c.__level"] + [
        f"v.{dim_key(i)} IS NOT DISTINCT FROM c.{dim_key(i)}" for i in range(len(cfg.dims))])
