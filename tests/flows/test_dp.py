"""DP mode with real OpenDP and real DuckDB: bounding, selection, noise scale, ledger, reruns, races."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

from pipeline import load_config, run_report
from pipeline.errors import LedgerError, PrivacyRefusal
from pipeline.privacy.budget import level_budget
from pipeline.privacy.mechanisms import add_noise, selection_mechanism, vector_mechanism
from pipeline.privacy.rules import publication_threshold
from pipeline.state.ledger import Ledger

from ..conftest import parquet_from_sql, release_dirs, run_cli, write_config

PRIVACY = {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 2, "max_rows_per_group": 3, "noise": "laplace"}


def budget(limit: float = 100.0) -> dict:
    return {"ledger": "state/ledger.duckdb", "epsilon_limit": limit, "delta_limit": 1e-3}


def crafted(path: Path, *, heavy_rows: int = 0, tiny_cells: int = 50) -> Path:
    """Cell 'big' has 3000 users with 1 row each; `tiny_cells` cells with 1-5 users each;
    optionally one heavy user with `heavy_rows` rows in 'big'."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (city VARCHAR, user_id BIGINT, amount DOUBLE)")
    con.execute("INSERT INTO t SELECT 'big', i, 10.0 FROM range(3000) r(i)")
    for c in range(tiny_cells):
        n = 1 + c % 5
        con.execute(f"INSERT INTO t SELECT 'tiny{c}', 100000 + {c} * 10 + i, 5.0 FROM range({n}) r(i)")
    if heavy_rows:
        con.execute(f"INSERT INTO t SELECT 'big', 999999, 10.0 FROM range({heavy_rows})")
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    return path


def dp_config(folder: Path, src: str, **kw) -> Path:
    if (kw.get("privacy") or {}).get("public_partitions"):
        kw.setdefault("min_units", None)  # listed cells are published whatever their size: no k
    base = dict(
        source={"path": src}, identifiers=["user_id"], filter=None, dimensions=["city"], min_units=2,
        metrics=[{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"},
                 {"name": "amount", "agg": "sum", "column": "amount", "bounds": [0, 10]}],
        privacy=PRIVACY, budget=budget(),
    )
    base.update(kw)
    return write_config(folder, **base)


@pytest.fixture
def dp_project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    crafted(tmp_path / "data" / "c.parquet")
    return tmp_path


def test_dp_release_and_ledger(dp_project: Path) -> None:
    res = run_cli("run", dp_config(dp_project, "data/c.parquet"), "--run-id", "d1")
    assert res.exit_code == 0, res.stderr
    rel = dp_project / "reports" / "t_report" / "d1"
    m = json.loads((rel / "manifest.json").read_text())
    assert m["mode"] == "dp" and m["privacy"]["epsilon_spent"] <= 1.0 + 1e-9
    assert m["privacy"]["delta_spent"] <= 1e-6
    t = duckdb.sql(f"SELECT * FROM '{rel / 'report.parquet'}'").df()
    assert list(t["city"]) == ["big"]  # tiny cells (1-5 units) are not published
    assert set(t.columns) == {"city", "rows", "rows_ci95", "units", "units_ci95", "amount", "amount_ci95"}
    entries = Ledger(dp_project / "state" / "ledger.duckdb").entries()
    assert len(entries) == 1 and entries[0].run_id == "d1"
    assert entries[0].report_sha256 == m["report_file"]["sha256"]
    shown = run_cli("budget", "show", "--ledger", dp_project / "state" / "ledger.duckdb")
    assert shown.exit_code == 0 and "1 release" in shown.output
    # exact counts are not DP: withheld from the release, kept with the ledger entry
    assert set(m["rows"]) == {"withheld"} and set(m["cells"]) == {"cells_published", "withheld"}
    assert all(set(f) == {"path"} for f in m["source"]["files"])
    assert not (rel / "internal.json").exists()
    internal = json.loads(Ledger(dp_project / "state" / "ledger.duckdb").files(1)["internal.json"])
    assert internal["rows"]["rows_aggregated"] == 3000 + sum(1 + c % 5 for c in range(50))
    secret = dp_project / "state" / "ledger.duckdb.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_bytes().hex() not in (rel / "manifest.json").read_text()


def test_tiny_cells_never_published_over_many_runs(tmp_path: Path) -> None:
    """Cells with 1-5 units: partition selection must never release them over many runs.

    delta bounds the release of a cell going from 0 to 1 unit; a 5-unit cell is released with
    probability P(Z >= T - 5), larger. At delta = 1e-6 the 50,000 draws below expected 0.05
    releases (the test failed ~5% of runs, OpenDP cannot be seeded); at delta = 1e-9 the
    expectation, computed below from the discrete Laplace tail, is under 1e-4.
    """
    import math

    cfg = load_config(dp_config(tmp_path, "data/c.parquet", privacy={**PRIVACY, "delta": 1e-9}))
    plan = level_budget(cfg)
    sel = plan.selection
    assert sel is not None and sel.threshold is not None and sel.threshold > 5
    b, t = sel.scale, publication_threshold(sel, cfg.min_units)  # the pipeline's own rule
    expected = 200 * 50 * sum(math.exp(-(t - u) / b) / (1 + math.exp(-1 / b)) for u in range(1, 6))
    assert expected < 1e-4
    # 200 runs x 250 tiny cells through the real OpenDP sampler
    units = np.tile(np.array([1, 2, 3, 4, 5], dtype=np.int64), 50)
    released = 0
    for _ in range(200):
        released += int((add_noise(units, sel) >= t).sum())
    assert released == 0


def test_tiny_cells_absent_across_seeded_pipeline_runs(dp_project: Path) -> None:
    cfg = load_config(dp_config(dp_project, "data/c.parquet"))
    for i in range(6):
        rel = run_report(cfg, f"s{i}")
        assert set(rel.table["city"]) <= {"big"}


def test_heavy_user_moves_count_by_at_most_linf(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    crafted(tmp_path / "data" / "with.parquet", heavy_rows=100_000)
    crafted(tmp_path / "data" / "without.parquet")
    # bounded (pre-noise) aggregates, computed by the pipeline's bounding SQL
    from pipeline.engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql
    from pipeline.engines.duckdb.connection import connect
    from pipeline.engines.duckdb.sources import open_source

    def bounded(src: str) -> tuple[int, int, float]:
        cfg = load_config(dp_config(tmp_path, src))
        con = connect(cfg)
        source = open_source(con, cfg)
        con.execute(*_q(dp_pairs_sql(cfg, source.schema, 42, public=False)))
        for q in dp_cells_sql(cfg, 43):
            con.execute(*_q(q))
        return con.execute("SELECT __units, __rows, CAST(__s2 AS DOUBLE) FROM __dp_cells WHERE __d0 = 'big'").fetchone()

    u1, r1, s1 = bounded("data/with.parquet")
    u0, r0, s0 = bounded("data/without.parquet")
    assert u1 - u0 == 1
    assert r1 - r0 == PRIVACY["max_rows_per_group"]  # 100,000 rows count as at most Linf
    assert s1 - s0 == pytest.approx(PRIVACY["max_rows_per_group"] * 10.0)
    # and the released count moves by at most Linf plus noise: |Z| > b·ln(1e6) has probability
    # ~1e-6 (OpenDP cannot be seeded, so the bound must make a false failure negligible); an
    # unbounded heavy user would move it by 100,000, far beyond b·ln(1e6) ≈ 250
    cfg = load_config(dp_config(tmp_path, "data/with.parquet"))
    scale = level_budget(cfg).metrics["rows"]["count"].scale
    rel = run_report(cfg, "h")
    released = int(rel.table.set_index("city").loc["big", "rows"])
    assert abs(released - r0) <= PRIVACY["max_rows_per_group"] + scale * np.log(1e6)


def _q(q):  # Query -> execute args
    return (q.sql, list(q.params)) if q.params else (q.sql,)


def test_noise_scale_matches_epsilon() -> None:
    """Empirical spread of OpenDP Laplace noise agrees with the theoretical scale (fixed tolerance)."""
    mech = vector_mechanism("c", "laplace", integer=True, sensitivity=4, scale=8.0)
    assert mech.epsilon == pytest.approx(0.5)
    draws = add_noise(np.full(40_000, 1000, dtype=np.int64), mech) - 1000
    # Laplace(b): mean |X| = b; discrete Laplace is slightly smaller in spread; 5% tolerance
    assert np.mean(np.abs(draws)) == pytest.approx(8.0, rel=0.05)
    assert abs(np.mean(draws)) < 0.3
    g = vector_mechanism("g", "gaussian", integer=False, sensitivity=1.0, scale=5.0)
    assert g.rho == pytest.approx(1 / 50)
    gd = add_noise(np.zeros(20_000), g)
    assert np.std(gd) == pytest.approx(5.0, rel=0.05)


def test_noise_keeps_cell_order_across_chunks_and_refuses_non_finite() -> None:
    """Chunked, threaded sampling returns each cell's own value plus noise, in input order."""
    from pipeline.errors import ReleaseError
    from pipeline.privacy.mechanisms import CHUNK

    n = 2 * CHUNK + 123  # several chunks on every worker count
    mech = vector_mechanism("c", "laplace", integer=True, sensitivity=1, scale=1.0)
    true = np.arange(n, dtype=np.int64) * 1000  # cells 1000 apart; |Laplace(1)| > 400 has prob ~e^-400
    out = add_noise(true, mech)
    assert out.dtype == np.int64 and len(out) == n
    assert np.abs(out - true).max() < 400
    assert np.count_nonzero(out != true) > n // 4  # noise was added (P(0) for scale 1 is ~0.46)
    f = vector_mechanism("s", "laplace", integer=False, sensitivity=1.0, scale=1.0)
    with pytest.raises(ReleaseError, match="non-finite"):
        add_noise(np.array([1.0, np.nan]), f)
    with pytest.raises(ReleaseError, match="non-finite"):
        add_noise(np.array([np.inf]), f)


def test_selection_threshold_is_smallest_meeting_delta() -> None:
    from pipeline.privacy.mechanisms import threshold_loss

    sel = selection_mechanism("laplace", l0=3, budget=0.5, delta=1e-6)
    assert sel.delta <= 1e-6
    assert threshold_loss("laplace", sel.scale, sel.threshold - 1, 3)[1] > 1e-6
    assert sel.epsilon == pytest.approx(0.5)


def test_budget_exhaustion_refuses_and_rerun_is_free(dp_project: Path) -> None:
    cfg_path = dp_config(dp_project, "data/c.parquet", budget=budget(limit=2.0))
    assert run_cli("run", cfg_path, "--run-id", "a").exit_code == 0
    assert run_cli("run", cfg_path, "--run-id", "b").exit_code == 0
    before = (dp_project / "reports" / "t_report" / "a" / "report.parquet").read_bytes()
    res = run_cli("run", cfg_path, "--run-id", "c")
    assert res.exit_code == 3 and "budget exhausted" in res.stderr
    assert not (dp_project / "reports" / "t_report" / "c").exists()
    assert not list((dp_project / "reports").rglob(".staging-*"))
    again = run_cli("run", cfg_path, "--run-id", "a")  # a retried job: same bytes, no spend
    assert again.exit_code == 0 and "already published" in again.output
    assert (dp_project / "reports" / "t_report" / "a" / "report.parquet").read_bytes() == before
    led = Ledger(dp_project / "state" / "ledger.duckdb")
    assert len(led.entries()) == 2
    # the visible copy was deleted: the rerun restores the recorded bytes, still without spending
    import shutil

    shutil.rmtree(dp_project / "reports" / "t_report" / "a")
    res = run_cli("run", cfg_path, "--run-id", "a")
    assert res.exit_code == 0 and "restored" in res.output
    assert not (dp_project / "reports" / "t_report" / "a" / "internal.json").exists()
    assert (dp_project / "reports" / "t_report" / "a" / "report.parquet").read_bytes() == before
    assert len(led.entries()) == 2


def test_public_partitions_publish_every_listed_cell(dp_project: Path) -> None:
    (dp_project / "data" / "public.csv").write_text("city\nbig\ntiny1\nnowhere\n")
    cfg = dp_config(dp_project, "data/c.parquet", privacy={**PRIVACY, "public_partitions": "data/public.csv"})
    rel = run_report(load_config(cfg), "p")
    assert sorted(rel.table["city"]) == ["big", "nowhere", "tiny1"]
    assert rel.manifest["privacy"]["selection"] is None
    assert (rel.table["rows"] >= 0).all()


def test_dp_margins_are_published_with_levels(dp_project: Path) -> None:
    (dp_project / "data" / "public.csv").write_text("city\nbig\ntiny1\n")
    cfg = load_config(dp_config(dp_project, "data/c.parquet", totals=[[]]))
    rel = run_report(cfg, "m")
    t = rel.table
    assert set(t["level"]) == {"cell", "total"}
    total = t[t["level"] == "total"]
    assert len(total) == 1 and total["city"].isna().all()
    m = rel.manifest["privacy"]
    assert set(m["levels"]) == {"cell", "total"} and m["epsilon_spent"] <= 1.0 + 1e-9
    # the grand total counts every bounded unit: 3000 in 'big' + 150 in tiny cells, plus noise
    assert abs(int(total["units"].iloc[0]) - 3150) < 200
    # public partitions with margins: listed cells and their projections, empty or not
    cfg2 = load_config(dp_config(dp_project, "data/c.parquet", totals=[[]],
                                 privacy={**PRIVACY, "public_partitions": "data/public.csv"}))
    t2 = run_report(cfg2, "mp").table
    assert sorted(t2[t2["level"] == "cell"]["city"]) == ["big", "tiny1"] and (t2["level"] == "total").sum() == 1


def test_gaussian_mode_spends_within_budget(dp_project: Path) -> None:
    cfg = load_config(dp_config(dp_project, "data/c.parquet", privacy={**PRIVACY, "noise": "gaussian"}))
    plan = level_budget(cfg)
    assert plan.epsilon <= 1.0 + 1e-9 and plan.delta <= 1e-6 * (1 + 1e-9) and plan.rho > 0
    rel = run_report(cfg, "g")
    assert list(rel.table["city"]) == ["big"]


def test_tampered_ledger_refuses(dp_project: Path) -> None:
    cfg_path = dp_config(dp_project, "data/c.parquet")
    assert run_cli("run", cfg_path, "--run-id", "a").exit_code == 0
    assert run_cli("run", cfg_path, "--run-id", "b").exit_code == 0
    path = dp_project / "state" / "ledger.duckdb"
    con = duckdb.connect(str(path))
    con.execute("UPDATE entries SET epsilon = 0.01 WHERE seq = 1")  # an attacker lowers the spend
    con.close()
    with pytest.raises(LedgerError, match="edited"):
        Ledger(path).verify()
    res = run_cli("run", cfg_path, "--run-id", "c")
    assert res.exit_code == 3 and "tampered" in res.stderr
    assert not (dp_project / "reports" / "t_report" / "c").exists()
    assert run_cli("budget", "verify", "--ledger", path).exit_code == 3


def test_deleted_tail_entry_is_detected(dp_project: Path) -> None:
    cfg_path = dp_config(dp_project, "data/c.parquet")
    for r in ("a", "b"):
        assert run_cli("run", cfg_path, "--run-id", r).exit_code == 0
    path = dp_project / "state" / "ledger.duckdb"
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM entries WHERE seq = 2")
    con.close()
    with pytest.raises(LedgerError, match="deleted"):
        Ledger(path).verify()


def _run_proc(cfg: Path, run_id: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--run-id", run_id, "-q"],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )


def test_racing_processes_never_overspend(dp_project: Path) -> None:
    cfg_path = dp_config(dp_project, "data/c.parquet", budget=budget(limit=2.0))
    procs = [
        subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg_path), "--run-id", f"r{i}", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    assert sorted(codes) == [0, 0, 3, 3], [p.stderr.read() for p in procs]
    led = Ledger(dp_project / "state" / "ledger.duckdb")
    assert led.verify() == 2
    assert sum(e.epsilon for e in led.entries()) <= 2.0 + 1e-9
    assert len(release_dirs(dp_project / "reports")) == 2


def test_same_run_id_racing_publishes_once(dp_project: Path) -> None:
    cfg_path = dp_config(dp_project, "data/c.parquet")
    procs = [
        subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg_path), "--run-id", "same", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert len(Ledger(dp_project / "state" / "ledger.duckdb").entries()) == 1


@pytest.mark.parametrize("stage", ["load", "bounding", "noise", "gate", "staged", "ledger.before_commit",
                                   "ledger.committed", "ledger.recorded", "published"])
def test_kill_at_each_stage_then_retry(dp_project: Path, stage: str) -> None:
    cfg_path = dp_config(dp_project, "data/c.parquet")
    killed = _run_proc(cfg_path, "k", env={"ANONYMIZE_FAULT_AT": stage})
    assert killed.returncode == -9, killed.stderr
    led = Ledger(dp_project / "state" / "ledger.duckdb")
    n_before = led.verify() if led.path.exists() else 0
    final = dp_project / "reports" / "t_report" / "k"
    # nothing half-written is visible
    assert not final.exists() or (final / "report.parquet").is_file()
    retry = _run_proc(cfg_path, "k")
    assert retry.returncode == 0, retry.stderr
    assert (final / "report.parquet").is_file()
    entries = led.entries()
    assert len(entries) == 1 and n_before <= 1  # spent exactly once
    assert entries[0].report_sha256 == json.loads((final / "manifest.json").read_text())["report_file"]["sha256"]
    assert led.verify() == 1
    assert not list((dp_project / "reports").rglob(".staging-*")) or all(
        p.name.endswith(f"p{os.getpid()}") for p in (dp_project / "reports").rglob(".staging-*"))


def test_refused_run_writes_nothing_through_api(dp_project: Path) -> None:
    cfg = load_config(dp_config(dp_project, "data/c.parquet", budget=budget(limit=1.0)))
    run_report(cfg, "one")
    with pytest.raises(PrivacyRefusal, match="privacy budget exhausted"):
        run_report(cfg, "two")
    assert [p.name for p in release_dirs(dp_project / "reports")] == ["one"]


@pytest.mark.parametrize("name", ["online_retail_dp", "demo_dp"])
def test_shipped_dp_configs_publish(name: str, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / f"{name}.yaml")
    overrides = {"budget": {"ledger": str(tmp_path / "ledger.duckdb")}}
    if name == "demo_dp":
        from pipeline.generate import generate_events

        src = generate_events(tmp_path / "data" / "demo.parquet", rows=100_000, users=10_000, seed=7)
        overrides["source"] = {"path": str(src)}
    rel = run_report(cfg.with_overrides(**overrides), "t", output_dir=tmp_path / "out")
    assert rel.manifest["privacy"]["epsilon_spent"] <= cfg.privacy.epsilon * (1 + 1e-9)
    assert len(Ledger(tmp_path / "ledger.duckdb").entries()) == 1
    if name == "online_retail_dp":  # public partitions: every listed country is published
        listed = (root / "configs" / "online_retail_countries.csv").read_text().split("\n")[1:]
        assert sorted(rel.table["country"]) == sorted(c for c in listed if c)


def test_released_count_spread_matches_configured_epsilon(dp_project: Path) -> None:
    """Released counts (the real release code path, repeated) spread as the configured ε implies."""
    from pipeline.engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql
    from pipeline.engines.duckdb.connection import connect
    from pipeline.engines.duckdb.public import load_public_partitions
    from pipeline.engines.duckdb.sources import open_source
    from pipeline.flows.dp import noisy_table
    from pipeline.privacy.budget import budget_split

    (dp_project / "data" / "public.csv").write_text("city\nbig\n")
    cfg = load_config(dp_config(dp_project, "data/c.parquet", privacy={**PRIVACY, "public_partitions": "data/public.csv"}))
    plan = budget_split(cfg)
    con = connect(cfg)
    source = open_source(con, cfg)
    load_public_partitions(cfg, con, source)
    con.execute(*_q(dp_pairs_sql(cfg, source.schema, 1, public=True)))
    for q in dp_cells_sql(cfg, 2):
        con.execute(*_q(q))
    true_rows = 3000  # one row per user in 'big', far below the Linf bound
    n = 1200
    draws = np.array([int(noisy_table(cfg, con, plan)[0].column("rows")[0].as_py()) - true_rows for _ in range(n)])
    # ε for 'rows' = ε / 3 metrics; L1 = g·r = 6  →  b = 6 / (1/3) = 18; E|X| = b for Laplace
    b = plan.levels[0][1].metrics["rows"]["count"].scale
    assert b == pytest.approx(2 * 3 / (1.0 / 3))
    # |X| is exponential with mean b and sd b: 12% is 4.2 standard errors at n = 1200 (OpenDP
    # cannot be seeded, so the tolerance must make a false failure negligible, ~3e-5)
    assert np.mean(np.abs(draws)) == pytest.approx(b, rel=0.12)
    assert abs(np.mean(draws)) < 5 * b * np.sqrt(2) / np.sqrt(n)  # unbiased: centred on the true count


def test_budget_weights_split_the_metrics_budget(dp_project: Path) -> None:
    """Weights move budget between metrics; the release's total ε stays the configured ε."""
    metrics = [{"name": "rows", "agg": "count", "budget_weight": 3}, {"name": "units", "agg": "count_units"},
               {"name": "amount", "agg": "sum", "column": "amount", "bounds": [0, 10]},
               {"name": "avg", "agg": "mean", "column": "amount", "bounds": [0, 10], "budget_weight": 0.5}]
    cfg = load_config(dp_config(dp_project, "data/c.parquet", metrics=metrics))
    plan = level_budget(cfg)
    equal = level_budget(load_config(dp_config(dp_project, "data/c.parquet")))
    # selection (and unit counts) keep half of ε = 1; the other half splits 3 : 1 : 0.5
    assert plan.selection.scale == equal.selection.scale
    rows, amount = plan.metrics["rows"]["count"], plan.metrics["amount"]["sum"]
    g, r = PRIVACY["max_groups_per_unit"], PRIVACY["max_rows_per_group"]
    assert rows.epsilon == pytest.approx(0.5 * 3 / 4.5) and amount.epsilon == pytest.approx(0.5 / 4.5)
    assert sum(x.epsilon for x in plan.metrics["avg"].values()) == pytest.approx(0.5 * 0.5 / 4.5)
    assert rows.scale == pytest.approx(g * r / (0.5 * 3 / 4.5))
    assert amount.scale == pytest.approx(g * r * 10 / (0.5 / 4.5))
    assert plan.epsilon == pytest.approx(1.0) and equal.epsilon == pytest.approx(1.0)
    # the release records the split it used; a mean's error is per cell (its *_ci95 column)
    rel = run_report(cfg, "w")
    mechs = rel.manifest["privacy"]["metrics"]
    assert mechs["rows"]["scale"] == pytest.approx(rows.scale)
    assert mechs["rows"]["mechanisms"]["count"]["epsilon"] == pytest.approx(0.5 * 3 / 4.5)
    assert mechs["avg"]["scale"] is None and mechs["avg"]["ci95"] == "per cell: column avg_ci95"
    assert "avg_ci95" in rel.table.columns


def test_consistent_margins_add_up(dp_project: Path) -> None:
    (dp_project / "data" / "public.csv").write_text("city\nbig\ntiny1\ntiny2\nnowhere\n")
    cfg = load_config(dp_config(dp_project, "data/c.parquet", totals=[[]], consistent=True,
                                privacy={**PRIVACY, "public_partitions": "data/public.csv"}))
    t = run_report(cfg, "c").table
    cells, total = t[t["level"] == "cell"], t[t["level"] == "total"]
    for metric in ("rows", "amount"):
        assert float(cells[metric].astype(float).sum()) == pytest.approx(float(total[metric].iloc[0]), abs=1e-6)
    # distinct-unit counts are not additive and are left alone
    assert t["units"].dtype.kind in "iu" or str(t["units"].dtype).startswith("int")
    with pytest.raises(Exception, match="consistent"):
        load_config(dp_config(dp_project, "data/c.parquet", consistent=True))


def _keyed_l0_reference(seed: int, pairs: list[tuple[str, int]], g: int) -> dict[str, int]:
    """The documented L0 rule, written out in Python from its definition (not from the SQL): a unit
    keeps its ``g`` cells with the smallest ``((a1·c1 + b1) mod P)·2^31 + ((a2·c2 + b2) mod P2)``,
    ``(a, b)`` from SHA-256 of ``"{seed:x}:u{unit}"``, ``(c1, c2)`` from SHA-256 of
    ``"{seed:x}:c{len}:{city}"``. Returns kept units per city."""
    import hashlib
    from collections import defaultdict

    p, p2 = 2**31 - 1, 2**31 - 19

    def words(text: str) -> list[int]:
        h = hashlib.sha256(text.encode()).hexdigest()
        return [int(h[i:i + 8], 16) for i in range(0, 32, 8)]

    cells_of: dict[int, list[str]] = defaultdict(list)
    for city, unit in pairs:
        cells_of[unit].append(city)
    kept: dict[str, int] = defaultdict(int)
    for unit, cities in cells_of.items():
        if len(cities) > g:
            w = words(f"{seed:x}:u{unit}")
            a1, b1, a2, b2 = 1 + w[0] % (p - 1), w[1] % p, 1 + w[2] % (p2 - 1), w[3] % p2

            def m(city: str, a1: int = a1, b1: int = b1, a2: int = a2, b2: int = b2) -> int:
                c = words(f"{seed:x}:c{len(city)}:{city}")
                return ((a1 * (c[0] % p) + b1) % p) * 2**31 + (a2 * (c[1] % p2) + b2) % p2

            cities = sorted(cities, key=m)[:g]
        for city in cities:
            kept[city] += 1
    return dict(kept)


@pytest.mark.parametrize("g", [1, 2, 3, 5])
def test_l0_bounding_keeps_the_g_cells_with_smallest_keyed_hash(tmp_path: Path, g: int) -> None:
    """The L0 SQL keeps, per unit, exactly the cells the documented keyed rule names (an
    independent Python computation of SHA-256 and the affine maps), so DuckDB and Spark, which run
    the same SQL, can be held to one definition; and never more than ``g`` cells per unit."""
    from pipeline.engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql
    from pipeline.engines.duckdb.connection import connect
    from pipeline.engines.duckdb.sources import open_source

    (tmp_path / "data").mkdir()
    con0 = duckdb.connect()
    # units with 1..9 cells each (city), one row per (unit, city)
    con0.execute("CREATE TABLE t AS SELECT 'c' || (j % 9) AS city, i AS user_id, 1.0 AS amount "
                 "FROM range(300) a(i), range(9) b(j) WHERE j <= i % 9")
    con0.execute(f"COPY t TO '{tmp_path / 'data' / 'l0.parquet'}' (FORMAT parquet)")
    pairs = con0.execute("SELECT city, user_id FROM t").fetchall()
    cfg = load_config(dp_config(tmp_path, "data/l0.parquet", privacy={**PRIVACY, "max_groups_per_unit": g}))
    con = connect(cfg)
    source = open_source(con, cfg)
    con.execute(*_q(dp_pairs_sql(cfg, source.schema, 5, public=False)))
    for q in dp_cells_sql(cfg, 6):
        con.execute(*_q(q))
    got = dict(con.execute("SELECT __d0, __units FROM __dp_cells").fetchall())
    assert got == _keyed_l0_reference(6, pairs, g)
    assert sum(got.values()) == sum(min(g, 1 + i % 9) for i in range(300))
    # the choice is keyed: another seed keeps other cells (for g < 9, with 300 units)
    con.execute(*_q(dp_pairs_sql(cfg, source.schema, 5, public=False)))
    for q in dp_cells_sql(cfg, 7):
        con.execute(*_q(q))
    other = dict(con.execute("SELECT __d0, __units FROM __dp_cells").fetchall())
    assert other == _keyed_l0_reference(7, pairs, g) and other != got


def test_linf_bounding_keeps_the_rows_the_keyed_order_names(tmp_path: Path) -> None:
    """A person with more than ``max_rows_per_group`` rows in a cell keeps exactly the rows the
    documented keyed order names (computed here in Python from its definition: micro-units ``x``,
    key ``(a·(x mod P) + b) mod P`` with ``a, b`` from SHA-256 of ``"anonymize/rows/{seed}/0"``),
    so the bounded sum is the same on every engine and not the smallest or the first rows."""
    import hashlib

    from pipeline.engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql
    from pipeline.engines.duckdb.connection import connect
    from pipeline.engines.duckdb.sources import open_source

    (tmp_path / "data").mkdir()
    values = [round(0.37 * k * k % 10, 2) for k in range(1, 31)]  # 30 rows of one person, in [0, 10)
    con0 = duckdb.connect()
    con0.execute("CREATE TABLE t (user_id BIGINT, city VARCHAR, amount DOUBLE)")
    con0.executemany("INSERT INTO t VALUES (1, 'big', ?)", [[v] for v in values])
    con0.execute(f"COPY t TO '{tmp_path / 'data' / 'linf.parquet'}' (FORMAT parquet)")
    cfg = load_config(dp_config(tmp_path, "data/linf.parquet"))
    linf = PRIVACY["max_rows_per_group"]
    con = connect(cfg)
    source = open_source(con, cfg)
    p = 2**31 - 1
    for seed in (11, 12):
        con.execute(*_q(dp_pairs_sql(cfg, source.schema, seed, public=False)))
        for q in dp_cells_sql(cfg, 3):
            con.execute(*_q(q))
        rows, total = con.execute("SELECT __rows, CAST(__s2 AS DOUBLE) FROM __dp_cells").fetchone()
        d = hashlib.sha256(f"anonymize/rows/{seed}/0".encode()).digest()
        a, b = (1 + int.from_bytes(d[j:j + 4], "big") % (p - 1) for j in (0, 4))
        key = sorted(values, key=lambda v: (a * (round(v * 1_000_000) % p) % p + b) % p)
        assert rows == linf
        assert total == pytest.approx(sum(key[:linf]), abs=1e-6)
    assert sum(key[:linf]) != pytest.approx(sum(sorted(values)[:linf]))  # not simply the smallest


def test_dp_quality_counts_invalid_values_for_metrics_sharing_a_column(tmp_path: Path) -> None:
    """A sum and a mean of one column share a value column in the pairs; both report its NaN/inf rows."""
    from pipeline.engines.duckdb.bounding import dp_pairs_sql, dp_quality_sql
    from pipeline.engines.duckdb.connection import connect
    from pipeline.engines.duckdb.sources import open_source
    from pipeline.flows.quality import aggregate_quality

    (tmp_path / "data").mkdir()
    con0 = duckdb.connect()
    con0.execute("CREATE TABLE t AS SELECT i AS user_id, 'c' || (i % 3) AS city, CASE i % 5 WHEN 0 THEN 'nan'::DOUBLE "
                 "WHEN 1 THEN 'inf'::DOUBLE ELSE i END AS amount FROM range(100) r(i)")
    con0.execute(f"COPY t TO '{tmp_path / 'data' / 'q.parquet'}' (FORMAT parquet)")
    metrics = [{"name": "total", "agg": "sum", "column": "amount", "bounds": [0, 10]},
               {"name": "avg", "agg": "mean", "column": "amount", "bounds": [0, 10]}]
    cfg = load_config(dp_config(tmp_path, "data/q.parquet", metrics=metrics))
    con = connect(cfg)
    source = open_source(con, cfg)
    con.execute(*_q(dp_pairs_sql(cfg, source.schema, 5, public=False)))
    quality = aggregate_quality(cfg, con, dp_quality_sql(cfg, source.schema))
    assert quality["invalid_values_dropped"] == {"total": 40, "avg": 40}


def test_check_on_a_dp_release(dp_project: Path) -> None:
    """`anonymize check` re-runs the gate on a DP release, and catches tampering with it."""
    assert run_cli("run", dp_config(dp_project, "data/c.parquet"), "--run-id", "chk").exit_code == 0
    rel = dp_project / "reports" / "t_report" / "chk"
    res = run_cli("check", rel)
    assert res.exit_code == 0, res.stderr
    assert "mode: dp" in res.output
    # a smuggled e-mail in a published dimension value is refused, even with a matching sha256
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(rel / "report.parquet")
    t = t.set_column(t.column_names.index("city"), "city", pa.array(["someone@example.com"] * t.num_rows))
    pq.write_table(t, rel / "report.parquet")
    m = json.loads((rel / "manifest.json").read_text())
    m["report_file"]["sha256"] = hashlib.sha256((rel / "report.parquet").read_bytes()).hexdigest()
    (rel / "manifest.json").write_text(json.dumps(m))
    bad = run_cli("check", rel)
    assert bad.exit_code == 3 and "email" in bad.stderr


def test_budget_show_states_the_sum_of_every_release(dp_project: Path) -> None:
    """Guarantee (a message that must be true): `budget show` and `Ledger.spend` state, per source,
    the sum of the ε and δ every release's manifest records, and what the limits leave; found
    by mutation testing: a summary that kept only the last release's ε passed every test."""
    cfg = dp_config(dp_project, "data/c.parquet")
    spent_eps = spent_delta = 0.0
    for run in ("s1", "s2", "s3"):
        assert run_cli("run", cfg, "--run-id", run).exit_code == 0
        m = json.loads((dp_project / "reports" / "t_report" / run / "manifest.json").read_text())
        spent_eps += m["privacy"]["epsilon_spent"]
        spent_delta += m["privacy"]["delta_spent"]
    limits = {"epsilon_limit": 10.0, "delta_limit": 1e-4}
    [row] = Ledger(dp_project / "state" / "ledger.duckdb").spend(limits)
    assert row["releases"] == 3
    assert row["epsilon_spent"] == pytest.approx(spent_eps) and row["delta_spent"] == pytest.approx(spent_delta)
    assert row["epsilon_left"] == pytest.approx(10.0 - spent_eps) and row["delta_left"] == pytest.approx(1e-4 - spent_delta)
    assert row["last_release"].startswith("t_report/s3 at ")
    shown = run_cli("budget", "show", "--ledger", dp_project / "state" / "ledger.duckdb")
    assert shown.exit_code == 0 and f"3 release(s), ε spent {spent_eps:.4g}" in shown.output


def test_linf_order_counts_a_null_value_as_p_minus_one(tmp_path: Path) -> None:
    """With two value columns, a row whose first value is null is ordered by the documented key
    ``(a₀·x₀ + a₁·x₁ + b) mod P`` with ``x₀ = P − 1`` (computed here from the definition), so the
    second column's bounded sum is the same on every engine; the first column's sum takes the
    ``max_rows_per_group`` non-null values of smallest key (a null adds nothing, as DuckDB's and
    the Spark rule's ``min_by`` skip it)."""
    import hashlib

    from pipeline.engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql
    from pipeline.engines.duckdb.connection import connect
    from pipeline.engines.duckdb.sources import open_source

    (tmp_path / "data").mkdir()
    amount: list[float | None] = [round(0.37 * k * k % 10, 2) for k in range(1, 31)]
    for i in range(0, 30, 3):
        amount[i] = None  # a third of the rows have no amount
    qty = [round((k * 7.3) % 10, 1) for k in range(1, 31)]
    con0 = duckdb.connect()
    con0.execute("CREATE TABLE t (user_id BIGINT, city VARCHAR, amount DOUBLE, qty DOUBLE)")
    con0.executemany("INSERT INTO t VALUES (1, 'big', ?, ?)", [[a, q] for a, q in zip(amount, qty, strict=True)])
    con0.execute(f"COPY t TO '{tmp_path / 'data' / 'two.parquet'}' (FORMAT parquet)")
    cfg = load_config(dp_config(tmp_path, "data/two.parquet", metrics=[
        {"name": "amount", "agg": "sum", "column": "amount", "bounds": [0, 10]},
        {"name": "qty", "agg": "sum", "column": "qty", "bounds": [0, 10]}]))
    linf = PRIVACY["max_rows_per_group"]
    con = connect(cfg)
    source = open_source(con, cfg)
    p = 2**31 - 1
    kept_a_null = 0
    for seed in range(20, 32):
        con.execute(*_q(dp_pairs_sql(cfg, source.schema, seed, public=False)))
        for q in dp_cells_sql(cfg, 3):
            con.execute(*_q(q))
        s_amount, s_qty = con.execute("SELECT CAST(__s0 AS DOUBLE), CAST(__s1 AS DOUBLE) FROM __dp_cells").fetchone()
        d = hashlib.sha256(f"anonymize/rows/{seed}/0".encode()).digest()
        a0, a1, b = (1 + int.from_bytes(d[j:j + 4], "big") % (p - 1) for j in (0, 4, 8))

        def key(r: tuple[float | None, float], a0: int = a0, a1: int = a1, b: int = b) -> int:
            x0 = p - 1 if r[0] is None else round(r[0] * 1_000_000) % p
            return ((x0 * a0) % p + (round(r[1] * 1_000_000) % p * a1) % p + b) % p

        rows = sorted(zip(amount, qty, strict=True), key=key)
        assert s_qty == pytest.approx(sum(q for _, q in rows[:linf]), abs=1e-6)
        assert s_amount == pytest.approx(sum([a for a, _ in rows if a is not None][:linf]), abs=1e-6)
        kept_a_null += any(a is None for a, _ in rows[:linf])
    assert kept_a_null >= 3  # the null's key decided which rows were kept, several times


def test_a_margin_counts_each_person_once_however_many_of_its_cells_they_are_in(tmp_path: Path) -> None:
    """A DP margin's unit count is the number of distinct people under it (sensitivity 1 per
    person), not of (cell, person) pairs: 400 people each in 2 categories of one city give a city
    margin of about 400, not 800 (the noise is a few units)."""
    parquet_from_sql(tmp_path / "data" / "m.parquet", "SELECT i // 2 AS user_id, 'only' AS city, 'k' || (i % 2) AS category, "
                     "1.0 AS amount FROM range(800) r(i)")
    cfg = load_config(dp_config(tmp_path, "data/m.parquet", dimensions=["city", "category"], totals=[["city"]],
                                min_units=5))
    t = run_report(cfg, "m", summary_html=False).table
    margin = t[t["level"] != "cell"]
    cells = t[t["level"] == "cell"]
    assert len(margin) == 1 and len(cells) == 2
    assert abs(int(margin["units"].iloc[0]) - 400) < 60
    assert all(abs(int(u) - 400) < 60 for u in cells["units"])  # every person is in both cells


def test_public_partitions_over_two_dimensions_publish_exactly_the_listed_cells(tmp_path: Path) -> None:
    """A public list over two dimensions selects cells on both: every listed (city, category) is
    published, present or not, and no other; the noisy counts are those of the listed cells."""
    parquet_from_sql(tmp_path / "data" / "two.parquet", "SELECT i AS user_id, 'c' || (i % 3) AS city, 'k' || (i % 4) AS category, "
                     "1.0 AS amount FROM range(2400) r(i)")
    (tmp_path / "data" / "public.csv").write_text("city,category\nc0,k0\nc1,k3\nc2,k9\n")
    cfg = load_config(dp_config(tmp_path, "data/two.parquet", dimensions=["city", "category"],
                                privacy={**PRIVACY, "public_partitions": "data/public.csv"}))
    t = run_report(cfg, "p", summary_html=False).table
    assert sorted(zip(t["city"], t["category"], strict=True)) == [("c0", "k0"), ("c1", "k3"), ("c2", "k9")]
    units = dict(zip(zip(t["city"], t["category"], strict=True), t["units"], strict=True))
    assert abs(int(units[("c0", "k0")]) - 200) < 40 and abs(int(units[("c1", "k3")]) - 200) < 40
    assert abs(int(units[("c2", "k9")])) < 40  # listed but absent: noise around 0


def test_a_mean_beside_another_value_column_is_published_from_its_own_counts(tmp_path: Path) -> None:
    """A mean keeps its own clamped sum and value count beside another value column's: 6,000 people
    with amounts of 2.0 or 6.0 (mean 4.0) and quantities of 1.0 publish a mean near 4 and a sum
    near 6,000 (Laplace scale 240 here: the bound, 2 kept cells and 3 rows per person, ε/4;
    ±3000 is 12.5 scales, exceeded with probability ~4e-6)."""
    parquet_from_sql(tmp_path / "data" / "mq.parquet", "SELECT i AS user_id, 'only' AS city, CASE WHEN i % 2 = 0 THEN 2.0 ELSE 6.0 END "
                     "AS amount, 1.0 AS qty FROM range(6000) r(i)")
    cfg = load_config(dp_config(tmp_path, "data/mq.parquet", metrics=[
        {"name": "avg_amount", "agg": "mean", "column": "amount", "bounds": [0, 10]},
        {"name": "qty", "agg": "sum", "column": "qty", "bounds": [0, 10]}]))
    rel = run_report(cfg, "mq", summary_html=False)
    t = rel.table
    assert len(t) == 1
    assert float(t["avg_amount"].iloc[0]) == pytest.approx(4.0, abs=0.5)
    assert float(t["qty"].iloc[0]) == pytest.approx(6000, abs=3000)
