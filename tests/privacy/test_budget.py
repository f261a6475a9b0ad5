"""The budget split's sensitivities (pipeline/privacy/budget.py), derived here from the contribution
bounds: one person touches at most g cells with at most r rows each, every value clamped into
[lo, hi]. A sensitivity below these lets one person move a cell by more than the noise covers."""

from __future__ import annotations

import math

import pytest

from pipeline.config.models import config_from_dict
from pipeline.privacy.budget import level_budget

G, R = 3, 4


def _cfg(noise: str, lo: float, hi: float):
    return config_from_dict({
        "report": "b", "source": {"path": "e.parquet"}, "privacy_unit": "user_id", "identifiers": ["user_id"],
        "dimensions": ["city"], "min_units": 10,
        "metrics": [{"name": "rows", "agg": "count"},
                    {"name": "total", "agg": "sum", "column": "v", "bounds": [lo, hi]},
                    {"name": "avg", "agg": "mean", "column": "v", "bounds": [lo, hi]}],
        "privacy": {"epsilon": 1.0, "delta": 1e-6, "noise": noise, "max_groups_per_unit": G, "max_rows_per_group": R},
        "budget": {"ledger": "state/l.duckdb", "epsilon_limit": 10, "delta_limit": 1e-3},
    })


@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
@pytest.mark.parametrize(("lo", "hi"), [(0.0, 100.0), (20.0, 100.0), (-50.0, 10.0)])
@pytest.mark.parametrize("margin", [False, True])
def test_sensitivities_follow_the_contribution_bounds(noise: str, lo: float, hi: float, margin: bool) -> None:
    # one person's change to one cell: r rows; a sum by r·max|v|; a mean's centred sum (values
    # minus the midpoint) by r·(hi - lo)/2. Across cells: L1 adds g cells; L2 adds √g on the full
    # table, but on a margin all g cells' rows can land in one margin cell (g·…)
    across = G if noise == "laplace" or margin else math.sqrt(G)
    want = {("rows", "count"): R, ("total", "sum"): R * max(abs(lo), abs(hi)),
            ("avg", "sum"): R * (hi - lo) / 2, ("avg", "count"): R}
    plan = level_budget(_cfg(noise, lo, hi), margin=margin)
    got = {(name, part): mech.sensitivity for name, parts in plan.metrics.items() for part, mech in parts.items()}
    assert got == pytest.approx({k: across * v for k, v in want.items()})
    # and the noise scale each part gets spends no more than the plan's total
    if noise == "laplace":
        assert sum(m.epsilon for m in plan.mechanisms()) <= 1.0 + 1e-9
