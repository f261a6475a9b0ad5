"""Contribution bounding for DP mode, as SQL (pure functions; runs inside DuckDB, and on Spark
through the translation of :mod:`pipeline.engines.spark.dialect`).

Guarantees of the SQL built here, for every privacy unit:
- **Linf**: in each cell it keeps at most ``max_rows_per_group`` rows. When a unit has more rows
  in a cell, the kept rows are those with the smallest keyed row key (:func:`row_key`): a keyed
  pseudo-random order of the rows' values (rows identical in every value column are
  interchangeable, so ties do not matter). Sums and means use clamped values of the kept rows.
- **L0**: it keeps at most ``max_groups_per_unit`` cells, the first ones in the order of a keyed
  hash of (unit, cell) (see :func:`l0_keep_sql`): exactly ``max_groups_per_unit`` when it has
  more, whatever the hashes, never more.
- Each choice depends only on the unit's own rows, the cell's key and the secret seed: never on
  another unit's data (so the bounded data of one unit changes only when that unit's rows do,
  the stability the noise's sensitivity assumes).
- The keyed functions are computed identically by DuckDB and Spark (SHA-256 of a value's text
  once per over-bound unit and per cell, then 31-bit modular arithmetic that stays inside 64-bit
  integers): a DuckDB and a Spark release with the same seed bound the same data the same way.
- Null units never reach the cells. Rows outside ``public_partitions`` (when given) are dropped
  before L0 bounding, so a unit's budget of cells is spent on publishable cells only.
The result ``__dp_cells`` has one row per cell: ``__units`` (bounded distinct units), ``__rows``
and per sum/mean metric ``__s{i}`` (sum of clamped values) and ``__c{i}`` (their count).
"""

from __future__ import annotations

import hashlib

from ...config import ReportConfig
from .cells import (
    REGROUP_COLS,
    bad_value_counts,
    base_select,
    dim_key,
    metric_value,
    value_owners,
    wide_values,
    with_shared_values,
)
from .sql import Params, Query

PRIME = 2_147_483_647  # 2^31 − 1: a product of two residues stays below 2^62 (a BIGINT on both engines)
PRIME2 = 2_147_483_629  # the largest prime below it: (x mod P, x mod P2) tells apart any x, y below P·P2
SHIFT = 2_147_483_648  # 2^31: a key is (high residue) · 2^31 + (low residue), below 2^62


def seed_residues(seed: int, label: str, n: int) -> list[int]:
    """``n`` keyed constants in [1, P − 1], derived from the secret ``seed`` (SHA-256, in Python)."""
    out: list[int] = []
    block = 0
    while len(out) < n:
        digest = hashlib.sha256(f"anonymize/{label}/{int(seed)}/{block}".encode()).digest()
        out += [1 + int.from_bytes(digest[j:j + 4], "big") % (PRIME - 1) for j in range(0, 32, 4)]
        block += 1
    return out[:n]


def _micro(v: str, wide: bool) -> str:
    """A clamped value as a BIGINT: micro-units for the narrow DECIMAL(18,6) (below 9.2e18 by
    :data:`~pipeline.engines.duckdb.cells.NARROW_VALUE_LIMIT`), whole units modulo 4e18 otherwise."""
    return f"CAST(CAST({v} AS DOUBLE) % 4.0e18 AS BIGINT)" if wide else f"CAST({v} * 1000000 AS BIGINT)"


def row_key(value_cols: list[tuple[str, bool]], seed: int, params: Params) -> str:
    """The Linf order of a unit's rows within a cell: the keyed affine map
    ``(Σ a_i·(x_i mod P) + b) mod P`` of the rows' values ``x_i`` (:func:`_micro`; a null value
    counts as ``P − 1``), one BIGINT per row, computed identically by DuckDB and Spark. Rows with
    equal values get equal keys (interchangeable). Two distinct values of one column tie only if
    they differ by a multiple of P micro-units (≈ 2147.48 units: never for values in whole
    cents); a tie changes which equal-keyed row is kept, never how many."""
    k = seed_residues(seed, "rows", len(value_cols) + 1)
    terms = [f"(coalesce(((({_micro(v, wide)}) % {PRIME}) + {PRIME}) % {PRIME}, {PRIME - 1}) "
             f"* CAST({params.add(k[j])} AS BIGINT)) % {PRIME}" for j, (v, wide) in enumerate(value_cols)]
    return f"(({' + '.join(terms)} + CAST({params.add(k[-1])} AS BIGINT)) % {PRIME})"


def _hex_int(h: str, start: int) -> str:
    """Eight hex digits of ``h`` from ``start`` (1-based) as a BIGINT (Spark: ``conv``, via the dialect)."""
    return f"CAST(('0x' || substr({h}, {start}, 8)) AS BIGINT)"


def cell_text(keys: list[str], prefix: str = "") -> str:
    """A cell's key as text, unambiguously: each part ``length:text`` (``-`` for NULL), ``|``-joined."""
    parts = [f"CASE WHEN {prefix}{k} IS NULL THEN '-' ELSE CAST(length(CAST({prefix}{k} AS VARCHAR)) AS VARCHAR) "
             f"|| ':' || CAST({prefix}{k} AS VARCHAR) END" for k in keys]
    return " || '|' || ".join(parts)


def dp_pairs_sql(cfg: ReportConfig, schema: dict[str, str], seed: int, *, public: bool) -> Query:
    """``__dp_pairs``: one row per (cell, unit) with Linf-bounded rows and sums.

    Value columns are per owning metric (:func:`pipeline.engines.duckdb.cells.value_owners`); a metric sharing another's
    column has no columns of its own here.
    """
    assert cfg.privacy is not None
    params = Params()
    linf = int(cfg.privacy.max_rows_per_group)
    nd = len(cfg.dims)
    keys = [dim_key(i) for i in range(nd)]
    value_cols = [metric_value(i) for i in value_owners(cfg)]
    base = base_select(cfg, schema, params)
    wide = {metric_value(i): wide_values(cfg.metrics[i]) for i in value_owners(cfg)}
    row_hash = row_key([(v, wide[v]) for v in value_cols], seed, params) if value_cols else "0"
    aggs = [f"least(count(*), {linf}) AS __n"]
    for i in value_owners(cfg):  # metrics sharing a value column are aliased below
        v = metric_value(i)
        aggs += [
            f"CASE WHEN count({v}) <= {linf} THEN sum({v}) ELSE list_sum(min_by({v}, __r, {linf})) END AS __s{i}",
            f"least(count({v}), {linf}) AS __c{i}",
        ]
    aggs += bad_value_counts(cfg, schema)
    aggs.append("count(*) AS __n_raw")
    inner = f"SELECT *, {row_hash} AS __r FROM ({base})"
    if public:
        on = " AND ".join(f"p.{k} IS NOT DISTINCT FROM b.{k}" for k in keys)
        inner = f"SELECT b.* FROM ({inner}) b SEMI JOIN __public p ON {on}"
    select = f"SELECT {', '.join(keys)}, __u, {', '.join(aggs)} FROM ({inner}) GROUP BY {', '.join(keys + ['__u'])}"
    # metrics sharing a value column are aliased where they are read (quality, cells), not stored
    sql = f"CREATE OR REPLACE TEMP TABLE __dp_pairs AS {select}"
    return Query(sql, tuple(params.values))


def dp_quality_sql(cfg: ReportConfig, schema: dict[str, str]) -> Query:
    """Data-quality counts from ``__dp_pairs`` (null-unit rows are counted by the caller)."""
    cols = ["coalesce(sum(__n_raw) FILTER (WHERE __u IS NULL), 0) AS null_unit_rows", "coalesce(sum(__n_raw), 0) AS rows_in"]
    cols += bad_value_counts(cfg, schema, total=True)
    return Query(f"SELECT {', '.join(cols)} FROM ({with_shared_values(cfg, 'SELECT * FROM __dp_pairs')})")


def l0_keep_sql(cfg: ReportConfig, seed: int) -> tuple[list[Query], str]:
    """The L0 cut: statements building ``__l0_units`` (units with more than ``g`` cells, with their
    keyed constants) and ``__l0_cells`` (the cells they touch, with theirs), and the SELECT of every
    non-null unit's pair with its ``__keep`` flag (units within the bound keep all their cells).

    An over-bound unit keeps its first ``g`` cells in the order of the keyed hash
    ``m = ((a₁·c₁ + b₁) mod P)·2^31 + ((a₂·c₂ + b₂) mod P2)``: ``(a, b)`` from
    SHA-256 of the seed and the unit's text, ``(c₁, c₂)`` from SHA-256 of the seed and the cell's
    text (:func:`cell_text`). For one unit, ``c ↦ m`` is a keyed affine map (a pairwise-independent
    random order of its cells); ``row_number`` keeps exactly ``g`` cells even if two hashes tie
    (only two cells whose 62-bit hashes collide, probability ~2^-62 per pair, are ordered by the
    engine rather than by the key). Hashes are computed once per over-bound unit (about one in seven at 10M events) and once
    per cell they touch, never per row.
    """
    assert cfg.privacy is not None
    g = int(cfg.privacy.max_groups_per_unit)
    keys = [dim_key(i) for i in range(len(cfg.dims))]
    params = Params()
    text = params.add(f"{int(seed):x}:")
    on = " AND ".join(f"p.{k} IS NOT DISTINCT FROM c.{k}" for k in keys)
    pair_cols = [*keys, "__u", "__n"] + [f"__{c}{i}" for i in value_owners(cfg) for c in ("s", "c")]
    cols = ", ".join(f"p.{c}" for c in pair_cols)
    statements = [
        # the units with more than g cells, with their keyed constants (one statement: one table)
        Query(f"CREATE OR REPLACE TEMP TABLE __l0_units AS SELECT __u, 1 + {_hex_int('__h', 1)} % {PRIME - 1} AS __a1, "
              f"{_hex_int('__h', 9)} % {PRIME} AS __b1, 1 + {_hex_int('__h', 17)} % {PRIME2 - 1} AS __a2, "
              f"{_hex_int('__h', 25)} % {PRIME2} AS __b2 "
              f"FROM (SELECT __u, sha256({text} || 'u' || CAST(__u AS VARCHAR)) AS __h FROM (SELECT __u FROM __dp_pairs "
              f"WHERE __u IS NOT NULL GROUP BY __u HAVING count(*) > {g}))",
              tuple(params.values)),
    ]
    params = Params()
    text = params.add(f"{int(seed):x}:")
    statements += [
        Query(f"CREATE OR REPLACE TEMP TABLE __l0_cells AS SELECT {', '.join(keys)}, {_hex_int('__h', 1)} % {PRIME} AS __c1, "
              f"{_hex_int('__h', 9)} % {PRIME2} AS __c2 FROM (SELECT {', '.join(keys)}, "
              f"sha256({text} || 'c' || {cell_text(keys)}) AS __h FROM (SELECT DISTINCT {', '.join('p.' + k for k in keys)} "
              "FROM __dp_pairs p SEMI JOIN __l0_units o ON p.__u = o.__u))", tuple(params.values)),
    ]
    ranked = (f"SELECT {', '.join(pair_cols)}, row_number() OVER (PARTITION BY __u ORDER BY __m) <= {g} AS __keep "
              f"FROM (SELECT {cols}, ((u.__a1 * c.__c1 + u.__b1) % {PRIME}) * {SHIFT} + "
              f"((u.__a2 * c.__c2 + u.__b2) % {PRIME2}) AS __m "
              f"FROM __dp_pairs p JOIN __l0_units u ON p.__u = u.__u JOIN __l0_cells c ON {on})")
    flagged = (f"SELECT {cols}, TRUE AS __keep FROM __dp_pairs p ANTI JOIN __l0_units o ON p.__u = o.__u "
               f"WHERE p.__u IS NOT NULL UNION ALL {ranked}")
    return statements, flagged


def dp_cells_sql(cfg: ReportConfig, seed: int) -> list[Query]:
    """``__dp_cells``: L0-bounded aggregation of ``__dp_pairs`` (null units excluded).

    One row per cell and ``__level`` (0 = full table; 1.. = ``totals`` margins computed from the
    same bounded pairs, rolled-up keys NULL). ``__units`` counts distinct bounded units; a cell
    none of whose units kept it is not a row. Without totals and public partitions, ``__dp_pre``
    also lists every non-empty cell *before* bounding: distinct units ``__units`` and the smallest
    and largest unit ``__umin``/``__umax`` (for the release gate; never noised or published).
    Returns the statements to run in order.
    """
    from ...privacy.levels import levels

    assert cfg.privacy is not None
    keys = [dim_key(i) for i in range(len(cfg.dims))]

    def sums(flt: str = "") -> str:  # metrics sharing a value column are aliased after the aggregation
        return "".join(f", sum(__s{i}){flt} AS __s{i}, sum(__c{i}){flt} AS __c{i}" for i in value_owners(cfg))

    tail = sums()
    steps, flag = l0_keep_sql(cfg, seed)
    if not cfg.totals and cfg.privacy.public_partitions is None:
        # one pass over every pair: the bounded aggregates over the kept pairs, and the cell's
        # distinct units with their smallest and largest id before bounding (``__dp_pre``, the
        # release gate's quasi-identifier statistics; see engines.duckdb.gate.quasi_identifiers)
        kept_sums = sums(" FILTER (WHERE __keep)")
        select = (
            f"SELECT 0 AS __level, {', '.join(keys)}, count(*) FILTER (WHERE __keep) AS __units, "
            f"sum(__n) FILTER (WHERE __keep) AS __rows{kept_sums}, "
            f"count(*) AS __units_all, min(__u) AS __umin, max(__u) AS __umax FROM ({flag}) GROUP BY {', '.join(keys)}"
        )
        sql = f"CREATE OR REPLACE TEMP TABLE __dp_cells_all AS {with_shared_values(cfg, select, REGROUP_COLS)}"
        return [
            *steps,
            Query(sql),
            # a cell every one of whose units dropped it (L0) is empty: never a candidate
            Query("CREATE OR REPLACE TEMP VIEW __dp_cells AS SELECT * EXCLUDE (__units_all, __umin, __umax) "
                  "FROM __dp_cells_all WHERE __units > 0"),
            Query(f"CREATE OR REPLACE TEMP VIEW __dp_pre AS SELECT __level, {', '.join(keys)}, __units_all AS __units, "
                  "__umin, __umax FROM __dp_cells_all"),
        ]
    first = Query(f"CREATE OR REPLACE TEMP TABLE __dp_bounded AS SELECT * EXCLUDE (__keep) FROM ({flag}) WHERE __keep")
    selects = []
    for lv in levels(cfg):
        keep = lv.kept(cfg)
        cols = [f"{lv.index} AS __level"] + [keys[i] if i in keep else f"NULL AS {keys[i]}" for i in range(len(keys))]
        units = "count(*)" if lv.index == 0 else "count(DISTINCT __u)"
        group = f" GROUP BY {', '.join(keys[i] for i in keep)}" if keep else ""
        select = f"SELECT {', '.join(cols)}, {units} AS __units, sum(__n) AS __rows{tail} FROM __dp_bounded{group}"
        selects.append(with_shared_values(cfg, select, REGROUP_COLS))
    second = Query("CREATE OR REPLACE TEMP TABLE __dp_cells AS " + " UNION ALL BY NAME ".join(selects))
    return [*steps, first, second]
