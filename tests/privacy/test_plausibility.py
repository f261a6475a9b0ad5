"""The release gate's check of a DP mean (pipeline/privacy/plausibility.py with the engine's counts,
pipeline/engines/duckdb/gate.py::noise_counts), held to a bound derived here from first principles.

A published mean is ``mid + (S_c + z_s) / (c + z_c)`` with ``S_c = c·(μ − mid)`` the true centred
sum, ``mid = (lo + hi) / 2``. With both noises inside their tails ``|z_s| ≤ T_s``, ``|z_c| ≤ T_c``
and ``c > T_c``, its error is ``(z_s − (μ − mid)·z_c) / (c + z_c)``, at most
``(T_s + |μ − mid|·T_c) / (c − T_c)`` and reaching it at a corner of the noise box. Where
``c − T_c < 1`` only the clamp holds: the error is at most ``hi − lo``. The gate must count a
published mean as beyond its tail exactly when its error exceeds that bound (plus 1e-4 of
rounding slack): a tolerance too wide lets a wrong mean through; one too narrow refuses good
releases.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from pipeline.config.models import config_from_dict
from pipeline.engines.duckdb.connection import connect
from pipeline.engines.duckdb.gate import noise_counts
from pipeline.privacy.budget import budget_split
from pipeline.privacy.mechanisms import GATE_TAIL
from pipeline.privacy.plausibility import expectations

LO, HI = 20.0, 100.0


def _cfg(noise: str):
    return config_from_dict({
        "report": "m", "source": {"path": "e.parquet"}, "privacy_unit": "user_id", "identifiers": ["user_id"],
        "dimensions": ["city"], "min_units": 10, "totals": [[]],
        "metrics": [{"name": "rows", "agg": "count"}, {"name": "avg", "agg": "mean", "column": "v", "bounds": [LO, HI]}],
        "privacy": {"epsilon": 1.0, "delta": 1e-6, "noise": noise, "max_groups_per_unit": 2, "max_rows_per_group": 3},
        "budget": {"ledger": "state/l.duckdb", "epsilon_limit": 10, "delta_limit": 1e-3},
    })


def _tail(mech) -> float:
    """The smallest t with P(|Z| > t) ≤ GATE_TAIL, from the noise's own distribution (not the pipeline's
    tail function): continuous Laplace e^(−t/b); discrete Laplace 2·p^(t+1)/(1+p), p = e^(−1/b);
    Gaussian by bisection on erfc(t / (σ√2)) (discrete Gaussian: the continuous bound rounded up,
    which it never falls below by more than the rounding)."""
    b = mech.scale
    if mech.noise == "laplace" and not mech.integer:
        return b * math.log(1 / GATE_TAIL)
    if mech.noise == "laplace":
        p = math.exp(-1 / b)
        t = 0
        while 2 * p ** (t + 1) / (1 + p) > GATE_TAIL:
            t += 1
        return float(t)
    lo_t, hi_t = 0.0, 100 * b
    for _ in range(200):
        m = (lo_t + hi_t) / 2
        lo_t, hi_t = (m, hi_t) if math.erfc(m / (b * math.sqrt(2))) > GATE_TAIL else (lo_t, m)
    return math.ceil(hi_t) if mech.integer else hi_t


@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
def test_the_gate_refuses_a_mean_exactly_beyond_its_worst_case(noise: str) -> None:
    cfg = _cfg(noise)
    split = budget_split(cfg)
    means = [e for e in expectations(cfg, split) if e.kind == "mean"]
    assert {e.level_name for e in means} == {"cell", "total"}
    con = connect()
    truth, published, beyond = [], [], {"cell": 0, "total": 0}
    for lv, plan in split.levels:
        t_s, t_c = _tail(plan.metrics["avg"]["sum"]), _tail(plan.metrics["avg"]["count"])
        mid = (LO + HI) / 2
        cells = [(c, mu) for c in (int(t_c) + 50, int(t_c) + 400) for mu in (LO + 1.0, mid, HI - 3.0)]
        cells.append((max(int(t_c) - 1, 1), HI - 1.0))  # too few values for the ratio bound: the clamp only
        if lv.index != 0:
            cells = [(int(t_c) + 400, LO + 7.0)]  # the total level has one cell
        for j, (c, mu) in enumerate(cells):
            key = f"{lv.name}{j}" if lv.index == 0 else None
            bound = (t_s + abs(mu - mid) * t_c) / (c - t_c) if c - t_c >= 1 else HI - LO
            for sign in (1.0, -1.0):
                for factor, out in ((0.98, False), (1.02, True)):
                    published.append({"level": lv.name, "city": key, "rows": 0, "avg": mu + sign * (factor * bound + 2e-4)})
                    beyond[lv.name] += out
            truth.append({"__level": lv.index, "__d0": key, "__units": c, "__rows": c, "__s1": c * mu, "__c1": c})
    con.register("__truth_in", pa.Table.from_pylist(truth))
    con.execute("CREATE TEMP TABLE __dp_truth AS SELECT * FROM __truth_in")
    table = pa.Table.from_pylist(published)
    con.register("__gate_report", table)
    found, unmatched, rows = noise_counts(cfg, con, table, "__dp_truth", means)
    assert unmatched == 0
    got = {e.level_name: counts[1] for e, counts in found}
    checked = {e.level_name: counts[0] for e, counts in found}
    assert got == beyond  # every mean past its bound counted, none within it
    assert checked == {"cell": 2 * 2 * 7, "total": 2 * 2 * 1}


def test_every_published_number_has_an_expectation_whatever_the_metric_order() -> None:
    """The gate checks every metric at every level: a mean listed before other metrics must not end
    the list (each metric's noise is checked, not only those before the first mean)."""
    cfg = config_from_dict({
        "report": "m", "source": {"path": "e.parquet"}, "privacy_unit": "user_id", "identifiers": ["user_id"],
        "dimensions": ["city", "category"], "min_units": 10, "totals": [[], ["city"]],
        "metrics": [{"name": "avg", "agg": "mean", "column": "v", "bounds": [LO, HI]},
                    {"name": "rows", "agg": "count"}, {"name": "people", "agg": "count_units"},
                    {"name": "total", "agg": "sum", "column": "v", "bounds": [LO, HI]}],
        "privacy": {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 2, "max_rows_per_group": 3},
        "budget": {"ledger": "state/l.duckdb", "epsilon_limit": 10, "delta_limit": 1e-3},
    })
    split = budget_split(cfg)
    got = {(e.level_name, e.metric) for e in expectations(cfg, split)}
    assert got == {(lv.name, m.name) for lv, _ in split.levels for m in cfg.metrics}


@pytest.mark.parametrize("k", [20, 60])  # 60: min_units above the selection threshold plus its tail
def test_cells_selected_at_the_threshold_do_not_fail_a_good_release(tmp_path, k: int) -> None:
    """The spread test only looks at unit counts whose noise selection cannot have conditioned: cells
    whose true count is at least threshold + T. Selected cells *at* the threshold carry noise biased
    upward by selection (only draws ≥ 0 pass); counting them (an eligibility at threshold − T, or one
    ignoring min_units) would refuse a correct release. Cells of exactly the threshold's count:
    the real release must pass its gate (with 12,000 such cells a spread test over them would refuse)."""
    import duckdb

    from pipeline import load_config, run_report
    from pipeline.privacy.rules import publication_threshold
    from tests.conftest import write_config

    privacy = {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1}
    base = dict(identifiers=["user_id"], filter=None, dimensions=["city"], min_units=k,
                metrics=[{"name": "people", "agg": "count_units"}], privacy=privacy, history=None,
                budget={"ledger": "state/ledger.duckdb", "epsilon_limit": 10, "delta_limit": 1e-3})
    probe = load_config(write_config(tmp_path, "probe.yaml", report="p", source={"path": "e.parquet"}, **base))
    t = publication_threshold(budget_split(probe).levels[0][1].selection, probe.min_units)
    (tmp_path / "data").mkdir()
    duckdb.connect().execute(
        f"COPY (SELECT c * {t} + u AS user_id, 'c' || c AS city FROM range(12000) a(c), range({t}) b(u)) "
        f"TO '{tmp_path / 'data' / 'e.parquet'}' (FORMAT parquet)")
    cfg = load_config(write_config(tmp_path, "r.yaml", report="r", source={"path": "data/e.parquet"}, **base))
    rel = run_report(cfg, "t1", summary_html=False)
    noise = rel.manifest["gate"]["checks"]["noise"]
    assert rel.manifest["gate"]["passed"] and noise["ok"]
    assert 5000 < len(rel.table) < 10000  # about half the cells passed selection: their noise is ≥ 0
