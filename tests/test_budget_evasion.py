"""Attacks on the DP budget (issue 16, DP part): each names the same population differently, resets
the ledger, or publishes it exactly another way, and must be refused (exit 3) with nothing published.

The attacker here only uses the CLI and the file system, as an operator (or a careless job) would;
whether a budget was evaded is judged by what was published and by the ledger's recorded spend,
computed independently of the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pytest

from .conftest import release_dirs, run_cli, write_config

EPS, LIMIT = 1.0, 2.0  # two releases fit the budget, a third does not


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "e.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        con.execute(f"COPY (SELECT i AS user_id, 'c' || (i % 3) AS city FROM range(3000) r(i)) TO '{path}' (FORMAT parquet)")
        con.close()
    return path


def _dp(tmp_path: Path, name: str, source: str, **budget: object) -> Path:
    _data(tmp_path)
    return write_config(tmp_path, f"{name}.yaml", report=name, source={"path": source}, identifiers=["user_id"],
                        filter=None, dimensions=["city"], min_units=5, metrics=[{"name": "n", "agg": "count"}],
                        privacy={"epsilon": EPS, "delta": 1e-6},
                        budget={"ledger": "state/ledger.duckdb", "epsilon_limit": LIMIT, "delta_limit": 1e-4, **budget})


def _threshold(tmp_path: Path, name: str, source: str) -> Path:
    _data(tmp_path)
    return write_config(tmp_path, f"{name}.yaml", report=name, source={"path": source}, identifiers=["user_id"],
                        filter=None, dimensions=["city"], min_units=5, metrics=[{"name": "n", "agg": "count"}])


def _spent_per_source(ledger: Path) -> dict[str, float]:
    """The ledger's recorded spend, read with plain SQL (not through the Ledger class)."""
    con = duckdb.connect(str(ledger), read_only=True)
    rows = con.execute("SELECT source_id, sum(epsilon) FROM entries GROUP BY source_id").fetchall()
    con.close()
    return {s: e for s, e in rows}


def _published(tmp_path: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in release_dirs(tmp_path / "reports")}


@pytest.mark.parametrize("spelling", ["glob", "hard link", "copy", "symlinked folder"])
def test_the_same_file_under_another_spelling_does_not_get_a_fresh_budget(tmp_path: Path, spelling: str) -> None:
    """Two releases exhaust the budget of data/e.parquet; the same bytes named another way are the
    same people and must not start a new budget (the key is the content, not the path)."""
    for run in ("r1", "r2"):
        assert run_cli("run", _dp(tmp_path, "a", "data/e.parquet"), "--run-id", run).exit_code == 0
    assert run_cli("run", _dp(tmp_path, "a", "data/e.parquet"), "--run-id", "r3").exit_code == 3  # exhausted
    other = tmp_path / "other"
    other.mkdir()
    if spelling == "glob":
        source = "data/*.parquet"
    elif spelling == "hard link":
        os.link(tmp_path / "data" / "e.parquet", other / "e.parquet")
        source = "other/e.parquet"
    elif spelling == "copy":
        shutil.copyfile(tmp_path / "data" / "e.parquet", other / "copy.parquet")
        source = "other/copy.parquet"
    else:
        os.symlink(tmp_path / "data", other / "linked")
        source = "other/linked"
    before = _published(tmp_path)
    res = run_cli("run", _dp(tmp_path, "b", source), "--run-id", "r1")
    assert res.exit_code == 3, res.stderr
    assert "already under the budget of source id" in res.stderr and "budget.source_id" in res.stderr
    assert _published(tmp_path) == before
    assert sum(_spent_per_source(tmp_path / "state" / "ledger.duckdb").values()) == pytest.approx(2 * EPS)


def test_naming_the_recorded_source_id_charges_that_budget(tmp_path: Path) -> None:
    """The fix the refusal names works: ``budget.source_id`` set to the recorded id spends from it,
    so the copy gets one release (the budget's rest), then is refused as exhausted."""
    assert run_cli("run", _dp(tmp_path, "a", "data/e.parquet"), "--run-id", "r1").exit_code == 0
    sid = next(iter(_spent_per_source(tmp_path / "state" / "ledger.duckdb")))
    (tmp_path / "copy").mkdir()
    shutil.copyfile(tmp_path / "data" / "e.parquet", tmp_path / "copy" / "e.parquet")
    assert run_cli("run", _dp(tmp_path, "b", "copy/e.parquet", source_id=sid), "--run-id", "r1").exit_code == 0
    res = run_cli("run", _dp(tmp_path, "b", "copy/e.parquet", source_id=sid), "--run-id", "r2")
    assert res.exit_code == 3 and "budget exhausted" in res.stderr
    assert _spent_per_source(tmp_path / "state" / "ledger.duckdb") == {sid: pytest.approx(2 * EPS)}


@pytest.mark.parametrize("attack", ["delete ledger and head", "roll back ledger and head"])
def test_resetting_the_ledger_while_the_secret_remains_is_refused(tmp_path: Path, attack: str) -> None:
    state = tmp_path / "state"
    cfg = _dp(tmp_path, "a", "data/e.parquet")
    assert run_cli("run", cfg, "--run-id", "r1").exit_code == 0
    backup = tmp_path / "backup"
    backup.mkdir()
    for f in ("ledger.duckdb", "ledger.duckdb.head"):
        shutil.copy2(state / f, backup / f)
    assert run_cli("run", cfg, "--run-id", "r2").exit_code == 0
    assert run_cli("run", cfg, "--run-id", "r3").exit_code == 3  # exhausted
    for f in ("ledger.duckdb", "ledger.duckdb.head"):
        (state / f).unlink()
        if attack == "roll back ledger and head":
            shutil.copy2(backup / f, state / f)
    before = _published(tmp_path)
    res = run_cli("run", cfg, "--run-id", "r3")
    assert res.exit_code == 3, res.stderr
    assert "deleted or rolled back" in res.stderr
    assert _published(tmp_path) == before
    assert run_cli("budget", "verify", "--ledger", state / "ledger.duckdb").exit_code == 3


def test_an_exact_release_of_a_dp_budgeted_source_is_refused_unless_the_ledger_allows_it(tmp_path: Path) -> None:
    """A threshold release of the same people publishes exact numbers the DP budget never
    accounted for: refused while the ledger's policy does not allow it, also for a copy of the data."""
    (tmp_path / "copy").mkdir()
    shutil.copyfile(_data(tmp_path), tmp_path / "copy" / "e.parquet")
    # before any DP release, exact releases are the operator's choice
    assert run_cli("run", _threshold(tmp_path, "t", "data/e.parquet"), "--run-id", "before").exit_code == 0
    assert run_cli("run", _dp(tmp_path, "a", "data/e.parquet"), "--run-id", "r1").exit_code == 0
    for source in ("data/e.parquet", "copy/e.parquet"):
        res = run_cli("run", _threshold(tmp_path, "t", source), "--run-id", f"after-{source[0]}")
        assert res.exit_code == 3, res.stderr
        assert "DP budget" in res.stderr and "allow_exact_releases" in res.stderr
    assert _published(tmp_path) == {"a/r1", "t/before"}
    # the DP config allows exact releases (recorded at its next release): the threshold run publishes and says so
    assert run_cli("run", _dp(tmp_path, "a", "data/e.parquet", allow_exact_releases=True), "--run-id", "r2").exit_code == 0
    res = run_cli("run", _threshold(tmp_path, "t", "data/e.parquet"), "--run-id", "after")
    assert res.exit_code == 0, res.stderr
    manifest = json.loads((tmp_path / "reports" / "t" / "after" / "manifest.json").read_text())
    assert manifest["privacy"]["dp_budgeted_source"][0]["policy"] == "allow_exact_releases: true"
    dp_manifest = json.loads((tmp_path / "reports" / "a" / "r2" / "manifest.json").read_text())
    assert dp_manifest["budget"]["exact_releases"].startswith("allowed")


def test_a_foreign_duckdb_file_as_the_ledger_is_refused_and_left_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "state" / "ledger.duckdb"
    foreign.parent.mkdir(parents=True)
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE entries AS SELECT 1 AS id, 'x' AS note")
    con.close()
    before = foreign.read_bytes()
    res = run_cli("run", _dp(tmp_path, "a", "data/e.parquet"), "--run-id", "r1")
    assert res.exit_code == 3, res.stderr
    assert "not a privacy-budget ledger" in res.stderr and "Binder" not in res.stderr
    assert foreign.read_bytes() == before and _published(tmp_path) == set()
    # another tool's database with other tables is refused the same way (nothing created in it)
    foreign.unlink()
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE orders AS SELECT 1 AS id")
    con.close()
    res = run_cli("run", _dp(tmp_path, "a", "data/e.parquet"), "--run-id", "r1")
    assert res.exit_code == 3 and "table orders" in res.stderr
    con = duckdb.connect(str(foreign), read_only=True)
    assert [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()] == ["orders"]
    con.close()


def test_a_ledger_from_before_the_secret_recorded_its_state_is_upgraded_then_protected(tmp_path: Path) -> None:
    """Ledgers written by earlier versions (no content digests, a bare 32-byte secret) still verify;
    the first verification records the state in the secret, after which a reset is refused."""
    from pipeline.state.ledger import Ledger

    path = tmp_path / "state" / "old.duckdb"
    old = Ledger(path)
    fields = {"source_id": "s", "report": "r", "run_id": "1", "epsilon": 1.0, "delta": 0.0,
              "source_fingerprint": "f", "config_hash": "c", "report_sha256": "x"}
    with old.locked():
        old.record(fields, {})
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE entries DROP COLUMN content_digests")
    con.close()
    secret = path.with_name("old.duckdb.secret")
    secret.write_bytes(secret.read_bytes()[:32])
    assert Ledger(path).verify() == 1
    assert len(secret.read_bytes()) > 32  # the state is recorded now
    path.unlink()
    path.with_name("old.duckdb.head").unlink()
    with pytest.raises(Exception, match="deleted or rolled back"):
        Ledger(path).verify()
