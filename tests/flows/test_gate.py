"""Release gate: crafted leaks are refused (exit 3, one clear line, nothing published).

Every leak is built into real data and run through the real CLI and DuckDB; the facts the
assertions rely on (which cell holds one person, which values are user ids) are computed here
independently with plain DuckDB.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import load_config
from pipeline.errors import PrivacyRefusal
from pipeline.flows.gate import run_gate
from pipeline.privacy.identifiers import is_identifier_like, luhn_ok

from ..conftest import release_dirs, run_cli, write_config

CHECKS = {"columns", "patterns", "identifier_values", "quasi_identifier", "min_units"}


def write_source(folder: Path, columns: dict[str, list]) -> Path:
    (folder / "data").mkdir(exist_ok=True)
    path = folder / "data" / "s.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def crafted_config(folder: Path, dims: list, **kw: Any) -> Path:
    return write_config(
        folder, source={"path": "data/s.parquet"}, identifiers=kw.pop("identifiers", ["user_id", "email"]),
        filter=None, dimensions=dims, metrics=[{"name": "users", "agg": "count_units"}, {"name": "rows", "agg": "count"}],
        min_units=kw.pop("min_units", 10), **kw,
    )


def assert_refused(res: Any, folder: Path, *needles: str) -> None:
    assert res.exit_code == 3, (res.exit_code, res.stderr)
    line = res.stderr.strip()
    assert line.startswith("anonymize: refused: release gate failed") and "\n" not in line
    assert "Traceback" not in res.output + res.stderr
    for n in needles:
        assert n in line, (n, line)
    assert release_dirs(folder) == []
    assert not list(folder.rglob(".staging-*"))


# ----- leaks in published values ---------------------------------------------------------------


def test_email_smuggled_into_a_category(tmp_path: Path) -> None:
    users = list(range(1, 81))
    cats = ["Shoes" if u <= 40 else "orders@shop-example.com" for u in users]
    write_source(tmp_path, {"user_id": users, "email": [f"u{u}@x.in" for u in users], "category": cats})
    res = run_cli("run", crafted_config(tmp_path, ["category"]), "--run-id", "r")
    assert_refused(res, tmp_path, "look like identifiers", "category: email")


def test_dimension_copying_the_user_id_is_refused(tmp_path: Path) -> None:
    # user_ref is user_id under another name: every value is one person
    users = [u for u in range(1, 301) for _ in range(2)]
    write_source(tmp_path, {"user_id": users, "user_ref": [f"R{u}" for u in users], "city": ["Pune"] * len(users)})
    res = run_cli("run", crafted_config(tmp_path, ["user_ref", "city"], min_units=5), "--run-id", "r")
    assert_refused(res, tmp_path, "quasi-identifiers", "user_ref")


def test_dimension_holding_user_ids_of_others_is_refused(tmp_path: Path) -> None:
    # referrer holds real user ids (three popular referrers): each value is published with >= k
    # people, yet it names a person; the gate joins published values to the identifier columns
    users = list(range(1, 121))
    referrer = [[7, 13, 21][u % 3] for u in users]
    write_source(tmp_path, {"user_id": users, "referrer": referrer})
    con = duckdb.connect()  # independent truth: the published values are user ids of the source
    con.register("s", pa.table({"user_id": users, "referrer": referrer}))
    assert con.execute("SELECT count(DISTINCT referrer) FROM s WHERE referrer IN (SELECT user_id FROM s)").fetchone()[0] == 3
    res = run_cli("run", crafted_config(tmp_path, ["referrer"], identifiers=["user_id"]), "--run-id", "r")
    assert_refused(res, tmp_path, "equal values of identifier column(s)", "referrer = user_id")


def test_undeclared_column_is_refused_by_the_gate(tmp_path: Path) -> None:
    write_source(tmp_path, {"user_id": list(range(40)), "city": ["A"] * 40})
    cfg = load_config(crafted_config(tmp_path, ["city"]))
    table = pa.table({"city": ["A"], "users": [40], "rows": [40], "user_id": [3]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    with pytest.raises(PrivacyRefusal, match=r"column\(s\) 'user_id' are not declared"):
        run_gate(cfg, buf.getvalue(), checks=("columns",))
    ok = io.BytesIO()
    pq.write_table(table.drop(["user_id"]), ok)
    assert run_gate(cfg, ok.getvalue(), checks=("columns",))["passed"] is True
    assert release_dirs(tmp_path) == []


# ----- anonymize check on written releases -----------------------------------------------------


def _one_person_cell(src: Path) -> tuple[str, str, Any]:
    """A (city, category, month) combination holding exactly one user, found with plain DuckDB."""
    return duckdb.connect().execute(
        f"""SELECT city, category, CAST(date_trunc('month', event_time) AS DATE) AS month
            FROM read_parquet('{src}') WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL
            GROUP BY ALL HAVING count(DISTINCT user_id) = 1 ORDER BY ALL LIMIT 1"""
    ).fetchone()


def test_injected_one_person_row_fails_check(project: Path) -> None:
    res = run_cli("run", write_config(project), "--run-id", "r1")
    assert res.exit_code == 0, res.stderr
    [rel] = release_dirs(project)
    manifest = json.loads((rel / "manifest.json").read_text())
    assert set(manifest["gate"]["checks"]) == CHECKS and manifest["gate"]["passed"] is True
    ok = run_cli("check", rel)
    assert ok.exit_code == 0 and "verdict: PASSED" in ok.output and "FAIL" not in ok.output

    city, category, month = _one_person_cell(project / "data" / "events.parquet")
    path = rel / "report.parquet"
    table = pq.read_table(path)
    row = {"city": [city], "category": [category], "month": [month], "events": [1], "buyers": [10],
           "order_value_total": [0.0], "order_value_avg": [None]}
    tampered = pa.concat_tables([table, pa.table(row, schema=table.schema)])
    pq.write_table(tampered, path)
    res = run_cli("check", rel)
    assert res.exit_code == 3
    line = res.stderr.strip()
    assert line.startswith("anonymize: refused: release gate failed") and "\n" not in line
    assert "does not match the sha256" in line
    assert "1 published row(s) aggregate fewer than min_units=10" in line
    assert "FAIL    min_units" in res.output and "verdict: FAILED" in res.output
    assert release_dirs(project) == [rel]  # nothing new appeared

    # even with the manifest's hash forged to match, the recomputed threshold catches the row
    manifest["report_file"]["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    (rel / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli("check", rel)
    assert res.exit_code == 3 and "sha256" not in res.stderr and "fewer than min_units=10" in res.stderr
    assert release_dirs(project) == [rel]


def test_check_detects_an_added_identifier_column(project: Path) -> None:
    assert run_cli("run", write_config(project), "--run-id", "r1").exit_code == 0
    [rel] = release_dirs(project)
    table = pq.read_table(rel / "report.parquet")
    pq.write_table(table.append_column("email", pa.array(["a@b.in"] * table.num_rows)), rel / "report.parquet")
    res = run_cli("check", rel)
    assert res.exit_code == 3
    assert "column(s) 'email' are not declared" in res.stderr and "email: email" in res.stderr
    assert release_dirs(project) == [rel]


def test_check_without_source_and_with_config(project: Path) -> None:
    cfg = write_config(project)
    assert run_cli("run", cfg, "--run-id", "r1").exit_code == 0
    [rel] = release_dirs(project)
    with_cfg = run_cli("check", rel, "--config", cfg)
    assert with_cfg.exit_code == 0 and "source: data/events.parquet (unchanged" in with_cfg.output
    (project / "data" / "events.parquet").rename(project / "moved.parquet")
    res = run_cli("check", rel)
    assert res.exit_code == 0
    assert "source: not available" in res.output
    assert "skipped identifier_values" in res.output and "skipped quasi_identifier" in res.output
    assert "published counts only" in res.output and "2 check(s) skipped" in res.output
    bad = run_cli("check", project)
    assert bad.exit_code == 1 and "is not a release folder" in bad.stderr


def test_check_without_source_refuses_a_published_unit_count_below_k(project: Path) -> None:
    """Guarantee: without the source the gate still refuses rows whose own published distinct-unit
    count is below min_units (the forged row keeps the hash consistent, so only this check fires)."""
    cfg = write_config(project)
    assert run_cli("run", cfg, "--run-id", "r1").exit_code == 0
    [rel] = release_dirs(project)
    (project / "data" / "events.parquet").rename(project / "moved.parquet")
    path = rel / "report.parquet"
    table = pq.read_table(path)
    buyers = table.column("buyers").to_pylist()
    buyers[0] = 3  # one row now states 3 buyers, below k = 10
    pq.write_table(table.set_column(table.column_names.index("buyers"), "buyers",
                                    pa.array(buyers, table.schema.field("buyers").type)), path)
    manifest = json.loads((rel / "manifest.json").read_text())
    manifest["report_file"]["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    (rel / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli("check", rel)
    assert res.exit_code == 3, res.output
    assert "1 published row(s) show fewer than min_units=10 units" in res.stderr
    # at exactly k the row passes: the rule is "fewer than", not "at most"
    buyers[0] = 10
    pq.write_table(table.set_column(table.column_names.index("buyers"), "buyers",
                                    pa.array(buyers, table.schema.field("buyers").type)), path)
    manifest["report_file"]["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    (rel / "manifest.json").write_text(json.dumps(manifest))
    assert run_cli("check", rel).exit_code == 0


# ----- identifier patterns -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("write to priya.s+ads@example.co.in", "email"),
        ("9876543210", "phone_in"),
        ("+91 98765 43210", "phone_in"),
        ("+91-98765-43210", "phone_in"),
        ("+44 20 7946 0958", "phone_intl"),
        ("+1 (555) 123-4567", "phone_intl"),
        ("192.168.1.20", "ipv4"),
        ("host 10.0.0.255 down", "ipv4"),
        ("2001:db8::1", "ipv6"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6"),
        ("fe80::1ff:fe23:4567:890a", "ipv6"),
        ("ABCPE1234F", "pan"),
        ("2345 6789 0123", "aadhaar"),
        ("234567890123", "aadhaar"),
        ("27AAPFU0939F1ZV", "gstin"),
        ("4111111111111111", "card_number"),  # Visa test number, passes Luhn
        ("6011 0009 9013 9424", "aadhaar"),  # a spaced card number is caught first as Aadhaar-like
    ],
)
def test_identifier_patterns_match(value: str, kind: str) -> None:
    assert is_identifier_like(value) == kind


@pytest.mark.parametrize(
    "value",
    [
        "Mumbai", "Delhi NCR", "Electronics & Appliances", "Tyres", "2026-11-23", "2026-W47", "Q3 2026",
        "12:30", "12:30:45", "v1.2.3", "1.2.3", "300.1.1.1", "std::vector", "SKU 12345", "Rs 10000-20000",
        "ABCDE1234F",  # fourth letter D is not a PAN holder type
        "4111111111111112",  # fails Luhn
        "12345", "2026", "size 42", "at home", "",
    ],
)
def test_identifier_patterns_leave_ordinary_values_alone(value: str) -> None:
    assert is_identifier_like(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "ref 1234567890123, card 4111111111111111",  # a 13-digit run in front (the engine read only the first)
        "12 4111111111111111",  # a group in front: the old pattern took all 18 digits, which fail Luhn
        "x4111111111111111y",  # letters around the number
        "4111-1111-1111-1111",
        "id 5500 0000 0000 0004 (work)",
    ],
)
def test_the_gate_finds_a_card_number_behind_other_digits(tmp_path: Path, value: str) -> None:
    """Guarantee: a published text value holding a card number (whole digit groups, 13–19 digits,
    passing Luhn) is refused however many digits come before it, through the gate's own SQL scan,
    not only by the Python helper."""
    cfg = load_config(crafted_config(tmp_path, ["category"]))
    table = pa.table({"category": ["Shoes", value, "Tyres"], "users": [50, 50, 50], "rows": [60, 60, 60]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    with pytest.raises(PrivacyRefusal, match="category: card_number"):
        run_gate(cfg, buf.getvalue(), checks=("patterns",))
    assert is_identifier_like(value) is not None  # (spaced groups are also Aadhaar-like)


def test_the_gate_leaves_long_numbers_without_a_card_alone(tmp_path: Path) -> None:
    """Digit runs that are no card number under the rule (Luhn fails on every span of whole groups,
    or a run of 20 digits) pass the pattern check."""
    cfg = load_config(crafted_config(tmp_path, ["category"]))
    values = ["4111111111111112", "41111111111111111111", "SKU 1234567890123", "12 12 12 12 12 12 12"]
    table = pa.table({"category": values, "users": [50] * 4, "rows": [60] * 4})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    result = run_gate(cfg, buf.getvalue(), checks=("patterns",))
    assert result["checks"]["patterns"] == {"ok": True, "hits": []}


def test_luhn() -> None:
    assert luhn_ok("4111 1111 1111 1111") and luhn_ok("5500-0000-0000-0004")
    assert not luhn_ok("4111 1111 1111 1112") and not luhn_ok("411111111111")  # too short
    assert luhn_ok("378282246310005") and is_identifier_like("card 378282246310005") is not None


def _with_check_digit(body: str) -> str:
    """An independent Luhn: the digit that makes ``body`` + digit valid."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


@pytest.mark.parametrize("length", [12, 13, 16, 19, 20])
def test_luhn_lengths_are_thirteen_to_nineteen_digits(length: int) -> None:
    """Card numbers have 13 to 19 digits: a valid check digit outside that range is no card."""
    for body in ("4" + "7" * (length - 2), "5" + "38" * length):
        number = _with_check_digit(body[: length - 1])
        assert len(number) == length
        assert luhn_ok(number) is (13 <= length <= 19)
        assert not luhn_ok(number[:-1] + str((int(number[-1]) + 1) % 10))


def test_the_gate_records_what_each_check_found_and_runs_only_the_checks_asked(tmp_path: Path) -> None:
    """The manifest's gate record states each check's verdict and counts (what `anonymize check`
    and a reviewer read), a refusal names every offending column and pattern, and a run limited
    to some checks runs and records only those."""
    from pipeline import run_report

    users = list(range(1, 81))
    write_source(tmp_path, {"user_id": users, "email": [f"u{u}@x.in" for u in users],
                            "city": ["Pune" if u % 2 else "Agra" for u in users]})
    cfg = load_config(crafted_config(tmp_path, ["city"]))
    rel = run_report(cfg, "r")
    assert rel.manifest["gate"]["passed"] is True
    checks = rel.manifest["gate"]["checks"]
    assert checks["columns"] == {"ok": True, "unexpected": 0}
    assert checks["identifier_values"] == {"ok": True, "columns": []}
    assert checks["patterns"] == {"ok": True, "hits": []}
    assert checks["quasi_identifier"] == {"ok": True, "dimensions": []}
    assert set(rel.manifest["gate"]["seconds"]) >= CHECKS
    table = pa.table({"city": ["x@y.in", "+91 98765 43210"], "users": [40, 40], "rows": [40, 40],
                      "user_id": [3, 4], "email": ["a", "b"]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    with pytest.raises(PrivacyRefusal) as err:
        run_gate(cfg, buf.getvalue(), checks=("columns", "patterns"))
    assert "column(s) 'user_id', 'email' are not declared dimensions or metrics" in str(err.value)
    assert "published values look like identifiers (city: email, city: phone_in, city: phone_intl)" in str(err.value)
    clean = io.BytesIO()
    pq.write_table(table.drop(["user_id", "email"]).slice(0, 0), clean)
    only = run_gate(cfg, clean.getvalue(), checks=("columns",))
    assert only["checks"] == {"columns": {"ok": True, "unexpected": 0}} and set(only["seconds"]) == {"columns"}
