"""Difference checks across threshold releases, on data crafted to trigger them."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline import load_config, run_report

from ..conftest import write_config


def make_source(path: Path, extra_users_in_x: int, *, city_c_users: int = 0) -> Path:
    """Cell (A, pumps) has 60 users (+extra); (A, tiles) 80 users; city C adds users to pumps."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (city VARCHAR, category VARCHAR, user_id BIGINT)")
    con.execute(f"INSERT INTO t SELECT 'A', 'pumps', i FROM range({60 + extra_users_in_x}) r(i)")
    con.execute("INSERT INTO t SELECT 'A', 'tiles', 1000 + i FROM range(80) r(i)")
    if city_c_users:
        con.execute(f"INSERT INTO t SELECT 'C', 'pumps', 5000 + i FROM range({city_c_users}) r(i)")
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    return path


def cfg_for(folder: Path, src: str, name: str = "r.yaml", **kw) -> Path:
    base = dict(source={"path": src}, identifiers=["user_id"], filter=None, dimensions=["category"],
                metrics=[{"name": "n", "agg": "count_units"}], min_units=10, history="state/history.duckdb",
                budget=None)
    base.update(kw)
    return write_config(folder, name, **base)


def test_a_new_file_name_is_compared_with_the_old_one(tmp_path: Path) -> None:
    """Every release in the history is compared, whatever its source id: yesterday's file and
    today's file are the same population under two names (issue 16)."""
    (tmp_path / "data").mkdir()
    make_source(tmp_path / "data" / "day1.parquet", 0)
    make_source(tmp_path / "data" / "day2.parquet", 1)
    r1 = run_report(load_config(cfg_for(tmp_path, "data/day1.parquet", source={"path": "data/day1.parquet"})), "d1")
    assert sorted(r1.table["category"]) == ["pumps", "tiles"]
    cfg2 = load_config(cfg_for(tmp_path, "data/day2.parquet")).with_overrides(source={"path": "data/day2.parquet"})
    r2 = run_report(cfg2, "d2")
    assert sorted(r2.table["category"]) == ["tiles"]  # pumps minus yesterday's pumps = the newcomer
    assert r2.internal["cells"]["suppressed_difference"] == 1


def test_difference_check_suppresses_cell_differing_by_few_units(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    make_source(src, 0)
    cfg = load_config(cfg_for(tmp_path, "data/events.parquet"))
    r1 = run_report(cfg, "day1")
    assert sorted(r1.table["category"]) == ["pumps", "tiles"]
    make_source(src, 1)  # the next day one more person appears in pumps
    r2 = run_report(cfg, "day2")
    assert list(r2.table["category"]) == ["tiles"]  # pumps would reveal the new person
    assert r2.internal["cells"]["suppressed_difference"] == 1
    # a rerun of day2 is byte-identical (it is not compared with itself)
    before = r2.report_path.read_bytes()
    assert run_report(cfg, "day2").report_path.read_bytes() == before
    make_source(src, 15)  # 15 new people: a difference of >= min_units is fine
    r3 = run_report(cfg, "day3")
    assert sorted(r3.table["category"]) == ["pumps", "tiles"]


def test_filter_adding_a_city_is_caught(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    make_source(tmp_path / "data" / "events.parquet", 0, city_c_users=2)
    narrow = load_config(cfg_for(tmp_path, "data/events.parquet", "narrow.yaml", report="narrow", filter={"city": ["A"]}))
    wide = load_config(cfg_for(tmp_path, "data/events.parquet", "wide.yaml", report="wide", filter={"city": ["A", "C"]}))
    assert sorted(run_report(narrow, "1").table["category"]) == ["pumps", "tiles"]
    t = run_report(wide, "1").table
    assert list(t["category"]) == ["tiles"]  # pumps differs from narrow's pumps by the 2 people of city C


def test_history_holds_no_identifiers(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    make_source(tmp_path / "data" / "events.parquet", 0)
    run_report(load_config(cfg_for(tmp_path, "data/events.parquet")), "x")
    hist = tmp_path / "state" / "history.duckdb"
    con = duckdb.connect(str(hist), read_only=True)
    hashes = {r[0] for r in con.execute("SELECT uh FROM cell_units").fetchall()}
    assert len(hashes) == 140
    ids = {str(i) for i in list(range(60)) + list(range(1000, 1080))}
    assert not hashes & ids and all(len(h) == 16 for h in hashes)
    assert (tmp_path / "state" / "history.duckdb.secret").stat().st_mode & 0o777 == 0o600


def test_difference_check_can_be_turned_off(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    make_source(src, 0)
    cfg = load_config(cfg_for(tmp_path, "data/events.parquet", difference_check=False))
    run_report(cfg, "a")
    make_source(src, 1)
    r = run_report(cfg, "b")
    assert sorted(r.table["category"]) == ["pumps", "tiles"]
    assert not (tmp_path / "state" / "history.duckdb").exists()
    assert "off" in r.manifest["privacy"]["difference_check"]
