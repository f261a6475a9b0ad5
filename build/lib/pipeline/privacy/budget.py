"""The budget split of a DP release: every noisy query, its sensitivity, scale and loss (pure).

Guarantees (the math is in docs/PRIVACY.md, "Budget split and composition"):
- :func:`level_budget` splits one table level's (ε, δ) over partition selection and the metrics
  (by ``selection_share`` and ``budget_weight``); sensitivities follow from the contribution
  bounds; the loss of every mechanism is what OpenDP's privacy map reports for it, and the sum
  never exceeds the configured budget (checked, else ConfigError).
- :func:`budget_split` gives the whole release: ε and δ split equally over the full table and
  each ``totals`` margin, composed by basic composition.
- :func:`derive_seed` derives the bounding seeds from the ledger secret and the run identity,
  never from published data.
No data and no engine: the same split serves a release, the release gate and ``plan``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass, field
from typing import Any

from ..config import MetricConfig, ReportConfig
from ..errors import ConfigError
from .levels import Level, levels
from .mechanisms import (
    Mechanism,
    rho_for_epsilon,
    scale_for_budget,
    selection_mechanism,
    vector_mechanism,
    zcdp_to_approx_epsilon,
)


@dataclass
class LevelBudget:
    """Every noisy query of one release, with scales and the loss OpenDP reports for each."""

    noise: str
    selection: Mechanism | None
    metrics: dict[str, dict[str, Mechanism]] = field(default_factory=dict)
    epsilon: float = 0.0
    delta: float = 0.0
    rho: float | None = None

    def mechanisms(self) -> list[Mechanism]:
        out = [self.selection] if self.selection else []
        for parts in self.metrics.values():
            out += list(parts.values())
        return out

    def as_manifest(self) -> dict[str, Any]:
        per_metric: dict[str, Any] = {}
        for name, parts in self.metrics.items():
            entry: dict[str, Any] = {"mechanisms": {k: v.as_dict() for k, v in parts.items()}}
            if len(parts) > 1:  # a mean (noisy centred sum / noisy count): its error depends on the cell
                entry |= {"scale": None, "ci95_half_width": None, "ci95": f"per cell: column {name}_ci95"}
            else:
                main = next(iter(parts.values()))
                entry |= {"scale": main.scale, "ci95_half_width": main.ci95_half_width}
            per_metric[name] = entry
        return {
            "selection": self.selection.as_dict() if self.selection else None,
            "metrics": per_metric,
            "epsilon_spent": self.epsilon,
            "delta_spent": self.delta,
            "rho": self.rho,
        }


def _value_scale(m: MetricConfig) -> tuple[float, float]:
    lo, hi = m.bounds or (0.0, 0.0)
    return max(abs(lo), abs(hi)), (hi - lo) / 2.0


def level_budget(
    cfg: ReportConfig, *, epsilon: float | None = None, delta: float | None = None, margin: bool = False
) -> LevelBudget:
    """Split one table level's budget across partition selection and metrics (pure; no data).

    ``margin`` marks a ``totals`` level: there one unit's bounded rows may all fall into one cell,
    so Gaussian L2 sensitivities of counts and sums are ``g·r·…`` instead of ``√g·r·…``
    (L1 sensitivities and the selection's are the same as for the full table).
    """
    p = cfg.privacy
    assert p is not None
    eps = float(epsilon if epsilon is not None else p.epsilon)
    target_delta = float(delta if delta is not None else p.delta)
    g, r = int(p.max_groups_per_unit), int(p.max_rows_per_group)
    public = p.public_partitions is not None
    noisy = [m for m in cfg.metrics if not (m.agg == "count_units" and not public)]
    selection_needed = not public
    noise = p.noise
    if noise == "laplace":
        budget_total, delta_sel = eps, target_delta
    else:
        delta_sel = target_delta / 2 if selection_needed else 0.0
        budget_total = rho_for_epsilon(eps, target_delta - delta_sel)
    if selection_needed:
        sel_budget = budget_total * (p.selection_share if noisy else 1.0)
    else:
        sel_budget = 0.0
    weights = {m.name: float(m.budget_weight or 1.0) for m in noisy}
    total_weight = sum(weights.values())

    def budget_of(m: MetricConfig) -> float:
        # the metrics' budget, split by weight (equal by default)
        return (budget_total - sel_budget) * weights[m.name] / total_weight

    def sens(l1_unit: float, *, units: bool = False) -> float:
        # l1_unit: one unit's largest contribution to one cell of the full table
        if noise == "laplace" or (margin and not units):
            return g * l1_unit
        return math.sqrt(g) * l1_unit

    plan = LevelBudget(noise=noise, selection=None)
    if selection_needed:
        plan.selection = selection_mechanism(noise, l0=g, budget=sel_budget, delta=delta_sel)
    for m in noisy:
        parts: dict[str, Mechanism] = {}
        per_metric = budget_of(m)
        if m.agg == "count":
            s = sens(r)
            parts["count"] = vector_mechanism(m.name, noise, integer=True, sensitivity=s,
                                              scale=scale_for_budget(noise, s, per_metric))
        elif m.agg == "count_units":
            s = sens(1, units=True)
            parts["count"] = vector_mechanism(m.name, noise, integer=True, sensitivity=s,
                                              scale=scale_for_budget(noise, s, per_metric))
        elif m.agg == "sum":
            s = sens(r * _value_scale(m)[0])
            parts["sum"] = vector_mechanism(m.name, noise, integer=False, sensitivity=s,
                                            scale=scale_for_budget(noise, s, per_metric))
        else:  # mean = mid + noisy centred sum / noisy count, half the metric's budget each
            s_sum = sens(r * _value_scale(m)[1])
            s_cnt = sens(r)
            parts["sum"] = vector_mechanism(m.name + ".centred_sum", noise, integer=False, sensitivity=s_sum,
                                            scale=scale_for_budget(noise, s_sum, per_metric / 2))
            parts["count"] = vector_mechanism(m.name + ".count", noise, integer=True, sensitivity=s_cnt,
                                              scale=scale_for_budget(noise, s_cnt, per_metric / 2))
        plan.metrics[m.name] = parts
    mechs = plan.mechanisms()
    if noise == "laplace":
        plan.epsilon = sum(x.epsilon for x in mechs)
        plan.delta = sum(x.delta for x in mechs)
    else:
        rho = sum(x.rho for x in mechs)
        delta_conv = target_delta - delta_sel
        plan.rho = rho
        plan.epsilon = zcdp_to_approx_epsilon(rho, delta_conv)
        plan.delta = sum(x.delta for x in mechs) + delta_conv
    # what the mechanisms say must fit what the config allows (tiny float slack only)
    if plan.epsilon > eps * (1 + 1e-9) or plan.delta > target_delta * (1 + 1e-9):
        raise ConfigError(
            f"privacy: the mechanisms would spend ε={plan.epsilon:.6g}, δ={plan.delta:.3g}, more than "
            f"configured (ε={eps}, δ={target_delta}); report this as a bug"
        )
    return plan


@dataclass
class BudgetSplit:
    """One LevelBudget per table level (full table, then ``totals`` margins); budgets add up (basic)."""

    levels: list[tuple[Level, LevelBudget]]
    epsilon: float
    delta: float
    rho: float | None

    def as_manifest(self) -> dict[str, Any]:
        first = self.levels[0][1].as_manifest()
        out = {**first, "epsilon_spent": self.epsilon, "delta_spent": self.delta, "rho": self.rho}
        if len(self.levels) > 1:
            out["levels"] = {lv.name: p.as_manifest() for lv, p in self.levels}
            out["level_split"] = "equal share of ε and δ per level, basic composition across levels"
        return out


def budget_split(cfg: ReportConfig) -> BudgetSplit:
    """The whole release's plan: ε and δ split equally over the full table and each margin."""
    p = cfg.privacy
    assert p is not None
    lvls = levels(cfg)
    n = len(lvls)
    plans = [(lv, level_budget(cfg, epsilon=p.epsilon / n, delta=p.delta / n, margin=lv.index > 0)) for lv in lvls]
    rhos = [pl.rho for _, pl in plans if pl.rho is not None]
    return BudgetSplit(
        levels=plans,
        epsilon=sum(pl.epsilon for _, pl in plans),
        delta=sum(pl.delta for _, pl in plans),
        rho=sum(rhos) if rhos else None,
    )


def derive_seed(secret: bytes, *parts: str) -> int:
    """A 62-bit seed from the ledger secret and the run identity (never from published data)."""
    msg = "\x1f".join(parts).encode()
    return int.from_bytes(hmac.new(secret, msg, hashlib.sha256).digest()[:8], "big") >> 2
