"""``consistent: true`` in DP mode: post-process noisy cells so children sum to their margins.

Guarantees:
- Pure post-processing of already-noisy published values (no data is read), so the DP
  guarantee is unchanged.
- For every additive metric (``count`` and ``sum``) and every published margin row, the sum of
  its published full-table children equals the margin (to float precision). The adjustment is
  the weighted least-squares projection onto those constraints (weights = noise variances), the
  minimum-variance consistent estimate.
- Requires ``privacy.public_partitions`` (checked at config load): with private partition
  selection some children are unpublished, and forcing the published ones to add up to the margin
  would misattribute the unpublished ones' mass.
Consistent counts are published as floating-point numbers and are not clamped at zero (clamping
or rounding would break the equalities); ``<metric>_ci95`` keep the pre-projection noise widths
(conservative: projection never increases variance).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import ReportConfig
from ..tables import arrow_array, arrow_table, np_column


def make_consistent(cfg: ReportConfig, parts: list[tuple[Any, Any, Any]]) -> list[Any]:
    """``parts``: (Level, pyarrow table of that level's published rows, its LevelBudget). Returns tables."""
    from scipy.sparse import csr_matrix, diags
    from scipy.sparse.linalg import spsolve

    dims = [d.name for d in cfg.dims]
    base_level, base, base_plan = parts[0]
    n0 = base.num_rows
    offsets = [0]
    for _, t, _ in parts:
        offsets.append(offsets[-1] + t.num_rows)
    total = offsets[-1]
    base_keys = [tuple(base.column(d)[i].as_py() for d in dims) for i in range(n0)]
    rows, cols, vals = [], [], []
    eq = 0
    for p_idx, (lv, t, _) in enumerate(parts[1:], start=1):
        keep = [dims.index(d) for d in lv.dims]
        index: dict[tuple, list[int]] = {}
        for i, k in enumerate(base_keys):
            index.setdefault(tuple(k[j] for j in keep), []).append(i)
        for r in range(t.num_rows):
            key = tuple(t.column(dims[j])[r].as_py() for j in keep)
            children = index.get(key, [])
            rows.append(eq)
            cols.append(offsets[p_idx] + r)
            vals.append(1.0)
            for c in children:
                rows.append(eq)
                cols.append(c)
                vals.append(-1.0)
            eq += 1
    if eq == 0:
        return [t for _, t, _ in parts]
    a = csr_matrix((vals, (rows, cols)), shape=(eq, total))
    out_cols: list[dict[str, Any]] = [{name: t.column(name) for name in t.column_names} for _, t, _ in parts]
    for m in cfg.metrics:
        if m.agg not in ("count", "sum"):
            continue
        y = np.concatenate([np_column(t, m.name).astype(np.float64) for _, t, _ in parts])
        var = np.concatenate([
            np.full(t.num_rows, variance(plan, m.name)) for _, t, plan in parts
        ])
        v = diags(var)
        lhs = (a @ v @ a.T).tocsc()
        lam = spsolve(lhs, a @ y)
        x = y - v @ (a.T @ np.atleast_1d(lam))
        for p_idx in range(len(parts)):
            out_cols[p_idx][m.name] = arrow_array(np.asarray(x[offsets[p_idx]:offsets[p_idx + 1]], dtype=np.float64))
    return [arrow_table(c) for c in out_cols]


def variance(plan: Any, metric: str) -> float:
    """The noise variance of ``metric`` at one level (the projection's weight)."""
    mech = next(iter(plan.metrics[metric].values()))
    if mech.noise == "laplace":
        return 2.0 * mech.scale**2
    return mech.scale**2
