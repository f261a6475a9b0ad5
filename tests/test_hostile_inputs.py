"""Hostile inputs in threshold mode (issue 4): bad input gets one clear line and nothing is lost.

One test per case. Every refused run is checked for: the documented exit code, a single stderr
line naming the problem (file / column / config key, line where known), no traceback, and no
release or staging folder (nor a ledger for DP-mode configs). Cases that are dropped-and-counted
(NaN/±inf metric values) are checked against an independent DuckDB computation. Hostile values
and column names must come out of the report unchanged, as data. The per-case decisions are
tabulated in docs/SECURITY.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.state.internal import read_internal

from .conftest import release_dirs, run_cli, write_config

SIMPLE: dict[str, Any] = {
    "source": {"path": "data/e.parquet"},
    "identifiers": ["user_id", "email"],
    "filter": None,
    "dimensions": ["city"],
    "metrics": [
        {"name": "n", "agg": "count"},
        {"name": "units", "agg": "count_units"},
        {"name": "v", "agg": "sum", "column": "order_value", "bounds": [0, 100]},
    ],
    "min_units": 3,
}
GOOD_ROWS = (
    "SELECT i AS user_id, 'u' || i || '@example.com' AS email, "
    "CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END AS city, CAST(i AS DOUBLE) AS order_value "
    "FROM range(12) r(i)"
)
CSV_HEADER = "user_id,email,city,order_value\n"
BUDGET = {"ledger": "state/ledger.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5}


# ----- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


def copy_to(path: Path, sql: str, fmt: str = "parquet", params: list[Any] | None = None) -> Path:
    """Write the result of ``sql`` to ``path`` with DuckDB (values bound, never spliced)."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS {sql}", params or [])
    target = str(path).replace("'", "''")
    con.execute(f"COPY t TO '{target}' (FORMAT {fmt})")
    con.close()
    return path


def simple_config(root: Path, **overrides: Any) -> Path:
    cfg = dict(SIMPLE)
    cfg.update(overrides)
    return write_config(root, **cfg)


def good_source(root: Path) -> Path:
    return copy_to(root / "data" / "e.parquet", GOOD_ROWS)


def run(cfg: Path, *extra: str) -> Any:
    return run_cli("run", cfg, "--run-id", "r1", *extra)


def assert_refused(res: Any, root: Path, code: int, *needles: str) -> None:
    """Exit code, one stderr line naming the problem, no traceback, nothing published or staged."""
    err = res.stderr
    assert res.exit_code == code, (res.exit_code, res.stdout, err)
    assert err.startswith("anonymize: ") and err.endswith("\n"), err
    assert err.count("\n") == 1, f"stderr is not a single line: {err!r}"
    assert "Traceback" not in err + res.stdout
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert res.stdout == ""
    assert release_dirs(root) == []
    assert not [p for p in root.rglob("*") if p.name.startswith(".staging-")]
    assert not (root / "reports").exists() or not any((root / "reports").rglob("*.parquet"))
    assert not (root / "state").exists(), "a ledger (or its folder) appeared"


def published(res: Any, root: Path) -> tuple[Any, dict[str, Any]]:
    """The single release of a successful run: (pyarrow table, manifest)."""
    assert res.exit_code == 0, (res.exit_code, res.stderr)
    (rel,) = release_dirs(root)
    manifest = json.loads((rel / "manifest.json").read_text())
    # the exact counts of the run are the operator's, kept outside the release (docs/PRIVACY.md)
    return pq.read_table(rel / "report.parquet"), {**manifest, **read_internal(manifest["internal_counts"])}


# ----- config: refused before any data is read (exit 2) ----------------------------------------


def test_yaml_syntax_error_gives_file_and_line(root: Path) -> None:
    good_source(root)
    cfg = root / "report.yaml"
    cfg.write_text("report: t\nsource: {path: data/e.parquet\nprivacy_unit: user_id\ndimensions: [city]\n")
    assert_refused(run(cfg), root, 2, "report.yaml", "line 3", "YAML syntax error")


def test_unknown_key_names_key_and_line(root: Path) -> None:
    good_source(root)
    cfg = simple_config(root, minimum_units=5)
    line = cfg.read_text().splitlines().index("minimum_units: 5") + 1
    assert_refused(run(cfg), root, 2, "report.yaml", f"line {line}", "minimum_units", "unknown key")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"min_units": "ten"}, "min_units"),
        ({"dimensions": {"city": 1}}, "dimensions"),
        ({"metrics": [{"name": "v", "agg": "sum", "column": "order_value", "bounds": ["low", 5]}]}, "metrics[0].bounds"),
        ({"source": {"path": ["data/e.parquet"]}}, "source.path"),
    ],
    ids=["min_units-text", "dimensions-mapping", "bounds-text", "source-path-list"],
)
def test_wrong_type_names_key(root: Path, overrides: dict, key: str) -> None:
    good_source(root)
    assert_refused(run(simple_config(root, **overrides)), root, 2, "report.yaml", key)


@pytest.mark.parametrize("epsilon", [0, -1, -0.0])
def test_epsilon_not_positive_is_refused(root: Path, epsilon: float) -> None:
    good_source(root)
    cfg = simple_config(root, privacy={"epsilon": epsilon, "delta": 1e-6}, budget=BUDGET)
    assert_refused(run(cfg), root, 2, "privacy.epsilon", "greater than 0")


@pytest.mark.parametrize("delta", [1, 1.5])
def test_delta_at_least_one_is_refused(root: Path, delta: float) -> None:
    good_source(root)
    cfg = simple_config(root, privacy={"epsilon": 1, "delta": delta}, budget=BUDGET)
    assert_refused(run(cfg), root, 2, "privacy.delta", "less than 1")


def test_bounds_low_above_high_is_refused(root: Path) -> None:
    good_source(root)
    metrics = [{"name": "n", "agg": "count"}, {"name": "v", "agg": "sum", "column": "order_value", "bounds": [100, 0]}]
    assert_refused(run(simple_config(root, metrics=metrics)), root, 2, "metrics[1]", "greater than high")


@pytest.mark.parametrize("k", [0, 1])
def test_min_units_below_two_is_refused(root: Path, k: int) -> None:
    good_source(root)
    assert_refused(run(simple_config(root, min_units=k)), root, 2, "min_units", "greater than or equal to 2")


@pytest.mark.parametrize("name", ["a/b", "../x", "..", "x/../../etc"])
def test_report_name_with_path_parts_is_refused(root: Path, name: str) -> None:
    good_source(root)
    assert_refused(run(simple_config(root, report=name)), root, 2, "report", "a-z, 0-9 and _")


def test_output_dir_inside_a_folder_source_is_refused(root: Path) -> None:
    """A folder source reads every file beneath it: a release there would be read back."""
    good_source(root)
    cfg = simple_config(root, source={"path": "data"}, output={"dir": "data/reports"})
    assert_refused(run(cfg), root, 2, "output.dir", "inside the source folder")
    assert not (root / "data" / "reports").exists()
    assert_refused(run_cli("validate", cfg), root, 2, "output.dir", "inside the source folder")


def test_output_flag_inside_a_folder_source_is_refused(root: Path) -> None:
    good_source(root)
    res = run(simple_config(root, source={"path": "data"}), "--output", str(root / "data" / "out"))
    assert_refused(res, root, 2, "--output", "inside the source folder")
    assert not (root / "data" / "out").exists()


@pytest.mark.parametrize("pattern", ["data/**/*.parquet", "data/*/*/*/*.parquet", "data/**", "data/*/*/*/*.json",
                                     "data/**/*.csv"])  # a CSV export (output.formats) read back as a CSV source
def test_output_a_source_glob_could_read_back_is_refused(root: Path, pattern: str) -> None:
    good_source(root)
    cfg = simple_config(root, source={"path": pattern}, output={"dir": "data/reports"})
    assert_refused(run(cfg), root, 2, "output.dir", "would match the release")
    assert_refused(run_cli("validate", cfg), root, 2, "output.dir", "would match the release")


@pytest.mark.parametrize("source", ["data/e.parquet", "data/*.parquet", "data/*/x/*/*.parquet"])
def test_output_beside_a_source_that_cannot_read_it_is_allowed(root: Path, source: str) -> None:
    """A single file reads only itself, and a glob that cannot match a release file cannot read one
    back: the output may sit beside them (the old rule forbade any output under data/)."""
    good_source(root)
    res = run(simple_config(root, source={"path": source}, output={"dir": "data/reports"}))
    if source.endswith("*/x/*/*.parquet"):  # matches no source file either
        assert res.exit_code == 1 and "matches no files" in res.stderr
        return
    assert res.exit_code == 0, res.stderr
    assert (root / "data" / "reports" / "t_report" / "r1" / "report.parquet").is_file()
    again = run(simple_config(root, source={"path": source}, output={"dir": "data/reports"}))
    assert again.exit_code == 0 and "identical" in again.stdout  # the release was not read back as input


def test_filter_on_missing_column_is_refused(root: Path) -> None:
    good_source(root)
    res = run(simple_config(root, filter={"no_such_column": ["x"]}))
    assert_refused(res, root, 2, "report.yaml", "filter.no_such_column", "not in the source")


@pytest.mark.parametrize(
    ("filter_", "needle"),
    [
        ({"order_value": "abc"}, "give a finite number"),
        ({"order_value": {"min": "10"}}, "give a finite number"),
        ({"order_value": {"max": float("nan")}}, "give a finite number"),
        ({"city": 5}, "quote the value"),
        ({"city": ["A", 7]}, "quote the value"),
        ({"city": True}, "true/false"),
    ],
    ids=["number-col-text", "number-col-min-text", "number-col-nan", "text-col-int", "text-col-list-int", "text-col-bool"],
)
def test_filter_value_of_wrong_type_is_refused(root: Path, filter_: dict, needle: str) -> None:
    # before the fix this was a DuckDB conversion error at run time (exit 1) quoting a source value
    good_source(root)
    (col,) = filter_
    res = run(simple_config(root, filter=filter_))
    assert_refused(res, root, 2, "report.yaml", f"filter.{col}", "does not fit", needle)
    assert "'A'" not in res.stderr  # no source value is quoted


def test_bounds_beyond_exact_decimal_range_are_refused(root: Path) -> None:
    copy_to(root / "data" / "e.parquet", GOOD_ROWS.replace("CAST(i AS DOUBLE)", "CAST(i AS DOUBLE) * 1e35"))
    metrics = [{"name": "v", "agg": "sum", "column": "order_value", "bounds": [0, 1e40]}]
    assert_refused(run(simple_config(root, metrics=metrics)), root, 2, "metrics[0]", "bounds must lie within", "rescale")


def test_line_break_in_a_path_still_gives_one_line(root: Path) -> None:
    res = run(simple_config(root, source={"path": "data/new\nline.parquet"}))
    assert_refused(res, root, 1, "new\\nline.parquet", "not found")


def test_config_column_name_with_sql_is_only_an_identifier(root: Path) -> None:
    good_source(root)
    evil = 'city"; DROP TABLE __src; --'
    res = run(simple_config(root, dimensions=[{"column": evil, "as": "city"}]))
    assert_refused(res, root, 2, "dimensions[0]", "DROP TABLE", "not in the source")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{root / 'data' / 'e.parquet'}')").fetchall() == [(12,)]


# ----- source: refused as source/data errors (exit 1) ------------------------------------------


def test_missing_file_is_refused(root: Path) -> None:
    res = run(simple_config(root, source={"path": "data/missing.parquet"}))
    assert_refused(res, root, 1, "data/missing.parquet", "not found")


def test_empty_glob_is_refused(root: Path) -> None:
    res = run(simple_config(root, source={"path": "data/*.parquet"}))
    assert_refused(res, root, 1, "data/*.parquet", "matches no files")


@pytest.mark.parametrize("name", ["e.parquet", "e.csv"])
def test_zero_byte_file_is_refused(root: Path, name: str) -> None:
    (root / "data" / name).write_bytes(b"")
    res = run(simple_config(root, source={"path": f"data/{name}"}))
    assert_refused(res, root, 1, name, "empty (0 bytes)")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_source_without_rows_is_refused(root: Path, fmt: str) -> None:
    path = root / "data" / f"e.{fmt}"
    if fmt == "csv":
        path.write_text(CSV_HEADER)
    else:
        copy_to(path, GOOD_ROWS + " WHERE false")
    res = run(simple_config(root, source={"path": f"data/e.{fmt}"}))
    assert_refused(res, root, 1, f"data/e.{fmt}", "holds no rows")


def test_truncated_parquet_is_refused(root: Path) -> None:
    path = copy_to(root / "data" / "e.parquet", GOOD_ROWS.replace("range(12)", "range(5000)"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_refused(run(simple_config(root)), root, 1, str(path), "not a readable Parquet file", "truncated")


def test_file_that_is_not_parquet_is_refused(root: Path) -> None:
    (root / "data" / "e.parquet").write_text(CSV_HEADER + "1,a@b.c,A,1\n")
    assert_refused(run(simple_config(root)), root, 1, "e.parquet", "not a readable Parquet file")


def _csv(root: Path, body: bytes | str, **overrides: Any) -> Path:
    path = root / "data" / "e.csv"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return simple_config(root, source={"path": "data/e.csv"}, **overrides)


def test_csv_row_with_too_many_fields_is_refused(root: Path) -> None:
    cfg = _csv(root, CSV_HEADER + "1,a@x.y,A,1\n2,b@x.y,A,2,9\n3,c@x.y,B,3\n")
    assert_refused(run(cfg), root, 1, "e.csv", "line 3", "more fields than the header")


def test_csv_row_with_too_few_fields_is_refused(root: Path) -> None:
    cfg = _csv(root, CSV_HEADER + "1,a@x.y,A,1\n2,b@x.y,A,2\n3,c@x.y,B\n")
    assert_refused(run(cfg), root, 1, "e.csv", "line 4", "fewer fields than the header")


def test_csv_with_unterminated_quote_is_refused(root: Path) -> None:
    cfg = _csv(root, CSV_HEADER + '1,a@x.y,"A,1\n2,b@x.y,A,2\n3,c@x.y,B,3\n')
    assert_refused(run(cfg), root, 1, "e.csv", "does not parse as CSV", "quote")


def test_csv_with_text_after_closing_quote_is_refused(root: Path) -> None:
    cfg = _csv(root, CSV_HEADER + '1,a@x.y,"A"B,1\n2,b@x.y,A,2\n3,c@x.y,B,3\n')
    assert_refused(run(cfg), root, 1, "e.csv", "quote")


def test_csv_with_non_utf8_bytes_is_refused(root: Path) -> None:
    cfg = _csv(root, CSV_HEADER.encode() + b"1,a@x.y,A,1\n2,b@x.y,\xff\xfeA,2\n")
    assert_refused(run(cfg), root, 1, "e.csv", "line 3", "not valid UTF-8")


def test_csv_with_mixed_encodings_is_refused(root: Path) -> None:
    body = (CSV_HEADER + "1,a@x.y,Zürich,1\n2,b@x.y,Zürich,2\n").encode() + "3,c@x.y,Zürich,3\n".encode("latin-1")
    assert_refused(run(_csv(root, body)), root, 1, "e.csv", "line 4", "not valid UTF-8")


def test_csv_in_utf16_is_refused(root: Path) -> None:
    cfg = _csv(root, (CSV_HEADER + "1,a@x.y,A,1\n2,b@x.y,A,2\n").encode("utf-16"))
    assert_refused(run(cfg), root, 1, "e.csv", "UTF-16", "re-encode")


def test_csv_header_repeating_a_name_is_refused(root: Path) -> None:
    # DuckDB would silently rename the second 'city' to 'city_1'
    cfg = _csv(root, "user_id,email,city,city,order_value\n1,a@x.y,A,B,1\n2,b@x.y,A,B,2\n")
    assert_refused(run(cfg), root, 1, "e.csv", "repeats column name", "'city'")


def test_metric_column_holding_text_is_refused(root: Path) -> None:
    cfg = _csv(root, CSV_HEADER + "1,a@x.y,A,1\n2,b@x.y,A,N/A\n3,c@x.y,B,3\n")
    assert_refused(run(cfg), root, 1, "data/e.csv", "metrics[2].column", "'order_value'", "not numbers")


def test_metric_text_after_the_type_sample_is_refused(root: Path) -> None:
    # the first 30,000 rows are numbers: the CSV sniffer types the column as a number, the bad
    # value far down the file must still be found (not silently read as NULL)
    rows = "".join(f"{i},u{i}@x.y,{'AB'[i % 2]},{i % 90}\n" for i in range(30_000))
    cfg = _csv(root, CSV_HEADER + rows + "30000,z@x.y,A,N/A\n")
    assert_refused(run(cfg), root, 1, "e.csv", "line 30002", "'order_value'", "does not convert")


def test_timestamps_that_do_not_parse_are_refused(root: Path) -> None:
    body = "user_id,city,t\n" + "".join(f"{i},A,2026-0{1 + i % 3}-01\n" for i in range(9)) + "9,A,next tuesday\n"
    cfg = _csv(root, body, identifiers=["user_id"], dimensions=["city", {"column": "t", "grain": "month"}],
               metrics=[{"name": "n", "agg": "count"}])
    assert_refused(run(cfg), root, 1, "data/e.csv", "dimensions[1]", "'t'", "do not parse as timestamps")


def test_privacy_unit_null_in_every_row_is_refused(root: Path) -> None:
    copy_to(root / "data" / "e.parquet", GOOD_ROWS.replace("i AS user_id", "CAST(NULL AS BIGINT) AS user_id"))
    assert_refused(run(simple_config(root)), root, 1, "data/e.parquet", "privacy_unit", "'user_id'", "null in every")


def test_schema_drift_column_type_is_refused(root: Path) -> None:
    copy_to(root / "data" / "a.parquet", GOOD_ROWS)
    copy_to(root / "data" / "b.parquet", GOOD_ROWS.replace("CAST(i AS DOUBLE) AS order_value", "'N/A' AS order_value"))
    res = run(simple_config(root, source={"path": "data/*.parquet"}))
    assert_refused(res, root, 1, "b.parquet", "schema drift", "'order_value' is VARCHAR")


def test_schema_drift_missing_column_is_refused(root: Path) -> None:
    copy_to(root / "data" / "a.parquet", GOOD_ROWS)
    copy_to(root / "data" / "b.parquet", GOOD_ROWS.replace(", CAST(i AS DOUBLE) AS order_value", ""))
    res = run(simple_config(root, source={"path": "data/*.parquet"}))
    assert_refused(res, root, 1, "b.parquet", "schema drift", "'order_value' is missing")


def test_schema_drift_between_csv_files_is_refused(root: Path) -> None:
    (root / "data" / "a.csv").write_text(CSV_HEADER + "1,a@x.y,A,1\n")
    (root / "data" / "b.csv").write_text("user_id,email,order_value,city\n2,b@x.y,2,A\n")
    res = run(simple_config(root, source={"path": "data/*.csv"}))
    assert_refused(res, root, 1, "b.csv", "schema drift", "different order")


# ----- NaN and ±inf: dropped from that metric and counted --------------------------------------

NAN_ROWS = """
    SELECT i AS user_id, 'u' || i || '@example.com' AS email, CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END AS city,
           CASE i % 7 WHEN 0 THEN 'nan'::DOUBLE WHEN 1 THEN 'inf'::DOUBLE WHEN 2 THEN '-inf'::DOUBLE
                      WHEN 3 THEN NULL WHEN 4 THEN -5.0 WHEN 5 THEN 250.0 ELSE i * 1.5 END AS order_value
    FROM range(40) r(i)
"""


@pytest.mark.parametrize("fmt,totals", [("parquet", None), ("csv", None), ("parquet", [[]])])
def test_nan_and_infinite_values_are_dropped_and_counted(root: Path, fmt: str, totals: list | None) -> None:
    """Also with totals, where the counts come from the (cell, unit) table instead of the cells."""
    path = copy_to(root / "data" / f"e.{fmt}", NAN_ROWS, fmt=fmt)
    metrics = [*SIMPLE["metrics"], {"name": "v_avg", "agg": "mean", "column": "order_value", "bounds": [0, 100]}]
    extra = {"totals": totals} if totals else {}
    table, manifest = published(run(simple_config(root, source={"path": f"data/e.{fmt}"}, metrics=metrics, **extra)), root)
    # independent computation, by hand, on the raw file
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    con = duckdb.connect()
    invalid = con.execute(
        f"SELECT count(*) FROM {reader}($1) WHERE isnan(order_value) OR isinf(order_value)", [str(path)]
    ).fetchall()[0][0]
    assert invalid == 18  # 6 NaN + 6 +inf + 6 -inf of 40 rows: the test data really has them
    assert manifest["rows"]["invalid_values_dropped"] == {"v": invalid, "v_avg": invalid}
    assert manifest["rows"]["rows_selected"] == 40 and manifest["rows"]["rows_aggregated"] == 40
    counts = dict(con.execute(f"SELECT city, count(*) FROM {reader}($1) GROUP BY city", [str(path)]).fetchall())
    finite = {
        city: (s, a)
        for city, s, a in con.execute(
            f"SELECT city, sum(least(100, greatest(0, order_value))), avg(least(100, greatest(0, order_value))) "
            f"FROM {reader}($1) WHERE isfinite(order_value) GROUP BY city",
            [str(path)],
        ).fetchall()
    }
    rows = {r["city"]: r for r in table.to_pylist() if r.get("level", "cell") == "cell"}
    assert set(rows) == {"A", "B"}
    for city, row in rows.items():
        assert row["n"] == counts[city] == 20  # every row still counts; only the value is dropped
        assert row["v"] == pytest.approx(finite[city][0])
        assert row["v_avg"] == pytest.approx(finite[city][1])


# ----- hostile values: data in, the same data out ----------------------------------------------

HOSTILE_VALUES = [
    "it's",
    'say "hi"',
    "a;b;c",
    "'); DROP TABLE __src; --",
    '" OR 1=1 --',
    "x' OR '1'='1",
    "line one\nline two",
    "cr\r\nlf",
    "tab\there",
    "back\\slash \\' \\\"",
    "\u202eevil\u202c right-to-left",
    "\u200bzero width",
    "🙂🚀 emoji 👩‍👩‍👧",
    "<script>alert(1)</script>",
    "%_ like wildcards",
    "  padded  ",
    "",
    "L" * 100_000,
]


def _hostile_source(root: Path, fmt: str, users_per_value: int = 3) -> Path:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, email VARCHAR, city VARCHAR, order_value DOUBLE)")
    rows = []
    uid = 0
    for value in HOSTILE_VALUES:
        for _ in range(users_per_value):
            rows.append((uid, f"u{uid}@example.com", value, 1.0))
            uid += 1
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    path = root / "data" / f"e.{fmt}"
    con.execute(f"COPY t TO '{path}' (FORMAT {fmt})")
    return path


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_hostile_dimension_values_come_out_unchanged(root: Path, fmt: str) -> None:
    _hostile_source(root, fmt)
    res = run(simple_config(root, source={"path": f"data/e.{fmt}"}))
    table, manifest = published(res, root)
    got = table.to_pylist()
    assert sorted(r["city"] for r in got) == sorted(HOSTILE_VALUES)  # exact, byte for byte
    assert all(r["units"] == 3 and r["n"] == 3 and r["v"] == 3.0 for r in got)
    assert manifest["cells"]["cells_published"] == len(HOSTILE_VALUES)
    summary = next(root.rglob("summary.html")).read_text()
    assert "<script>alert(1)</script>" not in summary and "&lt;script&gt;" in summary


def test_hostile_value_below_threshold_is_still_suppressed(root: Path) -> None:
    _hostile_source(root, "parquet", users_per_value=2)  # every cell has 2 < min_units=3 users
    table, manifest = published(run(simple_config(root)), root)
    assert table.num_rows == 0
    assert manifest["cells"]["cells_suppressed"] == len(HOSTILE_VALUES)


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"city": ["x' OR '1'='1"]}, ["x' OR '1'='1"]),  # matches only the literal value
        ({"city": "A' OR 'a'='a"}, []),  # a scalar with SQL in it matches nothing
        ({"city": ["'); DROP TABLE __src; --"]}, ["'); DROP TABLE __src; --"]),
        ({"city": {"in": ['" OR 1=1 --', "nope') OR TRUE --"]}}, ['" OR 1=1 --']),
        ({"city": {"not_in": ["x' OR '1'='1"], "min": "a", "max": "bz"}}, ["a;b;c", "back\\slash \\' \\\""]),
    ],
    ids=["in-list", "scalar", "drop-table", "range-in", "not-in-min-max"],
)
def test_filter_values_are_bound_parameters(root: Path, filter_: dict, expected: list[str]) -> None:
    path = _hostile_source(root, "parquet")
    res = run(simple_config(root, filter=filter_))
    table, manifest = published(res, root)
    assert sorted(r["city"] for r in table.to_pylist()) == sorted(expected)
    assert manifest["rows"]["rows_selected"] == 3 * len(expected)
    # the source is untouched
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall() == [(3 * len(HOSTILE_VALUES),)]


HOSTILE_COLUMNS = {
    "unit": 'user "id"',
    "city": "city name",
    "category": "it's; category",
    "value": 'order "value" ($)',
    "type": "event type\"';--",
    "multi": "multi\nline",
}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_column_names_with_spaces_and_quotes(root: Path, fmt: str) -> None:
    c = HOSTILE_COLUMNS
    q = {k: '"' + v.replace('"', '""') + '"' for k, v in c.items()}
    path = copy_to(
        root / "data" / f"e.{fmt}",
        f"""SELECT i AS {q['unit']}, ['Pune', 'Goa'][1 + i % 2] AS {q['city']},
                   ['x', 'y', 'z'][1 + i % 3] AS {q['category']}, (i % 40) * 1.5 AS {q['value']},
                   CASE WHEN i % 5 = 0 THEN 'call' ELSE 'order' END AS {q['type']},
                   ['p', 'q'][1 + i % 2] AS {q['multi']}
            FROM range(300) r(i)""",
        fmt=fmt,
    )
    cfg = simple_config(
        root,
        source={"path": f"data/e.{fmt}"},
        privacy_unit=c["unit"],
        identifiers=[c["unit"]],
        filter={c["type"]: ["order"]},
        dimensions=[{"column": c["city"], "as": "city"}, {"column": c["category"], "as": "category"},
                    {"column": c["multi"], "as": "multi"}],
        metrics=[
            {"name": "n", "agg": "count"},
            {"name": "units", "agg": "count_units"},
            {"name": "v", "agg": "sum", "column": c["value"], "bounds": [0, 50]},
        ],
    )
    assert yaml.safe_load(cfg.read_text())["privacy_unit"] == c["unit"]  # the YAML round-trips
    table, _ = published(run(cfg), root)
    truth = duckdb.connect().execute(
        f"""SELECT {q['city']}, {q['category']}, {q['multi']}, count(*), count(DISTINCT {q['unit']}),
                   sum(least(50, greatest(0, {q['value']})))
            FROM {'read_parquet' if fmt == 'parquet' else 'read_csv'}($1) WHERE {q['type']} = 'order'
            GROUP BY ALL HAVING count(DISTINCT {q['unit']}) >= 3""",
        [str(path)],
    ).fetchall()
    got = [(r["city"], r["category"], r["multi"], r["n"], r["units"], r["v"]) for r in table.to_pylist()]
    assert len(truth) == 6
    assert sorted(got) == sorted((a, b, m, n, u, pytest.approx(float(s))) for a, b, m, n, u, s in truth)
    assert table.column_names == ["city", "category", "multi", "n", "units", "v"]
