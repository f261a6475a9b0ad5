"""`plan` / plan_report: cell counts and error estimates against independent computations.

Threshold mode is checked against hand-written DuckDB SQL; DP mode against scipy's discrete
Laplace and against Monte Carlo runs of the real OpenDP samplers on the same cells. Every test
also checks that planning wrote nothing: no release, no staging folder, no ledger file.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
from scipy import stats

from pipeline import load_config, plan_report, run_report
from pipeline.errors import ConfigError
from pipeline.flows.whatif import NOTICE, format_plan
from pipeline.privacy.accuracy import (
    discrete_gaussian_sf,
    discrete_laplace_sf,
    expected_abs_difference,
    expected_abs_noise,
)
from pipeline.privacy.budget import level_budget
from pipeline.privacy.mechanisms import add_noise

from ..conftest import ROOT, run_cli, write_config

N_CELLS = 40


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def dp_source(path: Path, *, heavy_rows: int = 0) -> list[int]:
    """Cell c{j} has 5j+1 users with one row each (amount = user % 7); returns the unit counts.
    Optionally one heavy user with ``heavy_rows`` rows spread over every cell."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (city VARCHAR, user_id BIGINT, amount DOUBLE)")
    units = []
    for j in range(N_CELLS):
        u = 5 * j + 1
        units.append(u)
        con.execute(f"INSERT INTO t SELECT 'c{j}', {j} * 1000 + i, CAST(i % 7 AS DOUBLE) FROM range({u}) r(i)")
    if heavy_rows:
        con.execute(f"INSERT INTO t SELECT 'c' || (i % {N_CELLS}), 999999, 1.0 FROM range({heavy_rows}) r(i)")
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    return units


def dp_cfg(folder: Path, *, noise: str = "laplace", **kw: object) -> Path:
    privacy = {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1, "noise": noise}
    privacy.update(kw.pop("privacy", {}))  # type: ignore[arg-type]
    kw.setdefault("min_units", None if privacy.get("public_partitions") else 2)
    return write_config(
        folder, source={"path": "data/d.parquet"}, identifiers=["user_id"], filter=None, dimensions=["city"],
        metrics=[{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"},
                 {"name": "amount", "agg": "sum", "column": "amount", "bounds": [0, 10]},
                 {"name": "amount_avg", "agg": "mean", "column": "amount", "bounds": [0, 10]}],
        privacy=privacy, budget={"ledger": "state/ledger.duckdb", "epsilon_limit": 5.0, "delta_limit": 1e-4},
        **kw,
    )


@pytest.fixture
def dp_folder(tmp_path: Path) -> tuple[Path, list[int]]:
    (tmp_path / "data").mkdir()
    return tmp_path, dp_source(tmp_path / "data" / "d.parquet")


# ----- threshold mode ------------------------------------------------------------------------------


def test_threshold_counts_match_independent_sql(project: Path) -> None:
    cfg = load_config(write_config(project))
    before = files_under(project)
    result = plan_report(cfg, min_units=[2, 10, 40])
    assert files_under(project) == before  # nothing written, not even reports/
    assert result["internal_only"] is True and result["notice"] == NOTICE
    src = project / "data" / "events.parquet"
    truth = duckdb.sql(
        f"""SELECT count(DISTINCT user_id) AS u, count(*) AS n,
                   count(DISTINCT user_id) FILTER (WHERE order_value IS NOT NULL) AS v
            FROM read_parquet('{src}') WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL
            GROUP BY city, category, date_trunc('month', event_time)"""
    ).fetchnumpy()
    u, n, v = truth["u"], truth["n"], truth["v"]
    assert [c["min_units"] for c in result["candidates"]] == [2, 10, 40]
    for c in result["candidates"]:
        k = c["min_units"]
        ok = (u >= k) & ~((v > 0) & (v < k))  # k people per cell, and per sum/mean (people with a value)
        assert c["cells_computed"] == len(u)
        assert c["cells_published"] == int(ok.sum())
        assert c["suppressed_k"] == int((u < k).sum())
        assert c.get("suppressed_k_metric", 0) == int(((u >= k) & (v > 0) & (v < k)).sum())
        assert c["suppressed_share"] == pytest.approx(1 - ok.mean())
        assert c["rows_in_published_cells_share"] == pytest.approx(n[ok].sum() / n.sum())
        assert c["configured"] == (k == 10)
    text = format_plan(result)
    assert text.splitlines()[1] == NOTICE and text.rstrip().endswith(NOTICE)


def test_threshold_plan_equals_release_with_dominance(project: Path) -> None:
    """Primary suppression is the pipeline's own: at the configured k the plan is exactly the release."""
    cfg = load_config(write_config(project, dominance={"n": 1, "max_share": 0.5}, min_units=8))
    plan = plan_report(cfg, min_units=[8])["candidates"][0]
    rel = run_report(cfg, "p")
    assert plan["suppressed_dominance"] > 0
    for key in ("cells_computed", "cells_published", "suppressed_k", "suppressed_dominance"):
        assert plan[key] == rel.internal["cells"][key], key


def test_threshold_defaults_and_bad_candidates(project: Path) -> None:
    cfg = load_config(write_config(project, min_units=10))
    ks = [c["min_units"] for c in plan_report(cfg)["candidates"]]
    assert ks == [5, 10, 20, 50]
    with pytest.raises(ConfigError, match="DP mode"):
        plan_report(cfg, epsilons=[1.0])
    with pytest.raises(ConfigError, match="DP mode"):
        plan_report(cfg, selection_shares=[0.3])
    with pytest.raises(ConfigError, match=">= 2"):
        plan_report(cfg, min_units=[1])


def test_cli_plan_on_real_dataset_json_and_text() -> None:
    config = ROOT / "configs" / "online_retail_country_month.yaml"
    reports = ROOT / "reports" / "online_retail_country_month"
    existed = reports.exists()
    res = run_cli("plan", config, "--min-units", "5", "--min-units", "10", "--min-units", "50", "--json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.output)
    assert data["internal_only"] is True and data["mode"] == "threshold"
    published = [c["cells_published"] for c in data["candidates"]]
    assert published == sorted(published, reverse=True) and published[0] > 0
    # independent: distinct customers per country (one of the margins), counted by hand
    src = ROOT / "samples" / "online_retail_sample.parquet"
    by_country = duckdb.sql(
        f"""SELECT count(DISTINCT CustomerID) AS u FROM read_parquet('{src}')
            WHERE Quantity >= 1 AND CustomerID IS NOT NULL GROUP BY Country"""
    ).fetchnumpy()["u"]
    assert data["candidates"][-1]["cells_published"] >= int((by_country >= 50).sum())
    res = run_cli("plan", config)
    assert res.exit_code == 0 and NOTICE in res.output and "min_units" in res.output
    assert reports.exists() == existed
    assert run_cli("plan", config, "--epsilon", "1").exit_code == 2


# ----- DP mode -------------------------------------------------------------------------------------


def test_dp_expected_cells_match_scipy_and_opendp(dp_folder: tuple[Path, list[int]]) -> None:
    folder, units = dp_folder
    cfg = load_config(dp_cfg(folder))
    before = files_under(folder)
    result = plan_report(cfg, epsilons=[0.5, 1.0, 2.0])
    after = files_under(folder)
    assert after == before and not (folder / "state").exists()  # no ledger, no release
    u = np.array(units)
    assert result["bounding"]["cells_computed"] == N_CELLS
    assert result["bounding"]["rows_kept_share"] == 1.0
    for c in result["candidates"]:
        plan = level_budget(cfg, epsilon=c["epsilon"])
        sel = plan.selection
        assert sel is not None and c["threshold"] == max(sel.threshold, 2)
        assert c["epsilon_spent"] == pytest.approx(plan.epsilon)
        # independent: scipy's discrete Laplace, P(u + Z >= T) = P(Z > T - u - 1)
        truth = stats.dlaplace.sf(c["threshold"] - u - 1, 1.0 / sel.scale).sum()
        assert c["expected_cells_published"] == pytest.approx(truth, rel=1e-9, abs=1e-12)
    # and the real OpenDP sampler, many times over the same cells
    c = next(c for c in result["candidates"] if c["epsilon"] == 1.0)
    sel = level_budget(cfg).selection
    reps = 2000
    noisy = add_noise(np.tile(u, reps), sel).reshape(reps, N_CELLS)
    published = (noisy >= c["threshold"]).sum(axis=1)
    p = stats.dlaplace.sf(c["threshold"] - u - 1, 1.0 / sel.scale)
    se = np.sqrt((p * (1 - p)).sum() / reps)
    assert abs(published.mean() - c["expected_cells_published"]) < 5 * se + 1e-9


def test_dp_relative_errors_match_opendp_monte_carlo(dp_folder: tuple[Path, list[int]]) -> None:
    folder, units = dp_folder
    cfg = load_config(dp_cfg(folder))
    c = plan_report(cfg, epsilons=[1.0])["candidates"][0]
    plan = level_budget(cfg)
    u = np.array(units, dtype=np.int64)
    likely = stats.dlaplace.sf(c["threshold"] - u - 1, 1.0 / plan.selection.scale) >= 0.5
    assert c["cells_likely_published"] == int(likely.sum()) > 5
    reps = 600
    uu = u[likely]
    # per-cell true values, by hand: amount = user % 7 for users 0..u-1
    sums = np.array([sum(i % 7 for i in range(x)) for x in uu], dtype=np.float64)

    def mc(true: np.ndarray, noisy: np.ndarray) -> float:
        # per cell the mean relative error over the draws, then the median over cells
        return float(np.median(np.mean(np.abs(noisy - true) / np.abs(true), axis=0)))

    checks = [("rows", plan.metrics["rows"]["count"], uu), ("units", plan.selection, uu),
              ("amount", plan.metrics["amount"]["sum"], sums)]
    for name, mech, true in checks:
        noisy = add_noise(np.tile(true, reps), mech).reshape(reps, -1)
        # E|noise| pooled over all draws and cells (tight), then the per-cell relative error (looser)
        assert expected_abs_noise(mech) == pytest.approx(np.mean(np.abs(noisy - true)), rel=0.03), name
        assert c["metrics"][name]["median_relative_error"] == pytest.approx(mc(true, noisy), rel=0.1), name
    # mean: the release's formula with the real samplers (mid + noisy centred sum / noisy count)
    parts = plan.metrics["amount_avg"]
    mid = 5.0
    cs = add_noise(np.tile(sums - mid * uu, reps), parts["sum"]).reshape(reps, -1)
    cc = np.maximum(add_noise(np.tile(uu, reps), parts["count"]).reshape(reps, -1), 1)
    mean = np.clip(mid + cs / cc, 0, 10)
    assert c["metrics"]["amount_avg"]["median_relative_error"] == pytest.approx(mc(sums / uu, mean), rel=0.1)
    assert c["metrics"]["rows"]["ci95_half_width"] == pytest.approx(plan.metrics["rows"]["count"].ci95_half_width)
    assert c["metrics"]["amount_avg"]["ci95_half_width"] is None  # a mean's noise depends on its cell


def test_dp_gaussian_expected_cells_match_opendp(dp_folder: tuple[Path, list[int]]) -> None:
    folder, units = dp_folder
    cfg = load_config(dp_cfg(folder, noise="gaussian"))
    c = plan_report(cfg, epsilons=[1.0])["candidates"][0]
    sel = level_budget(cfg).selection
    u = np.array(units)
    reps = 1000
    noisy = add_noise(np.tile(u, reps), sel).reshape(reps, N_CELLS)
    rate = (noisy >= c["threshold"]).mean(axis=0)
    assert abs(rate.sum() - c["expected_cells_published"]) < 5 * np.sqrt(N_CELLS * 0.25 / reps)
    # the continuous normal with a continuity correction agrees to within a few percent
    approx = stats.norm.sf((c["threshold"] - u - 0.5) / sel.scale).sum()
    assert c["expected_cells_published"] == pytest.approx(approx, rel=0.02)


def test_dp_bounding_share_and_min_units_candidates(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    units = dp_source(tmp_path / "data" / "d.parquet", heavy_rows=4000)
    cfg = load_config(dp_cfg(tmp_path))
    result = plan_report(cfg, epsilons=[1.0], min_units=[2, 150])
    b = result["bounding"]
    total_rows = sum(units) + 4000
    # L0 = Linf = 1: every user keeps exactly one row, the heavy user too
    assert b["rows_aggregated"] == total_rows
    assert b["rows_kept_after_bounding"] == sum(units) + 1
    assert b["rows_kept_share"] == pytest.approx((sum(units) + 1) / total_rows)
    low, high = result["candidates"]
    assert high["threshold"] == 150 and low["threshold"] < 150
    assert high["expected_cells_published"] < low["expected_cells_published"]
    assert not (tmp_path / "state").exists() and not (tmp_path / "reports").exists()


def test_dp_public_partitions_publish_all(dp_folder: tuple[Path, list[int]]) -> None:
    folder, _ = dp_folder
    (folder / "data" / "public.csv").write_text("city\nc1\nc39\nnowhere\n")
    cfg = load_config(dp_cfg(folder, privacy={"public_partitions": "data/public.csv"}))
    c = plan_report(cfg, epsilons=[1.0])["candidates"][0]
    assert c["threshold"] is None and c["expected_cells_published"] == 3.0
    assert c["metrics"]["units"]["scale"] == level_budget(cfg).metrics["units"]["count"].scale


def test_cli_plan_dp_text(dp_folder: tuple[Path, list[int]]) -> None:
    folder, _ = dp_folder
    res = run_cli("plan", dp_cfg(folder), "--epsilon", "0.5", "--epsilon", "1")
    assert res.exit_code == 0, res.stderr
    assert res.output.count(NOTICE) == 2 and "expected published" in res.output
    assert not (folder / "state").exists() and not (folder / "reports").exists()


def test_dp_selection_share_candidates_match_release_plans(dp_folder: tuple[Path, list[int]]) -> None:
    """Each (ε, selection share) candidate is what a release with that share would do: its
    selection scale and threshold come from the release's own plan, and its expected published
    cells agree with scipy's discrete Laplace tail."""
    folder, units = dp_folder
    cfg = load_config(dp_cfg(folder))
    result = plan_report(cfg, epsilons=[1.0], selection_shares=[0.3, 0.7])
    cands = result["candidates"]
    assert [(c["epsilon"], c["selection_share"]) for c in cands] == [(1.0, 0.3), (1.0, 0.7)]
    assert not any(c["configured"] for c in cands)  # the configured share is 0.5
    u = np.array(units)
    for c in cands:
        other = load_config(dp_cfg(folder, privacy={"selection_share": c["selection_share"]}))
        sel = level_budget(other).selection
        assert c["selection_scale"] == sel.scale and c["threshold"] == max(sel.threshold, 2)
        truth = stats.dlaplace.sf(c["threshold"] - u - 1, 1.0 / sel.scale).sum()
        assert c["expected_cells_published"] == pytest.approx(truth, rel=1e-9, abs=1e-12)
        # the metrics share what selection leaves: a larger share means noisier metrics
        assert c["metrics"]["rows"]["scale"] == level_budget(other).metrics["rows"]["count"].scale
        budgets = {n: v["budget"] for n, v in c["metrics"].items()}
        assert budgets["units"] == pytest.approx(c["selection_share"])  # the selection's own count
        assert budgets["rows"] == pytest.approx((1 - c["selection_share"]) / 3)  # rows, amount, amount_avg
        assert sum(budgets.values()) == pytest.approx(c["epsilon_spent"])
    assert cands[1]["expected_cells_published"] > cands[0]["expected_cells_published"]
    assert cands[1]["metrics"]["rows"]["scale"] > cands[0]["metrics"]["rows"]["scale"]
    text = run_cli("plan", dp_cfg(folder), "--epsilon", "1", "--selection-share", "0.3", "--selection-share", "0.5")
    assert text.exit_code == 0, text.stderr
    assert "epsilon @ selection share" in text.output and "* 1 @ 0.5" in text.output
    assert "budget per metric" in text.output
    # impossible candidates are one-line errors (exit 2), never a traceback
    for args in (["--selection-share", "1.5"], ["--selection-share", "0"]):
        bad = run_cli("plan", dp_cfg(folder), *args)
        assert bad.exit_code == 2 and "selection-share" in (bad.stderr + bad.output)
    (folder / "data" / "public.csv").write_text("city\nc0\n")
    public = run_cli("plan", dp_cfg(folder, privacy={"public_partitions": "data/public.csv"}), "--selection-share", "0.3")
    assert public.exit_code == 2 and "public_partitions" in public.stderr


def test_noise_tails_against_scipy() -> None:
    m = np.arange(-30, 31)
    for b in (0.7, 3.0, 25.0):
        assert discrete_laplace_sf(m, b) == pytest.approx(stats.dlaplace.sf(m - 1, 1.0 / b), rel=1e-9, abs=1e-15)
    sigma = 4.0
    z = np.arange(-200, 201)
    w = np.exp(-(z**2) / (2 * sigma**2))
    w /= w.sum()
    assert discrete_gaussian_sf(m, sigma) == pytest.approx([w[z >= x].sum() for x in m], abs=1e-12)
    # E|noise| of the discrete samplers, by direct summation of the pmf
    from pipeline.privacy.mechanisms import Mechanism

    for b in (0.5, 2.0, 40.0):
        z = np.arange(-4000, 4001)
        assert expected_abs_noise(Mechanism("x", "laplace", True, 1, b)) == pytest.approx(
            (np.abs(z) * stats.dlaplace.pmf(z, 1.0 / b)).sum(), rel=1e-9)
        assert expected_abs_noise(Mechanism("x", "laplace", False, 1, b)) == pytest.approx(stats.laplace(scale=b).expect(abs))
        assert expected_abs_noise(Mechanism("x", "gaussian", False, 1, b)) == pytest.approx(stats.norm(scale=b).expect(abs))
    w = np.exp(-(z**2) / 2.0)
    assert expected_abs_noise(Mechanism("x", "gaussian", True, 1, 1.0)) == pytest.approx((np.abs(z) * w).sum() / w.sum())
    # E|X - Y| for Laplace scales: E_Y[E|X - y|] with E|X - a| = |a| + s1·e^{-|a|/s1}, by quadrature
    from scipy.integrate import quad

    s1, s2 = 3.0, np.array([0.0, 1.0, 3.0, 7.0])
    got = expected_abs_difference("laplace", s1, s2)
    assert got[0] == pytest.approx(s1)
    for s, g in zip(s2[1:], got[1:], strict=True):
        val, _ = quad(lambda y, s=s: stats.laplace.pdf(y, scale=s) * (abs(y) + s1 * np.exp(-abs(y) / s1)),
                      -np.inf, np.inf, limit=200)
        assert g == pytest.approx(val, rel=1e-6)
    g = expected_abs_difference("gaussian", 2.0, np.array([1.5]))[0]
    assert g == pytest.approx(stats.norm(scale=2.5).expect(abs))


def test_dp_margins_use_each_levels_mechanism(dp_folder: tuple[Path, list[int]]) -> None:
    from pipeline.privacy.budget import budget_split

    folder, units = dp_folder
    cfg = load_config(dp_cfg(folder, totals=[[]]))
    c = plan_report(cfg, epsilons=[1.0])["candidates"][0]
    rp = budget_split(cfg)
    assert len(rp.levels) == 2 and c["epsilon_spent"] == pytest.approx(rp.epsilon)
    cell_plan, total_plan = rp.levels[0][1], rp.levels[1][1]
    lv = c["levels"]
    assert lv["cell"]["cells"] == N_CELLS and lv["total"]["cells"] == 1
    t0 = max(cell_plan.selection.threshold, 2)
    truth0 = stats.dlaplace.sf(t0 - np.array(units) - 1, 1.0 / cell_plan.selection.scale).sum()
    assert lv["cell"]["threshold"] == t0 and lv["cell"]["expected_cells_published"] == pytest.approx(truth0)
    t1 = max(total_plan.selection.threshold, 2)
    truth1 = stats.dlaplace.sf(t1 - sum(units) - 1, 1.0 / total_plan.selection.scale)
    assert lv["total"]["expected_cells_published"] == pytest.approx(truth1)
    assert c["expected_cells_published"] == pytest.approx(truth0 + truth1)
