"""`anonymize explain`, Release.explain() and summary.html, checked against the published files.

The truth here is what was published: row counts and top cells are recomputed from
report.parquet with DuckDB, noise scales from the config with level_budget; the renderers must agree
with those and must never show a value that is not in the report.
"""

from __future__ import annotations

import html
import io
import os
import re
from pathlib import Path

import duckdb
import pytest

from pipeline import load_config, open_release, run_report
from pipeline.privacy.budget import budget_split
from pipeline.releases.explain import explain_text, render_rich, sections

from ..conftest import run_cli, write_config

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DESCRIPTION = "<b>Cities</b> & categories"


@pytest.fixture(scope="module")
def threshold_release(tmp_path_factory: pytest.TempPathFactory, events_file: Path) -> Path:
    folder = tmp_path_factory.mktemp("explain_thr")
    (folder / "data").mkdir()
    os.symlink(events_file, folder / "data" / "events.parquet")
    cfg = write_config(folder, description=DESCRIPTION, totals=[[], ["city"]],
                       dominance={"n": 1, "max_share": 0.6}, min_units=5)
    return run_report(load_config(cfg), "t1").path


@pytest.fixture(scope="module")
def dp_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("explain_dp")
    (folder / "data").mkdir()
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT 'city' || (i % 4) AS city, i AS user_id, CAST(i % 50 AS DOUBLE) AS amount "
                "FROM range(4000) r(i)")
    con.execute("INSERT INTO t SELECT 'tiny' || (i % 3), 100000 + i, 1.0 FROM range(6) r(i)")  # 2 people each
    con.execute(f"COPY t TO '{folder / 'data' / 'd.parquet'}' (FORMAT parquet)")
    cfg = write_config(
        folder, source={"path": "data/d.parquet"}, identifiers=["user_id"], filter=None, dimensions=["city"],
        min_units=5,
        metrics=[{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"},
                 {"name": "amount", "agg": "sum", "column": "amount", "bounds": [0, 50]}],
        privacy={"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1},
        budget={"ledger": "state/ledger.duckdb", "epsilon_limit": 100.0, "delta_limit": 1e-3},
    )
    return run_report(load_config(cfg), "d1").path, cfg


def published(path: Path) -> list[tuple]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{path / 'report.parquet'}')").fetchall()


def dimension_values(path: Path, cols: list[str]) -> set[str]:
    rows = duckdb.sql(f"SELECT {', '.join(cols)} FROM read_parquet('{path / 'report.parquet'}')").fetchall()
    return {str(v) for r in rows for v in r if v is not None}


def test_explain_piped_is_plain_and_counts_match_report(threshold_release: Path) -> None:
    res = run_cli("explain", threshold_release)
    assert res.exit_code == 0, res.stderr
    text = res.output
    assert not ANSI.search(text)  # piped: no colour codes
    for title in ("release", "suppressed cells by reason", "release gate: passed", "timings"):
        assert f"\n{title}\n" in f"\n{text}"
    assert "threshold mode: every published row has ≥ 5 distinct units" in text
    m = open_release(threshold_release).manifest
    exact = open_release(threshold_release).internal  # explain shows the operator's counts, marked
    n_pub = len(published(threshold_release))  # independent: rows actually in the report
    computed = exact["cells"]["cells_computed"]
    assert f"published {n_pub:,} ({100 * n_pub / computed:.1f}%)" in text
    assert re.search(rf"total suppressed\s+{computed - n_pub:,}\s", text)
    reasons = {k: v for k, v in exact["cells"].items() if k.startswith("suppressed_")}
    assert "the operator's exact counts" in text and "not in the release" in text
    assert sum(reasons.values()) == computed - n_pub and {"suppressed_k", "suppressed_dominance"} <= set(reasons)
    assert re.search(rf"fewer than 5 distinct units\s+{reasons['suppressed_k']:,}\s", text)
    assert re.search(rf"dominance rule \(few contributors hold most of a sum\)\s+{reasons['suppressed_dominance']:,}\s", text)
    for check in m["gate"]["checks"]:
        assert re.search(rf"\n  {check}\s+pass\s", text)
    # only counts: no published dimension value (city, category) is ever shown
    assert not [v for v in dimension_values(threshold_release, ["city", "category"]) if v in text]


def test_explain_dp_mechanisms_and_budget(dp_release: tuple[Path, Path]) -> None:
    path, cfg_path = dp_release
    text = run_cli("explain", path).output
    plan = budget_split(load_config(cfg_path)).levels[0][1]
    assert plan.selection is not None
    body = text.split("noise mechanisms (OpenDP)")[1].split("\n\n")[0]
    sel_row = re.search(r"partition selection\s+Laplace \(int\)\s+(\S+)\s+(\S+)\s+(\S+)\s+ε (\S+)", body)
    assert sel_row and float(sel_row.group(2).replace(",", "")) == pytest.approx(plan.selection.scale, rel=1e-3)
    assert f"noisy unit count is ≥ {max(plan.selection.threshold, 5)}" in body
    for name in ("rows", "amount"):
        mech = next(iter(plan.metrics[name].values()))
        row = re.search(rf"\n  {name}\s+Laplace(?: \(int\))?\s+(\S+)\s+(\S+)\s+(\S+)", body)
        assert row, name
        assert float(row.group(1).replace(",", "")) == pytest.approx(mech.sensitivity, rel=1e-3)
        assert float(row.group(2).replace(",", "")) == pytest.approx(mech.scale, rel=1e-3)
        assert float(row.group(3).replace(",", "")) == pytest.approx(mech.ci95_half_width, rel=1e-3)
    assert "source total ε 1 of 100 (left 99)" in text
    assert "ledger entry  #1" in text
    # the operator's exact counts (not DP) are marked as such; the release itself states none: on a
    # machine without the operator's copy, explain shows none of them
    assert "the operator's exact counts" in text and "4,006" in text
    internal = Path(open_release(path).manifest["internal_counts"])
    moved = internal.with_name("moved.json")
    internal.rename(moved)
    try:
        text = run_cli("explain", path).output
    finally:
        moved.rename(internal)
    n_pub = len(published(path))
    assert f"cells        published {n_pub}; computed and withheld counts are not stated by the release" in text
    assert "suppressed cells by reason" not in text
    for exact in ("4,006", "4006"):  # rows in the source
        assert not re.search(rf"(?<![\d.,]){re.escape(exact)}(?![\d.,])", text), exact
    assert not [v for v in dimension_values(path, ["city"]) if v in text]


def test_rich_on_terminal_and_html_in_notebooks(threshold_release: Path) -> None:
    rel = open_release(threshold_release)
    buf = io.StringIO()
    from rich.console import Console

    render_rich(rel.manifest, rel.path, console=Console(file=buf, force_terminal=True, width=140, color_system="standard"))
    out = buf.getvalue()
    assert ANSI.search(out) and "suppressed cells by reason" in ANSI.sub("", out)
    text = rel.explain()
    assert isinstance(text, str) and text == explain_text(rel.manifest, rel.path)
    page = text._repr_html_()
    assert page.count("<table>") == len(sections(rel.manifest, rel.path))
    assert "&lt;b&gt;Cities&lt;/b&gt; &amp; categories" in page and DESCRIPTION not in page
    assert "<script" not in page and rel._repr_html_() == page


def _self_contained(page: str) -> None:
    assert "<script" not in page.lower() and "<link" not in page.lower() and "src=" not in page.lower()
    assert "@import" not in page and "url(" not in page
    urls = set(re.findall(r"https?://[^\s'\"]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}


def test_summary_html_threshold(threshold_release: Path) -> None:
    page = (threshold_release / "summary.html").read_text()
    _self_contained(page)
    assert "&lt;b&gt;Cities&lt;/b&gt;" in page and DESCRIPTION not in page
    n_pub = len(published(threshold_release))
    assert f"<b>{n_pub:,}</b>cells published" in page
    assert "cells withheld" not in page and "computed or withheld is not shown" in page  # no count of the withheld part
    # top cells: recomputed from the published file, in the same order
    top = duckdb.sql(
        f"""SELECT city, category, month, events FROM read_parquet('{threshold_release / 'report.parquet'}')
            WHERE level = 'cell' ORDER BY events DESC LIMIT 15"""
    ).fetchall()
    chart = page.split("Top ")[1].split("</svg>")[0]
    labels = [html.unescape(x) for x in re.findall(r"<title>([^<]*)</title></text>", chart)]
    assert len(labels) == len(top) > 0
    assert [int(v) for v in re.findall(r"fill='#2d3748'>([\d,]+)</text>", chart)] == [r[3] for r in top]
    assert labels[0] == f"{top[0][0]} · {top[0][1]} · {top[0][2]}"
    # a margin chart per city (the by_city level), labelled with the city only
    assert "by city" in page
    # no suppressed cell: every labelled cell in the page is a published one
    cells = {f"{r[0]} · {r[1]} · {r[2]}" for r in duckdb.sql(
        f"SELECT city, category, month FROM read_parquet('{threshold_release / 'report.parquet'}') WHERE level = 'cell'"
    ).fetchall()}
    assert set(labels) <= cells


def test_summary_html_dp_has_error_bars(dp_release: tuple[Path, Path]) -> None:
    path, _ = dp_release
    page = (path / "summary.html").read_text()
    _self_contained(page)
    rows = duckdb.sql(f"SELECT city, rows, rows_ci95 FROM read_parquet('{path / 'report.parquet'}') "
                      "ORDER BY rows DESC").fetchall()
    assert 0 < len(rows) <= 4  # the two-person cells are never published
    chart = page.split("Top ")[1].split("</svg>")[0]
    assert chart.count("<g stroke='#c53030'") == len(rows)  # one whisker per bar
    assert [c for c in re.findall(r"<title>([^<]*)</title></text>", chart)] == [r[0] for r in rows]
    assert all(f"{r[1]:,} ± " in chart for r in rows)
    assert "differential privacy · ε = 1" in page and "tiny" not in page
    # the forwarded page holds no operator facts: no paths, ledger, budget left, timings
    _no_operator_facts(page, path)
    assert "cells withheld" not in page and "rows aggregated" not in page  # exact counts are not DP


def _no_operator_facts(page: str, path: Path) -> None:
    m = open_release(path).manifest
    text = html.unescape(page)
    for fact in [str(path), str(path.parent.parent.parent), m["source"]["source_id"], "ledger", "left in budget",
                 "timings", "rows aggregated", "selected ", "duckdb "]:
        assert fact not in text, fact
    for f in m["source"]["files"]:
        assert f["path"] not in text


def test_summary_threshold_has_no_operator_facts_and_readable_names(threshold_release: Path) -> None:
    page = (threshold_release / "summary.html").read_text()
    _no_operator_facts(page, threshold_release)
    assert "Order value total" in page and ">order_value_total<" not in page  # header titles keep the raw name
    # the report has a month dimension: a trend chart over it
    assert "<h2>Events by Month</h2>" in page and "<polyline" in page.split("<h2>Events by Month</h2>")[1].split("</svg>")[0]


def test_summary_public_partitions_says_what_is_true(tmp_path: Path) -> None:
    """Listed cells are published whatever their size: the page must not claim small groups never appear."""
    (tmp_path / "data").mkdir()
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT 'city' || (i % 3) AS city, i AS user_id FROM range(300) r(i)")
    con.execute(f"COPY t TO '{tmp_path / 'data' / 'd.parquet'}' (FORMAT parquet)")
    (tmp_path / "data" / "cells.csv").write_text("city\ncity0\ncity1\ncity2\nempty_city\n")
    cfg = write_config(
        tmp_path, source={"path": "data/d.parquet"}, identifiers=["user_id"], filter=None, dimensions=["city"],
        min_units=None, metrics=[{"name": "rows", "agg": "count"}],
        privacy={"epsilon": 1.0, "delta": 0.0, "public_partitions": "data/cells.csv"},
        budget={"ledger": "state/ledger.duckdb", "epsilon_limit": 10.0},
    )
    path = run_report(load_config(cfg), "p1").path
    page = html.unescape((path / "summary.html").read_text())
    assert "small groups never appear" not in page and "chosen privately" not in page
    assert "listed in advance" in page and "whatever their size" in page
    _no_operator_facts((path / "summary.html").read_text(), path)
