"""Contribution bounding for DP mode, as SQL (pure functions; runs inside DuckDB).

Guarantees of the SQL built here, for every privacy unit:
- **Linf**: in each cell it keeps at most ``max_rows_per_group`` rows. When a unit has more rows
  in a cell, the kept rows are those with the smallest keyed hash ``hash(row, seed)``: a uniformly
  random subset, chosen by a secret seed (rows identical in every projected column are
  interchangeable, so ties do not matter). Sums and means use clamped values of the kept rows.
- **L0**: it keeps at most ``max_groups_per_unit`` cells, the ones with the smallest keyed hash
  ``hash(unit, cell, seed)``: a uniformly random subset of the unit's cells (see :func:`l0_cut_sql`).
- Null units never reach the cells. Rows outside ``public_partitions`` (when given) are dropped
  before L0 bounding, so a unit's budget of cells is spent on publishable cells only.
The result ``__dp_cells`` has one row per cell: ``__units`` (bounded distinct units), ``__rows``
and per sum/mean metric ``__s{i}`` (sum of clamped values) and ``__c{i}`` (their count).
"""

from __future__ import annotations

from ...config import ReportConfig
from .cells import (
    REGROUP_COLS,
    bad_value_counts,
    base_select,
    dim_key,
    metric_value,
    value_owners,
    with_shared_values,
)
from .sql import Params, Query


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
    seed_ph = params.add(int(seed))
    base = base_select(cfg, schema, params)
    row_hash = f"hash(__u, {', '.join(keys + value_cols)}, {seed_ph})"
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
    join = ""
    if public:
        on = " AND ".join(f"p.{k} IS NOT DISTINCT FROM b.{k}" for k in keys)
        join = f" SEMI JOIN __public p ON {on}"
        inner = f"SELECT b.* FROM ({inner}) b{join}"
    select = f"SELECT {', '.join(keys)}, __u, {', '.join(aggs)} FROM ({inner}) GROUP BY {', '.join(keys + ['__u'])}"
    # metrics sharing a value column are aliased where they are read (quality, cells), not stored
    sql = f"CREATE OR REPLACE TEMP TABLE __dp_pairs AS {select}"
    return Query(sql, tuple(params.values))


def dp_quality_sql(cfg: ReportConfig, schema: dict[str, str]) -> Query:
    """Data-quality counts from ``__dp_pairs`` (null-unit rows are counted by the caller)."""
    cols = ["coalesce(sum(__n_raw) FILTER (WHERE __u IS NULL), 0) AS null_unit_rows", "coalesce(sum(__n_raw), 0) AS rows_in"]
    cols += bad_value_counts(cfg, schema, total=True)
    return Query(f"SELECT {', '.join(cols)} FROM ({with_shared_values(cfg, 'SELECT * FROM __dp_pairs')})")


def l0_cut_sql(cfg: ReportConfig, seed: int) -> list[Query]:
    """``__l0_cut``: for each unit with more than ``g`` cells, the ``g``-th smallest cell hash ``__m``.

    A unit keeps a cell iff it has no row in ``__l0_cut`` (at most ``g`` cells) or
    ``hash(unit, cell, seed) <= __m``: exactly its ``g`` cells with the smallest keyed hash (a
    uniformly random subset). Distinct cells of one unit have distinct 64-bit hashes except with
    negligible probability. Only units over the bound (about one in seven at 10M events) get a
    list of their cells' hashes; a top-n or window over every (cell, unit) pair spills tens of GB
    at 100M events in DuckDB 2.0 (bench/RESULTS.md), and ``g`` rounds of ``min`` cost twice this.
    """
    assert cfg.privacy is not None
    g = int(cfg.privacy.max_groups_per_unit)
    keys = [dim_key(i) for i in range(len(cfg.dims))]
    params = Params()
    h = f"hash(p.__u, {', '.join('p.' + k for k in keys)}, {params.add(int(seed))})"
    return [
        Query("CREATE OR REPLACE TEMP TABLE __l0_over AS SELECT __u FROM __dp_pairs WHERE __u IS NOT NULL "
              f"GROUP BY __u HAVING count(*) > {g}"),
        # g = 1 needs no list: the smallest hash is a plain min (the cheapest state to spill)
        Query(f"CREATE OR REPLACE TEMP TABLE __l0_cut AS SELECT p.__u, "
              f"{f'min({h})' if g == 1 else f'list_sort(list({h}))[{g}]'} AS __m "
              "FROM __dp_pairs p SEMI JOIN __l0_over o ON p.__u = o.__u GROUP BY p.__u", tuple(params.values)),
    ]


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
    params = Params()
    keys = [dim_key(i) for i in range(len(cfg.dims))]
    seed_ph = params.add(int(seed))

    def sums(flt: str = "") -> str:  # metrics sharing a value column are aliased after the aggregation
        return "".join(f", sum(__s{i}){flt} AS __s{i}, sum(__c{i}){flt} AS __c{i}" for i in value_owners(cfg))

    tail = sums()
    pairs = "__dp_pairs p LEFT JOIN __l0_cut c ON p.__u = c.__u WHERE p.__u IS NOT NULL"
    keep = f"(c.__m IS NULL OR hash(p.__u, {', '.join('p.' + k for k in keys)}, {seed_ph}) <= c.__m)"
    kept = f"SELECT p.* FROM {pairs} AND {keep}"
    steps = l0_cut_sql(cfg, seed)
    if not cfg.totals and cfg.privacy.public_partitions is None:
        # one pass over every pair: the bounded aggregates over the kept pairs, and the cell's
        # distinct units with their smallest and largest id before bounding (``__dp_pre``, the
        # release gate's quasi-identifier statistics; see engines.duckdb.gate.quasi_identifiers)
        flag = f"SELECT p.*, {keep} AS __keep FROM {pairs}"
        kept_sums = sums(" FILTER (WHERE __keep)")
        select = (
            f"SELECT 0 AS __level, {', '.join(keys)}, count(*) FILTER (WHERE __keep) AS __units, "
            f"sum(__n) FILTER (WHERE __keep) AS __rows{kept_sums}, "
            f"count(*) AS __units_all, min(__u) AS __umin, max(__u) AS __umax FROM ({flag}) GROUP BY {', '.join(keys)}"
        )
        sql = f"CREATE OR REPLACE TEMP TABLE __dp_cells_all AS {with_shared_values(cfg, select, REGROUP_COLS)}"
        return [
            *steps,
            Query(sql, tuple(params.values)),
            # a cell every one of whose units dropped it (L0) is empty: never a candidate
            Query("CREATE OR REPLACE TEMP VIEW __dp_cells AS SELECT * EXCLUDE (__units_all, __umin, __umax) "
                  "FROM __dp_cells_all WHERE __units > 0"),
            Query(f"CREATE OR REPLACE TEMP VIEW __dp_pre AS SELECT __level, {', '.join(keys)}, __units_all AS __units, "
                  "__umin, __umax FROM __dp_cells_all"),
        ]
    first = Query(f"CREATE OR REPLACE TEMP TABLE __dp_bounded AS {kept}", tuple(params.values))
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
