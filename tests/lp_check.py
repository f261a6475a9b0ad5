"""An independent attacker for published tables with margins and remainder rows.

Written for the tests only; it shares no code with ``pipeline/`` (in particular not with
``pipeline/privacy/secondary.py`` or ``pipeline/privacy/remainder.py``). It plays the adversary of
docs/PRIVACY.md: it knows the table structure (every non-empty full-table cell, taken here from
the source by plain DuckDB), reads the published table, and sets up the linear system an
attacker would:

- a published full-table cell fixes its variable;
- a published margin row equals the sum of the full-table cells beneath it;
- a published remainder row of a level equals the sum of every full-table cell beneath the rows
  of that level that are *not* published;
- every cell value is non-negative, and (``floor``, default 1) every existing cell has at least
  one row: a row count of an existing cell is at least 1;
- with :func:`attack_sums`, also the clamp bounds of a sum (in every manifest): a cell of ``r``
  rows sums to between ``lo * r`` and ``hi * r``.

For every withheld value (a suppressed cell, or a suppressed margin row as the sum of its cells)
it computes the feasible interval with ``scipy.optimize.linprog`` (HiGHS). A withheld value whose
interval has zero width is *pinned*: recovered exactly from the release.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

TOL = 1e-6


@dataclass(frozen=True)
class Target:
    """A withheld value and bounds on what the attacker can narrow it to.

    For a pinned value ``low``/``high`` are the exact LP minimum and maximum. Otherwise they may be
    inner bounds (two feasible tables with different values), which is all the test needs.
    """

    level: str
    key: tuple
    true_value: float
    low: float
    high: float

    @property
    def pinned(self) -> bool:
        return self.high - self.low <= TOL * max(1.0, abs(self.true_value))

    def narrow(self, interval: float, integer: bool) -> bool:
        """Narrower than the protection interval ±interval·|value| (needs exact bounds)."""
        need = 2 * interval * abs(self.true_value)
        if integer:
            return math.floor(self.high + TOL) - math.ceil(self.low - TOL) < max(1.0, need)
        return self.high - self.low < need - TOL * max(1.0, abs(self.true_value)) or self.pinned


def _rows(table: Any) -> list[dict]:
    """Rows of a pyarrow Table (or a list of dicts) as dicts."""
    return table if isinstance(table, list) else table.to_pylist()


def attack(
    published: Any,
    truth: Any,
    dims: list[str],
    metric: str,
    levels: dict[str, tuple[str, ...]],
    *,
    floor: float = 1.0,
    exact: bool = False,
) -> list[Target]:
    """Interval bounds for every withheld value of ``published``.

    ``floor``: the least value of an existing cell (1 for row counts: the cell exists; 0 for a
    metric that may be zero). ``exact``: LP bounds for every target (for protection intervals),
    not only for the ones that look pinned.

    ``truth``: one row per non-empty full-table cell with the dimension columns and ``value``
    (the true additive metric). ``levels``: level name → dimensions kept ('cell' → all dims).
    Raises AssertionError when the published table contradicts the truth.
    """
    cells: dict[tuple, float] = {}
    for r in _rows(truth):
        key = tuple(r[d] for d in dims)
        assert key not in cells, f"truth has cell {key} twice"
        cells[key] = float(r["value"])
    order = sorted(cells, key=repr)

    pub_rows: dict[str, dict[tuple, float]] = defaultdict(dict)
    remainders: dict[str, float] = {}
    for r in _rows(published):
        level = r.get("level") or "cell"
        assert level in levels, f"unknown level {level!r}"
        value = float(r[metric])
        if r.get("is_remainder"):
            assert all(r[d] is None for d in dims), "a remainder row carries dimension values"
            assert level not in remainders, f"two remainder rows for level {level}"
            remainders[level] = value
            continue
        keep = levels[level]
        for d in dims:
            if d not in keep:
                assert r[d] is None, f"level {level} row has {d} set"
        key = tuple(r[d] for d in keep)
        assert key not in pub_rows[level], f"level {level} publishes {key} twice"
        pub_rows[level][key] = value

    published_cells = pub_rows.get("cell", {})
    for key, value in published_cells.items():
        assert key in cells, f"published cell {key} is not in the source"
        assert abs(value - cells[key]) <= TOL * max(1.0, abs(value)), f"cell {key}: {value} != {cells[key]}"
    hidden = [k for k in order if k not in published_cells]
    var = {k: j for j, k in enumerate(hidden)}

    def split(cell_keys: list[tuple]) -> tuple[list[int], float]:
        """Unknown variables and the known (published) part of a sum of cells."""
        unknown = [var[k] for k in cell_keys if k in var]
        known = sum(published_cells[k] for k in cell_keys if k not in var)
        return unknown, known

    groups: dict[str, dict[tuple, list[tuple]]] = {}
    for level, keep in levels.items():
        idx = [dims.index(d) for d in keep]
        g: dict[tuple, list[tuple]] = defaultdict(list)
        for k in order:
            g[tuple(k[i] for i in idx)].append(k)
        groups[level] = g

    equations: list[tuple[list[int], float]] = []
    targets: list[tuple[str, tuple, list[int], float, float]] = []  # level, key, vars, known, truth
    for level, g in groups.items():
        pub = pub_rows.get(level, {})
        for key in pub:
            assert key in g, f"published {level} row {key} covers no non-empty cell"
        withheld_keys: list[tuple] = []
        for key, members in g.items():
            unknown, known = split(members)
            true_sum = sum(cells[k] for k in members)
            if key in pub:
                if level != "cell":
                    assert abs(pub[key] - true_sum) <= TOL * max(1.0, true_sum), f"{level} {key} mismatch"
                    equations.append((unknown, pub[key] - known))
            else:
                withheld_keys.append(key)
                targets.append((level, key, unknown, known, true_sum))
        if level in remainders:
            members = [k for key in withheld_keys for k in g[key]]
            unknown, known = split(members)
            true_sum = sum(cells[k] for k in members)
            assert abs(remainders[level] - true_sum) <= TOL * max(1.0, true_sum), f"remainder {level} mismatch"
            equations.append((unknown, remainders[level] - known))

    truth_x = np.array([cells[k] for k in hidden], dtype=float)
    return _intervals(truth_x, equations, targets, floor, exact)


def _intervals(
    truth_x: np.ndarray, equations: list[tuple[list[int], float]], targets: list[tuple[str, tuple, list[int], float, float]],
    floor: float, exact: bool,
) -> list[Target]:
    # connected components of variables through equations: each target is solved on its own
    n = len(truth_x)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for unknown, _ in equations:
        for v in unknown[1:]:
            parent[find(v)] = find(unknown[0])
    comp_eqs: dict[int, list[int]] = defaultdict(list)
    for e, (unknown, _) in enumerate(equations):
        if unknown:
            comp_eqs[find(unknown[0])].append(e)
        else:
            pass  # a fully published equation: nothing to learn
    comp_vars: dict[int, list[int]] = defaultdict(list)
    for v in range(n):
        comp_vars[find(v)].append(v)

    solved: dict[int, tuple[list[int], Any, np.ndarray, dict[int, int], list[np.ndarray]]] = {}

    def system(root: int) -> tuple[list[int], Any, np.ndarray, dict[int, int], list[np.ndarray]]:
        if root not in solved:
            vs = comp_vars[root]
            local = {v: i for i, v in enumerate(vs)}
            rows, cols, b = [], [], []
            for r, e in enumerate(comp_eqs[root]):
                unknown, rhs = equations[e]
                for v in unknown:
                    rows.append(r)
                    cols.append(local[v])
                b.append(rhs)
            a = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(b), len(vs)))
            # feasible points: the truth itself and LP vertices for random objectives. A target that
            # takes two different values on them is certainly not pinned (two tables agree with the
            # release), which saves most of the per-target LPs
            points = [truth_x[vs]]
            assert np.allclose(a @ points[0], b), "the published table does not match the truth"
            rng = np.random.default_rng(0)
            for _ in range(2):
                w = rng.standard_normal(len(vs))
                for sign in (1.0, -1.0):
                    res = linprog(sign * w, A_eq=a, b_eq=b, bounds=(floor, None), method="highs")
                    if res.status == 0:
                        points.append(res.x)
                    elif res.status == 2:
                        raise AssertionError("the published table is inconsistent (infeasible system)")
            solved[root] = (vs, a, np.asarray(b, dtype=float), local, points)
        return solved[root]

    out: list[Target] = []
    for level, key, unknown, known, truth in targets:
        low = high = known
        parts: dict[int, list[int]] = defaultdict(list)
        for v in unknown:
            parts[find(v)].append(v)
        for root, part in sorted(parts.items()):
            if not comp_eqs[root]:
                high = math.inf  # no equation constrains these cells: unbounded above
                continue
            vs, a, b, local, points = system(root)
            c = np.zeros(len(vs))
            for v in part:
                c[local[v]] += 1.0
            vals = [float(c @ p) for p in points]
            if not exact and max(vals) - min(vals) > 10 * TOL * max(1.0, abs(truth)):
                low, high = low + min(vals), high + max(vals)  # inner bounds: enough to show width
                continue
            lo = linprog(c, A_eq=a, b_eq=b, bounds=(floor, None), method="highs")
            hi = linprog(-c, A_eq=a, b_eq=b, bounds=(floor, None), method="highs")
            if lo.status == 2 or hi.status == 2:
                raise AssertionError("the published table is inconsistent (infeasible system)")
            low += lo.fun if lo.status == 0 else -math.inf
            high += -hi.fun if hi.status == 0 else math.inf
        out.append(Target(level, key, truth, low, high))
    return out


def pinned(targets: list[Target]) -> list[Target]:
    return [t for t in targets if t.pinned]


def narrow(targets: list[Target], interval: float, *, integer: bool = True) -> list[Target]:
    """Targets (from ``attack(..., exact=True)``) narrower than their protection interval."""
    return [t for t in targets if t.narrow(interval, integer)]


def attack_sums(
    published: Any, truth: Any, dims: list[str], rows_metric: str, sum_metric: str,
    levels: dict[str, tuple[str, ...]], lo: float, hi: float,
) -> list[Target]:
    """Exact bounds on every withheld *sum* when the reader knows the clamp bounds ``[lo, hi]``.

    ``truth``: one row per non-empty full-table cell with the dimensions, ``rows`` and ``value``
    (the clamped sum; every row carries a value). Unknowns per hidden cell: rows ``r >= 1`` and
    sum ``s`` with ``lo * r <= s <= hi * r``; published cells, margins and remainders (rows and
    sums) give equations as in :func:`attack`.
    """
    cells: dict[tuple, tuple[float, float]] = {}
    for r in _rows(truth):
        cells[tuple(r[d] for d in dims)] = (float(r["rows"]), float(r["value"]))
    order = sorted(cells, key=repr)
    pub: dict[str, dict[tuple, tuple[float, float]]] = defaultdict(dict)
    rem: dict[str, tuple[float, float]] = {}
    for r in _rows(published):
        level = r.get("level") or "cell"
        vals = (float(r[rows_metric]), float(r[sum_metric]))
        if r.get("is_remainder"):
            rem[level] = vals
        else:
            pub[level][tuple(r[d] for d in levels[level])] = vals
    cell_pub = pub.get("cell", {})
    hidden = [k for k in order if k not in cell_pub]
    n = len(hidden)
    var = {k: j for j, k in enumerate(hidden)}  # rows at j, sum at n + j
    eq_rows: list[dict[int, float]] = []
    eq_rhs: list[float] = []
    targets: list[tuple[str, tuple, list[int], float, float]] = []
    for level, keep in levels.items():
        idx = [dims.index(d) for d in keep]
        groups: dict[tuple, list[tuple]] = defaultdict(list)
        for k in order:
            groups[tuple(k[i] for i in idx)].append(k)
        withheld: list[tuple] = []
        for key, members in groups.items():
            unknown = [var[k] for k in members if k in var]
            known = [cell_pub[k] for k in members if k not in var]
            if key in pub.get(level, {}) and level != "cell":
                for q in (0, 1):
                    eq_rows.append({(q * n + j): 1.0 for j in unknown})
                    eq_rhs.append(pub[level][key][q] - sum(x[q] for x in known))
            elif key not in pub.get(level, {}):
                withheld.append(key)
                targets.append((level, key, unknown, sum(x[1] for x in known), sum(cells[k][1] for k in members)))
        if level in rem:
            members = [k for key in withheld for k in groups[key]]
            unknown = [var[k] for k in members if k in var]
            known = [cell_pub[k] for k in members if k not in var]
            for q in (0, 1):
                eq_rows.append({(q * n + j): 1.0 for j in unknown})
                eq_rhs.append(rem[level][q] - sum(x[q] for x in known))
    a_eq = np.zeros((len(eq_rows), 2 * n))
    for i, row in enumerate(eq_rows):
        for j, c in row.items():
            a_eq[i, j] = c
    a_ub = np.zeros((2 * n, 2 * n))
    for j in range(n):
        a_ub[2 * j, j], a_ub[2 * j, n + j] = lo, -1.0  # lo * r - s <= 0
        a_ub[2 * j + 1, n + j], a_ub[2 * j + 1, j] = 1.0, -hi  # s - hi * r <= 0
    bounds = [(1.0, None)] * n + [(None, None)] * n
    out = []
    for level, key, unknown, known, truth_v in targets:
        c = np.zeros(2 * n)
        for j in unknown:
            c[n + j] = 1.0
        ends = []
        for sign in (1.0, -1.0):
            res = linprog(sign * c, A_ub=a_ub if n else None, b_ub=np.zeros(2 * n) if n else None,
                          A_eq=a_eq if eq_rows else None, b_eq=eq_rhs if eq_rows else None, bounds=bounds, method="highs")
            assert res.status in (0, 3), res.message
            ends.append(sign * res.fun if res.status == 0 else sign * -math.inf)
        out.append(Target(level, key, truth_v, known + ends[0], known + ends[1]))
    return out


# Real sample data sets with the independent truth of their full-table cells (shared by tests).
REAL_SAMPLE_CASES = [
    ("adult_census_occupation", "people",
     "SELECT occupation, sex, native_country AS country, count(*) AS value "
     "FROM read_parquet('{src}') WHERE person_id IS NOT NULL GROUP BY ALL"),
    ("online_retail_country_month", "lines",
     "SELECT Country AS country, CAST(date_trunc('month', InvoiceDate) AS DATE) AS month, count(*) AS value "
     "FROM read_parquet('{src}') WHERE Quantity >= 1 AND CustomerID IS NOT NULL GROUP BY ALL"),
]
