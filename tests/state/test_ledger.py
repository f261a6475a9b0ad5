"""The ledger's own guarantees, through its API: what is recorded is what comes back, and each kind
of tampering is refused with its own reason (so an operator knows what happened)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from pipeline.errors import LedgerError, PrivacyRefusal
from pipeline.state.ledger import GENESIS, Ledger, format_spend


def _fields(run: str, eps: float = 0.5, rho: float | None = None, **extra: object) -> dict:
    return {"source_id": "src", "report": "r", "run_id": run, "epsilon": eps, "delta": 1e-7, "rho": rho,
            "source_fingerprint": "fp", "config_hash": "ch", "report_sha256": f"sha-{run}", **extra}


def _ledger(tmp_path: Path, runs: int = 3) -> Ledger:
    led = Ledger(tmp_path / "state" / "l.duckdb")
    with led.locked():
        for i in range(runs):
            led.record(_fields(f"run{i}", rho=None if i % 2 else 0.01 * (i + 1)), {"report.parquet": bytes([i]) * 10})
    return led


def test_what_is_recorded_comes_back(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC)
    led = _ledger(tmp_path)
    after = dt.datetime.now(dt.UTC)
    with led.locked():
        entries = led.entries()
        assert [e.seq for e in entries] == [1, 2, 3]
        assert entries[0].prev_hash == GENESIS and entries[1].prev_hash == entries[0].entry_hash
        assert [e.run_id for e in entries] == ["run0", "run1", "run2"]
        assert [e.rho for e in entries] == [0.01, None, 0.03] and entries[0].mode == "dp"
        assert all(e.epsilon == 0.5 and e.delta == 1e-7 and e.report_sha256 == f"sha-{e.run_id}" for e in entries)
        for e in entries:
            t = dt.datetime.strptime(e.created_utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
            assert before <= t <= after  # the time of recording, in UTC
            assert led.files(e.seq) == {"report.parquet": bytes([e.seq - 1]) * 10}
        assert led.files(99) == {}
        assert led.find("src", "r", "run1").seq == 2 and led.find("src", "r", "nope") is None
        assert led.spent("src") == pytest.approx((1.5, 3e-7, 0.04)) and led.spent("other") == (0.0, 0.0, 0.0)
        assert led.verify() == 3


def test_budget_check_refuses_past_either_limit(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    with led.locked():
        view = led.check_budget("src", 0.5, 1e-7, {"epsilon_limit": 2.0, "delta_limit": 1e-6})
        assert view["epsilon_spent_before"] == pytest.approx(1.5) and view["delta_spent_before"] == pytest.approx(3e-7)
        with pytest.raises(PrivacyRefusal, match="spent ε=1.5, this release needs ε=0.6"):
            led.check_budget("src", 0.6, 1e-7, {"epsilon_limit": 2.0, "delta_limit": 1e-6})
        with pytest.raises(PrivacyRefusal, match="δ"):
            led.check_budget("src", 0.1, 8e-7, {"epsilon_limit": 2.0, "delta_limit": 1e-6})


def test_spend_summary(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    rows = led.spend({"epsilon_limit": 2.0, "delta_limit": 1e-6})
    assert len(rows) == 1 and rows[0]["releases"] == 3
    assert rows[0]["epsilon_spent"] == pytest.approx(1.5) and rows[0]["epsilon_left"] == pytest.approx(0.5)
    assert rows[0]["rho_spent"] == pytest.approx(0.04) and rows[0]["last_release"].startswith("r/run2 at ")
    text = format_spend(rows, led.path)
    assert "src: 3 release(s), ε spent 1.5" in text and "left ε 0.5 of 2" in text and "last: r/run2" in text
    assert format_spend([], led.path).endswith("no releases recorded")


def _sql(led: Ledger, sql: str) -> None:
    con = duckdb.connect(str(led.path))
    con.execute(sql)
    con.close()


@pytest.mark.parametrize(("attack", "reason"), [
    ("UPDATE entries SET epsilon = 0.01 WHERE seq = 2", "entry 2 was edited"),
    ("DELETE FROM entries WHERE seq = 2", "entry 2 is missing or out of order"),
    ("UPDATE entries SET seq = 9 WHERE seq = 1", "entry 1 is missing or out of order"),
    ("UPDATE entries SET mac = repeat('0', 64) WHERE seq = 3", "entry 3 has an invalid MAC"),
    ("UPDATE entries SET prev_hash = repeat('1', 64) WHERE seq = 2", "entry 2 does not follow entry 1"),
])
def test_each_kind_of_tampering_is_refused_with_its_reason(tmp_path: Path, attack: str, reason: str) -> None:
    led = _ledger(tmp_path)
    _sql(led, attack)
    with pytest.raises(LedgerError, match=reason):
        Ledger(led.path).verify()


def test_head_file_tampering(tmp_path: Path) -> None:
    led = _ledger(tmp_path)
    head = json.loads(led.head_path.read_text())
    led.head_path.write_text(json.dumps({**head, "seq": 2}))  # MAC no longer matches
    with pytest.raises(LedgerError, match="invalid MAC"):
        Ledger(led.path).verify()
    led.head_path.write_text("not json")
    with pytest.raises(LedgerError, match="unreadable"):
        Ledger(led.path).verify()


def test_a_lost_head_is_brought_forward_from_the_entries(tmp_path: Path) -> None:
    """A process that died after committing an entry but before writing the head leaves the head
    behind: entries only add spend, so verification brings it forward."""
    led = _ledger(tmp_path)
    led.head_path.unlink()
    assert Ledger(led.path).verify() == 3
    head = json.loads(led.head_path.read_text())
    with led.locked():
        assert head["seq"] == 3 and head["entry_hash"] == led.entries()[-1].entry_hash


def test_access_without_the_lock_is_a_programming_error(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.duckdb")
    with pytest.raises(RuntimeError, match="without holding its lock"):
        led.secret()


def test_records_that_disagree_with_the_entries_are_refused(tmp_path: Path) -> None:
    """A head or a secret record naming another entry hash (a ledger swapped for another with the
    same number of entries) is refused."""
    import dataclasses

    led = _ledger(tmp_path)
    with led.locked():
        good = led.entries()
        led._write_head(dataclasses.replace(good[1], entry_hash="0" * 64))
    with pytest.raises(LedgerError, match="entry 2 does not match the head record"):
        Ledger(led.path).verify()
    with led.locked():
        led._write_head(good[-1])
        led._commit(dataclasses.replace(good[-1], entry_hash="0" * 64))
    with pytest.raises(LedgerError, match="entry 3 does not match the secret's record"):
        Ledger(led.path).verify()
