"""Property-based privacy invariants (hypothesis), each checked against plain DuckDB.

Random event tables (users, cells, rows per user, skew, null units and null dimensions) and
random valid configs. Example counts come from the hypothesis profile in conftest
(``HYPOTHESIS_PROFILE=thorough`` for a larger run by hand).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import PrivacyRefusal, load_config, run_report

from .conftest import write_config

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
CITIES = ["A", "B", "C", "D"]
CATS = ["x", "y", "z"]


@st.composite
def event_tables(draw: st.DrawFn) -> list[tuple]:
    """Rows (user_id, email, city, category, amount): skewed users, some nulls."""
    n_users = draw(st.integers(1, 40))
    rows = []
    for u in range(n_users):
        n_rows = draw(st.integers(1, 6)) if u % 7 else draw(st.integers(1, 40))  # a few heavy users
        home = draw(st.sampled_from(CITIES))
        for _ in range(n_rows):
            uid = None if draw(st.integers(0, 30)) == 0 else 1000 + u
            city = draw(st.sampled_from(CITIES[:2] + [home, home, None]))
            cat = draw(st.sampled_from(CATS))
            amount = draw(st.one_of(st.none(), st.floats(-50, 500, allow_nan=False)))
            rows.append((uid, f"user{u}@mail.com", city, cat, amount))
    return rows


def write_events(folder: Path, rows: list[tuple]) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "data" / "e.parquet"
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, email VARCHAR, city VARCHAR, category VARCHAR, amount DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    return path


def config(folder: Path, dims: list[str], k: int, **extra) -> Path:
    return write_config(
        folder, source={"path": "data/e.parquet"}, identifiers=["user_id", "email"], filter=None,
        dimensions=dims, min_units=k, difference_check=False,
        metrics=[{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"},
                 {"name": "amount", "agg": "sum", "column": "amount", "bounds": [0, 100]}],
        **extra,
    )


def qi_dimensions(src: Path, dims: list[str], k: int) -> list[str]:
    """The quasi-identifier rule of docs/PRIVACY.md ("Release gate"), evaluated here on the source:
    with at least 2k people, a dimension is one when its values (NULL counts as a value) number
    more than half the people, or when there are at least 10 values and more than half of them
    belong to a single person."""
    con = duckdb.connect()
    units = con.execute(f"SELECT count(DISTINCT user_id) FROM read_parquet('{src}')").fetchall()[0][0]
    if units < 2 * k:
        return []
    out = []
    for d in dims:
        n, single = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE people = 1) FROM (SELECT {d}, count(DISTINCT user_id) AS people "
            f"FROM read_parquet('{src}') WHERE user_id IS NOT NULL GROUP BY {d})").fetchall()[0]
        if n / units > 0.5 or (n >= 10 and single / n > 0.5):
            out.append(d)
    return out


@settings(max_examples=200 if THOROUGH else 20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=event_tables(), k=st.integers(2, 6), dims=st.sampled_from([["city"], ["category"], ["city", "category"]]))
def test_threshold_invariants(rows: list[tuple], k: int, dims: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = write_events(folder, rows)
        cfg = load_config(config(folder, dims, k))
        if all(r[0] is None for r in rows):
            return  # refused by design (tested elsewhere)
        try:
            rel = run_report(cfg, "p")
        except PrivacyRefusal as exc:
            # the only refusal these tables may meet: the gate's quasi-identifier rule, and only
            # where an independent evaluation of that rule says so; nothing is published
            assert "quasi-identifiers" in str(exc), exc
            assert qi_dimensions(src, dims, k), (exc, dims, k)
            assert not (folder / "reports" / "t_report" / "p").exists()
            return
        assert not qi_dimensions(src, dims, k)
        table = pq.read_table(rel.report_path)
        # no identifier column, no identifier value anywhere in the output
        assert set(table.column_names) == set(dims) | {"rows", "units", "amount"}
        ids = {str(r[0]) for r in rows if r[0] is not None} | {r[1] for r in rows}
        for col in dims:
            assert not {str(v) for v in table.column(col).to_pylist()} & ids
        # independent truth: exactly the cells with >= k distinct non-null units whose amounts (if any)
        # come from >= k distinct units (the k rule holds for every number), same counts
        con = duckdb.connect()
        con.register("pub", table)
        group = ", ".join(dims)
        on = " AND ".join(f"pub.{d} IS NOT DISTINCT FROM t.{d}" for d in dims)
        truth = (f"SELECT {group}, count(DISTINCT user_id) AS n, count(*) AS r FROM read_parquet('{src}') "
                 f"WHERE user_id IS NOT NULL GROUP BY {group} HAVING count(DISTINCT user_id) >= {k} "
                 f"AND count(DISTINCT user_id) FILTER (WHERE amount IS NOT NULL) NOT BETWEEN 1 AND {k - 1}")
        n_truth, mism = con.execute(
            f"SELECT count(t.n), count(*) FILTER (WHERE pub.units IS DISTINCT FROM t.n OR pub.rows IS DISTINCT FROM t.r) "
            f"FROM pub FULL OUTER JOIN ({truth}) t ON {on}"
        ).fetchall()[0]
        assert table.num_rows == n_truth
        assert mism == 0
        assert all(u >= k for u in table.column("units").to_pylist())
        # reruns are identical, even into a fresh output folder
        again = run_report(cfg, "p", output_dir=folder / "other")
        assert again.report_path.read_bytes() == rel.report_path.read_bytes()


@settings(max_examples=100 if THOROUGH else 8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=event_tables(), dims=st.sampled_from([["city"], ["city", "category"]]))
def test_dp_never_publishes_cells_under_two_units(rows: list[tuple], dims: list[str]) -> None:
    """Small cells never appear; and the test is not vacuous: every table also holds one cell of 400
    people (city A, category x), far above the selection threshold, which must be published."""
    big = [(100_000 + i, f"big{i}@mail.com", "A", "x", 10.0) for i in range(400)]
    rows = rows + big
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = write_events(folder, rows)
        cfg = load_config(config(
            folder, dims, 2,
            privacy={"epsilon": 2.0, "delta": 1e-6, "max_groups_per_unit": 2, "max_rows_per_group": 2},
            budget={"ledger": "state/l.duckdb", "epsilon_limit": 1000, "delta_limit": 1e-3},
        ))
        con = duckdb.connect()
        group = ", ".join(dims)
        small = {tuple(r[:-1]) for r in con.execute(
            f"SELECT {group}, count(DISTINCT user_id) FROM read_parquet('{src}') WHERE user_id IS NOT NULL "
            f"GROUP BY {group} HAVING count(DISTINCT user_id) < 2").fetchall()}
        for i in range(2):
            rel = run_report(cfg, f"s{i}")  # 400 people in one cell: no gate rule refuses these tables
            table = pq.read_table(rel.report_path)
            published = set(zip(*[table.column(d).to_pylist() for d in dims], strict=True))
            assert not published & small
            assert ("A",) + (("x",) if len(dims) == 2 else ()) in published  # P(not) < 1e-30 at this ε
            assert set(table.column_names) <= set(dims) | {"rows", "units", "amount", "rows_ci95", "units_ci95", "amount_ci95"}


@settings(max_examples=200 if THOROUGH else 40, deadline=None)
@given(
    weights=st.lists(st.one_of(st.none(), st.floats(0.01, 100)), min_size=4, max_size=4),
    share=st.floats(0.05, 0.95),
    epsilon=st.floats(0.05, 8),
    noise=st.sampled_from(["laplace", "gaussian"]),
    public=st.booleans(),
    totals=st.booleans(),
)
def test_budget_weights_never_spend_more_than_configured(
    weights: list, share: float, epsilon: float, noise: str, public: bool, totals: bool
) -> None:
    """Whatever the weights and selection share: the release spends at most the configured ε and
    δ (OpenDP's own accounting of every mechanism), and metrics' budgets follow their weights."""
    from pipeline.config import config_from_dict
    from pipeline.privacy.budget import budget_split

    names = ["rows", "units", "amount", "avg"]
    metrics = [{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"},
               {"name": "amount", "agg": "sum", "column": "amount", "bounds": [-10, 100]},
               {"name": "avg", "agg": "mean", "column": "amount", "bounds": [-10, 100]}]
    for m, w in zip(metrics, weights, strict=True):
        if w is not None and (public or m["agg"] != "count_units"):
            m["budget_weight"] = w
    privacy = {"epsilon": epsilon, "delta": 1e-6, "max_groups_per_unit": 3, "max_rows_per_group": 4,
               "noise": noise, "selection_share": share}
    if public:
        privacy["public_partitions"] = "cells.csv"
    cfg = config_from_dict({
        "report": "w", "source": {"path": "e.parquet"}, "privacy_unit": "user_id", "dimensions": ["city"],
        "metrics": metrics, **({} if public else {"min_units": 5}), "privacy": privacy, **({"totals": [[]]} if totals else {}),
        "budget": {"ledger": "l.duckdb", "epsilon_limit": 100, "delta_limit": 1e-3},
    })
    plan = budget_split(cfg)
    assert plan.epsilon <= epsilon * (1 + 1e-9) and plan.delta <= 1e-6 * (1 + 1e-9)
    if noise != "laplace":
        return
    # Laplace: each metric's ε (its mechanisms' sum) is its weight's share of what selection leaves
    for _, lplan in plan.levels:
        spent = {n: sum(x.epsilon for x in lplan.metrics[n].values()) for n in names if n in lplan.metrics}
        w = {m["name"]: m.get("budget_weight", 1.0) for m in metrics if m["name"] in spent}
        total = sum(spent.values())
        for n in spent:
            assert spent[n] == pytest.approx(total * w[n] / sum(w.values()), rel=1e-6)
