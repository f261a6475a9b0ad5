"""Secondary (complementary) suppression for tables published with margins.

Model: every published margin row equals the sum of the full-table cells beneath it (for the
additive metrics: row counts and sums). A withheld cell must not be derivable from the published
margins and cells, alone or in combination.

Method (documented in docs/PRIVACY.md):
1. Singleton rule, iterated to a fixed point: any margin equation whose withheld members
   (cells, or the margin itself) number exactly one gets another member withheld: the published
   full-table cell with the fewest units beneath it (least information lost); when none is left,
   the margin row itself.
2. Exact check: for each connected group of equations, a withheld variable is determined iff
   its unit vector lies in the row space of the equations restricted to withheld variables. Any
   determined variable gets one more complementary suppression in one of its equations, and the
   check repeats. Groups larger than ``EXACT_LIMIT`` variables use a randomised null-space test.
Only aggregate cell keys and unit counts are read into Python; never row-level data.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .config import ReportConfig
from .plan import dim_key, levels

if TYPE_CHECKING:
    import duckdb

EXACT_LIMIT = 4000


def apply_secondary_suppression(cfg: ReportConfig, con: duckdb.DuckDBPyConnection) -> int:
    """Mark complementary suppressions in ``__cells`` (``__reason = 'secondary'``). Returns how many."""
    nd = len(cfg.dims)
    keys = [dim_key(i) for i in range(nd)]
    order = ", ".join(["__level"] + [f"{k} NULLS FIRST" for k in keys])
    fetched = con.execute(
        f"SELECT rowid, __level, {', '.join(keys)}, __units, __reason IS NOT NULL FROM __cells ORDER BY {order}"
    ).fetchall()
    # variables are numbered by sorted position, so choices do not depend on physical row order
    rowids = [r[0] for r in fetched]
    rows = [(i, *r[1:]) for i, r in enumerate(fetched)]
    lvls = levels(cfg)
    keep_idx = {lv.index: [i for i, d in enumerate(cfg.dims) if d.name in lv.dims] for lv in lvls}
    cell_ids: list[int] = []
    units: dict[int, int] = {}
    suppressed: dict[int, bool] = {}
    margin_of: dict[tuple[int, tuple], int] = {}
    cell_keys: dict[int, tuple] = {}
    for r in rows:
        rid, level, *vals = r
        dims, n_units, sup = tuple(vals[:nd]), vals[nd], vals[nd + 1]
        units[rid] = int(n_units)
        suppressed[rid] = bool(sup)
        if level == 0:
            cell_ids.append(rid)
            cell_keys[rid] = dims
        else:
            margin_of[(level, tuple(dims[i] for i in keep_idx[level]))] = rid
    # equations: margin rid -> member cell rids
    members: dict[int, list[int]] = defaultdict(list)
    for rid in cell_ids:
        k = cell_keys[rid]
        for lv in lvls[1:]:
            mk = (lv.index, tuple(k[i] for i in keep_idx[lv.index]))
            m = margin_of.get(mk)
            if m is not None:
                members[m].append(rid)
    newly = protect(members, suppressed, units)
    if newly:
        con.execute("CREATE OR REPLACE TEMP TABLE __secondary (rid BIGINT)")
        con.executemany("INSERT INTO __secondary VALUES (?)", [[rowids[r]] for r in sorted(newly)])
        con.execute(
            "UPDATE __cells SET __reason = 'secondary' WHERE rowid IN (SELECT rid FROM __secondary)"
        )
    return len(newly)


def protect(members: dict[int, list[int]], suppressed: dict[int, bool], units: dict[int, int]) -> set[int]:
    """Choose complementary suppressions so no withheld variable is determined. Mutates ``suppressed``."""
    newly: set[int] = set()
    for _ in range(1000):
        changed = _singleton_pass(members, suppressed, units, newly)
        determined = determined_variables(members, suppressed)
        if not determined and not changed:
            break
        for var in sorted(determined):
            if not _add_complement_for(var, members, suppressed, units, newly):
                continue
            break  # re-check after each addition: one complement may fix several
    return newly


def _singleton_pass(members, suppressed, units, newly) -> bool:
    changed_any = False
    changed = True
    while changed:
        changed = False
        for m, cells in members.items():
            withheld = [c for c in cells if suppressed[c]] + ([m] if suppressed[m] else [])
            if len(withheld) == 1:
                choice = _cheapest(cells, suppressed, units)
                if choice is None:
                    choice = m if not suppressed[m] else None
                if choice is not None:
                    suppressed[choice] = True
                    newly.add(choice)
                    changed = changed_any = True
    return changed_any


def _cheapest(cells: list[int], suppressed: dict[int, bool], units: dict[int, int]) -> int | None:
    cands = [c for c in cells if not suppressed[c]]
    if not cands:
        return None
    return min(cands, key=lambda c: (units[c], c))


def _add_complement_for(var, members, suppressed, units, newly) -> bool:
    for m, cells in members.items():
        if var == m or var in cells:
            choice = _cheapest(cells, suppressed, units)
            if choice is None and not suppressed[m]:
                choice = m
            if choice is not None:
                suppressed[choice] = True
                newly.add(choice)
                return True
    return False


def determined_variables(members: dict[int, list[int]], suppressed: dict[int, bool]) -> set[int]:
    """Withheld variables whose value follows from the published values by linear algebra."""
    import numpy as np

    # equations restricted to withheld variables; group them into connected components
    eqs: list[list[int]] = []
    for m, cells in members.items():
        vars_ = [c for c in cells if suppressed[c]] + ([m] if suppressed[m] else [])
        if vars_:
            eqs.append(vars_)
    if not eqs:
        return set()
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in eqs:
        for v in e[1:]:
            parent[find(v)] = find(e[0])
    comps: dict[int, list[list[int]]] = defaultdict(list)
    for e in eqs:
        comps[find(e[0])].append(e)
    out: set[int] = set()
    for comp_eqs in comps.values():
        variables = sorted({v for e in comp_eqs for v in e})
        index = {v: i for i, v in enumerate(variables)}
        a = np.zeros((len(comp_eqs), len(variables)))
        for r, e in enumerate(comp_eqs):
            for v in e:
                a[r, index[v]] = 1.0
        out |= {variables[i] for i in _determined_columns(a)}
    return out


def _determined_columns(a: Any) -> list[int]:
    """Columns j with e_j in the row space of ``a`` (exact SVD null space, or randomised if large)."""
    import numpy as np

    n = a.shape[1]
    if n <= EXACT_LIMIT:
        _, s, vt = np.linalg.svd(a, full_matrices=True)
        rank = int((s > 1e-9 * max(1.0, s[0] if len(s) else 1.0)).sum())
        null = vt[rank:]  # rows span the null space
        if null.shape[0] == 0:
            return list(range(n))
        norms = np.abs(null).max(axis=0)
        return [j for j in range(n) if norms[j] < 1e-9]
    # randomised: project random vectors onto the null space with least squares
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import lsqr

    sa = csr_matrix(a)
    rng = np.random.default_rng(12345)
    seen = np.zeros(n)
    for _ in range(3):
        r = rng.standard_normal(n)
        y = lsqr(sa.T, r, atol=1e-12, btol=1e-12, iter_lim=10 * n)[0]
        v = r - sa.T @ y
        seen = np.maximum(seen, np.abs(v))
    return [j for j in range(n) if seen[j] < 1e-6]
