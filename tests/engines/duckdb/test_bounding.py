"""DP bounding's keyed constants and its integer form of values (``engines/duckdb/bounding.py``).

The keyed order of rows and cells is a published contract (docs/PRIVACY.md, "Contribution
bounding"): both engines, and a rerun years later, must compute the same constants from the same
secret seed. The reference below is written from that definition, not from the code."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest

from pipeline import load_config, run_report
from pipeline.engines.duckdb.bounding import PRIME, seed_residues
from tests.conftest import parquet_from_sql, write_config


def _reference(seed: int, label: str, n: int) -> list[int]:
    """The definition: blocks b = 0, 1, … of SHA-256("anonymize/{label}/{seed}/{b}"), each read as
    eight 4-byte big-endian integers x, each giving 1 + x mod (P − 1); the first n of them."""
    out: list[int] = []
    for block in range(n // 8 + 1):
        digest = hashlib.sha256(f"anonymize/{label}/{seed}/{block}".encode()).digest()
        out += [1 + int.from_bytes(digest[4 * j:4 * j + 4], byteorder="big") % (PRIME - 1) for j in range(8)]
    return out[:n]


@pytest.mark.parametrize("n", [1, 2, 8, 9, 16, 17, 40])
def test_seed_residues_are_the_documented_keyed_constants(n: int) -> None:
    """Every constant, in every SHA-256 block (the builders ask for more than eight when a report
    has more than seven value columns), is the documented one, non-zero modulo P (a zero multiplier
    would make the order ignore a value), and a longer list starts with the shorter one."""
    for seed in (0, 7, 2**62 + 3):
        got = seed_residues(seed, "rows", n)
        assert got == _reference(seed, "rows", n)
        assert all(1 <= c <= PRIME - 1 for c in got)
        assert seed_residues(seed, "rows", 40)[:n] == got
    assert len(set(seed_residues(5, "cells", 40))) == 40  # 40 constants from 5 blocks, none repeated
    assert seed_residues(5, "cells", 8) != seed_residues(5, "rows", 8) != seed_residues(6, "rows", 8)


@pytest.mark.parametrize("mode", ["threshold", "dp"])
def test_values_at_the_wide_limit_are_clamped_and_bounded_exactly(tmp_path: Path, mode: str) -> None:
    """A bound of exactly 1e12 (DECIMAL(18,6) holds less) takes the wide type everywhere: values at
    and beyond it are clamped to it without an overflow, in the threshold sum and in DP bounding."""
    src = parquet_from_sql(tmp_path / "data" / "wide.parquet", "SELECT i AS user_id, 'c' || (i % 2) AS city, "
                           "CASE WHEN i % 3 = 0 THEN 5e12 ELSE 1e12 END AS amount FROM range(400) r(i)")
    expected = dict(duckdb.connect().execute(f"SELECT city, count(*) * 1e12 FROM '{src}' GROUP BY city").fetchall())
    extra = {} if mode == "threshold" else {
        "privacy": {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1},
        "budget": {"ledger": str(tmp_path / "state" / "l.duckdb"), "epsilon_limit": 5, "delta_limit": 1e-3}}
    cfg = load_config(write_config(
        tmp_path, source={"path": "data/wide.parquet"}, dimensions=["city"], filter=None, identifiers=["user_id"],
        metrics=[{"name": "total", "agg": "sum", "column": "amount", "bounds": [0, 1e12]}], min_units=10, **extra))
    rel = run_report(cfg, "r1", summary_html=False)
    got = dict(zip(rel.table["city"], rel.table["total"], strict=True))
    assert set(got) == set(expected)
    for city, total in got.items():
        if mode == "threshold":
            assert total == pytest.approx(expected[city], rel=1e-12)  # every value clamped to exactly 1e12
        else:  # one row per person, each 1e12 after clamping: the noisy sum is around 200 x 1e12
            assert total == pytest.approx(expected[city], rel=0.5)


def test_linf_orders_rows_of_wide_values_without_overflow(tmp_path: Path) -> None:
    """Values beyond the narrow limit (bounds up to 1e15: micro-units would pass 2^63) are ordered
    by their whole units modulo 4e18, so a person's rows are still cut to ``max_rows_per_group``
    and the release is made; each kept value is clamped to the bound."""
    parquet_from_sql(tmp_path / "data" / "wide.parquet", "SELECT i // 3 AS user_id, 'c' || (i // 3 % 2) AS city, "
                     "CASE WHEN i % 3 = 0 THEN 5e15 ELSE 3e14 + i END AS amount FROM range(1200) r(i)")
    cfg = load_config(write_config(
        tmp_path, source={"path": "data/wide.parquet"}, dimensions=["city"], filter=None, identifiers=["user_id"],
        metrics=[{"name": "rows", "agg": "count"}, {"name": "total", "agg": "sum", "column": "amount", "bounds": [0, 1e15]}],
        min_units=10, privacy={"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1},
        budget={"ledger": str(tmp_path / "state" / "l.duckdb"), "epsilon_limit": 5, "delta_limit": 1e-3}))
    rel = run_report(cfg, "r1", summary_html=False)
    assert len(rel.table) == 2
    for rows, total in zip(rel.table["rows"], rel.table["total"], strict=True):
        assert rows == pytest.approx(200, abs=60)  # one row per person (of three), 200 people per city
        assert 0 < total < 200 * 1e15 * 1.5  # each kept value at most the bound
