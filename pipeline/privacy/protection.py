"""Protection intervals: what a reader can narrow each withheld value to (engine-free).

The algebraic check of :mod:`pipeline.privacy.secondary` treats withheld values as free unknowns.
A reader knows more (docs/PRIVACY.md, "What a reader knows"):

- which cells exist, and that every existing cell has at least one row: ``rows >= 1``;
- the clamp bounds (they are in every manifest): a sum of ``c`` clamped values lies in
  ``[lo * c, hi * c]``, and ``0 <= c <= rows`` (``c``: the rows with a value);
- every published margin equals the sum of the cells beneath it, and a published remainder row
  the sum of its level's withheld rows — for rows, values and sums alike.

For every withheld value to protect (the row count when a ``count`` is published; the sum of every
``sum``/``mean`` metric) this module solves the reader's linear programme (HiGHS through scipy):
the smallest and largest value consistent with everything published and known. The value is
*protected* when that feasible interval is at least ``2 * interval * |value|`` wide (the
tau-ARGUS protection interval: ``interval: 0.1`` = ±10%) and, for a row count, spans at least two
whole numbers (the reader knows counts are integers); a sum's interval must have positive width.

Assuming the reader also knows the rows and value counts of every published row, even where only a
sum or a mean is published, gives the reader more than the release states: the check is
conservative (it may withhold more than needed, never less).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PrivacyRefusal
from .secondary import TableSystem

# ZERO_SUMS: a withheld sum of zero (nobody in the cell has a non-zero value) needs no interval: its
# required width 2·interval·0 is zero, and what a reader may learn, that a small group holds no
# value, is documented as a limit in docs/PRIVACY.md (its rows are still protected).
LP_LIMIT = 20_000  # linear programmes one check may solve before it refuses (fail closed)
_TOL = 1e-7


@dataclass
class ValueSlot:
    """One sum/mean metric's per-variable true sums ``s`` and value counts ``c``, with its clamp bounds."""

    s: np.ndarray
    c: np.ndarray
    lo: float
    hi: float


@dataclass
class CellValues:
    """The true additive values of every variable of a :class:`TableSystem` (indexed like it).

    ``rows`` is None when no row count is published (then rows are neither known nor protected).
    """

    rows: np.ndarray | None
    slots: list[ValueSlot] = field(default_factory=list)
    _floor: np.ndarray | None = None

    def row_floor(self) -> np.ndarray:
        """The fewest rows each variable can have: one, and at least its value counts."""
        if self._floor is None:
            assert self.rows is not None
            floor = np.ones(len(self.rows))
            for slot in self.slots:
                floor = np.maximum(floor, slot.c)
            self._floor = floor
        return self._floor


class ProtectionTooLarge(PrivacyRefusal):
    """The check would need more than ``LP_LIMIT`` programmes (a remainder row is then withheld)."""


def required_width(value: Any, interval: float) -> Any:
    """The narrowest feasible interval that protects ``value`` (a number or an array):
    ``2 * interval * |value|``."""
    return 2.0 * interval * abs(value)


def unprotected(system: TableSystem, values: CellValues, interval: float) -> dict[int, str]:
    """Withheld variables whose feasible interval (for the reader above) is too narrow.

    Returns variable → what is exposed (``'rows'`` or ``'sum <slot>'``). Three passes, each
    showing a value wide enough only by exhibiting tables that agree with everything published
    and known (so a value they show wide enough is wide enough):
    1. trades with its *twins* (withheld variables in exactly the same equations with the same
       signs) within the reader's bounds;
    2. per connected group and quantity, programmes that move every remaining target at once as
       far as its protection needs (:func:`_batch`), first with the other quantities fixed at
       their true values (fixing only narrows the reader's feasible set), then, for sums, with
       their value counts free;
    3. the exact programme over the whole group, for each value still in doubt, when the group
       has at most ``FULL_LIMIT`` columns; a larger group's doubtful value counts as exposed
       (fail closed: the caller withholds a complement).
    Refuses (:class:`ProtectionTooLarge`) beyond ``LP_LIMIT`` programmes.
    """
    sup = system.suppressed
    withheld = np.flatnonzero(sup)
    if withheld.size == 0 or (values.rows is None and not values.slots):
        return {}
    # equations as (withheld variables, coefficients); published terms are constants
    eqs: list[tuple[np.ndarray, np.ndarray]] = []
    var_eqs: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for h, mem in zip(system.head, system.members, strict=True):
        vs = [int(m) for m in mem if sup[m]]
        cs = [1.0] * len(vs)
        if h >= 0 and sup[h]:
            vs.append(int(h))
            cs.append(-1.0)
        if vs:
            for v, c in zip(vs, cs, strict=True):
                var_eqs[v].append((len(eqs), c))
            eqs.append((np.asarray(vs, dtype=np.int64), np.asarray(cs)))
    groups: dict[tuple, list[int]] = defaultdict(list)
    for v in withheld.tolist():
        if var_eqs[v]:
            groups[tuple(var_eqs[v])].append(v)
    twins = {sig: np.asarray(g, dtype=np.int64) for sig, g in groups.items()}
    twins_list = list(twins.values())
    gid = np.full(system.n, -1, dtype=np.int64)  # each withheld variable's twin group
    for k, grp in enumerate(twins_list):
        gid[grp] = k
    quantities = _quantities(values)
    by_q = dict(quantities)
    comps: dict[int, list[int]] | None = None
    root_of: dict[int, int] = {}

    def component(v: int) -> list[int]:
        """The withheld variables connected to ``v`` through equations (computed on first use)."""
        nonlocal comps
        if comps is None:
            parent = {int(u): int(u) for u in withheld}

            def find(x: int) -> int:
                while parent[x] != x:
                    parent[x] = parent[parent[x]]
                    x = parent[x]
                return x

            for evs, _ in eqs:
                a = find(int(evs[0]))
                for u in evs[1:].tolist():
                    b = find(u)
                    if a != b:
                        parent[b] = a
            comps = defaultdict(list)
            for u in withheld.tolist():
                root_of[u] = find(u)
                comps[root_of[u]].append(u)
        return comps[root_of[v]]

    exposed: dict[int, str] = {}
    budget = [LP_LIMIT]
    # pass 1: trades with twins; what they cannot show goes to the programmes, by group and quantity
    shown = {name: np.zeros(system.n, dtype=bool) for name, _ in quantities if not name.startswith("count")}
    w = withheld[gid[withheld] >= 0]
    g = gid[w]
    multi = np.bincount(g)[g] >= 2
    for name in shown:
        bottom, top = _twin_ranges_all(w, g, name, values)  # trades with all twins at once
        x = by_q[name][w]
        ok = multi & _wide_many(bottom, top, x, required_width(x, interval), name == "rows")
        if name != "rows" and values.rows is not None:  # then trades of valued rows with one twin
            for k in np.unique(g[multi & ~ok & (x != 0)]).tolist():
                group = twins_list[k]
                bottom, top = _twin_ranges(group, name, values)
                x_g = by_q[name][group]
                shown[name][group] = _wide_many(bottom, top, x_g, required_width(x_g, interval), False)
            shown[name][w[ok]] = True
        else:
            shown[name][w] = ok
    todo: dict[tuple[int, str], list[int]] = defaultdict(list)
    for v in withheld.tolist():
        if not var_eqs[v]:
            continue  # in no equation: nothing published constrains it from above
        for name in shown:  # value counts are not published: they only constrain the sums
            if name != "rows" and float(by_q[name][v]) == 0:
                continue  # a zero sum: see ZERO_SUMS
            if shown[name][v]:
                continue
            component(v)
            todo[(root_of[v], name)].append(v)
    for (root, name), targets in sorted(todo.items()):
        truth = by_q[name]
        integer = name == "rows"
        vs = comps[root]  # type: ignore[index]
        # pass 2: one programme over the whole group moves every remaining target at once as far
        # as its protection needs, half of them up and half down (so that they can trade with each
        # other: targets moved the same way cannot), the halves changing from round to round;
        # what it shows wide enough needs nothing more.
        # Rows alone, or a sum alone, with value counts fixed (bounds and equations only: fast);
        # for a sum that cannot show, with its value counts free too; for rows that cannot (cells
        # whose every row has a value are at their floor), with every value count and sum free
        stages = ([{name}, set(by_q)] if len(by_q) > 1 else [{name}]) if name == "rows" \
            else [{name}, {name, "count " + name.split()[1]}]
        up = dict.fromkeys(targets, 0.0)
        down = dict.fromkeys(targets, 0.0)

        def shown(v: int) -> bool:
            x = float(truth[v])  # noqa: B023 - used within this iteration only
            return _wide(x - down[v], x + up[v], x, required_width(x, interval), integer)  # noqa: B023

        for free_q in stages:
            idle = 0
            for rnd in range(BATCH_ROUNDS if len(free_q) == 1 else 4):
                left = [v for v in targets if not shown(v)]
                if not left or idle == 2:  # two rounds (both ways round) without progress: stop
                    break
                signs = np.where(((np.arange(len(left)) >> (rnd // 2)) + rnd) % 2 == 0, 1, -1)
                got = _batch(vs, left, gid, eqs, var_eqs, quantities, values, free_q, name, interval, signs, budget)
                progress = False
                for (v, d), sign in zip(got.items(), signs.tolist(), strict=True):
                    moved = up if sign > 0 else down
                    if d > moved[v]:
                        moved[v], progress = d, True
                idle = 0 if progress else idle + 1
        # pass 3: each value still in doubt on its own, exactly, over the whole group
        doubt = [v for v in targets if v not in exposed and not shown(v)]
        if not doubt:
            continue
        blocks = _blocks(vs, doubt, gid, set(by_q), values)
        if len(blocks) * len(quantities) > FULL_LIMIT:
            exposed.update(dict.fromkeys(doubt, name))  # too large to solve exactly: exposed (fail closed)
            continue
        lp, first = _reader_lp(blocks, eqs, var_eqs, quantities, values, set(by_q))
        for t, v in enumerate(doubt):
            x = float(truth[v])
            obj = np.zeros(lp[2].shape[1])
            obj[first[name] + t] = 1.0
            top = _maximise(lp, obj, budget)
            if not (top == math.inf or _wide(-_maximise(lp, -obj, budget), top, x, required_width(x, interval), integer)):
                exposed[v] = name
    return exposed


BATCH_ROUNDS = 12  # tables sought per group and quantity to move many targets at once
FULL_LIMIT = 5_000  # LP columns of the exact programme over a connected group's twin groups (larger: exposed)


def _quantities(values: CellValues) -> list[tuple[str, np.ndarray]]:
    """(name, true values) of every LP quantity, in column-block order."""
    out: list[tuple[str, np.ndarray]] = []
    if values.rows is not None:
        out.append(("rows", np.asarray(values.rows, dtype=float)))
    for i, slot in enumerate(values.slots):
        out += [(f"count {i}", np.asarray(slot.c, dtype=float)), (f"sum {i}", np.asarray(slot.s, dtype=float))]
    return out


def _twin_ranges_all(w: np.ndarray, g: np.ndarray, name: str, values: CellValues) -> tuple[np.ndarray, np.ndarray]:
    """Part (a) of :func:`_twin_ranges` (and all of it for rows) for every withheld ``w`` at once,
    ``g`` their twin groups: trades between each member and all its twins together."""
    if name == "rows":
        r = values.rows
        assert r is not None
        floor = values.row_floor()[w]
        spare = r[w] - floor
        return floor.astype(float), r[w] + (np.bincount(g, weights=spare)[g] - spare)
    slot = values.slots[int(name.split()[1])]
    s, c = slot.s[w], slot.c[w]
    room_down, room_up = s - slot.lo * c, slot.hi * c - s
    up = np.minimum(room_up, np.bincount(g, weights=room_down)[g] - room_down)
    down = np.minimum(room_down, np.bincount(g, weights=room_up)[g] - room_up)
    return s - np.maximum(down, 0.0), s + np.maximum(up, 0.0)


def _twin_ranges(group: np.ndarray, name: str, values: CellValues) -> tuple[np.ndarray, np.ndarray]:
    """Inner bounds of each member's feasible interval for the sum ``name`` from trades with its
    twins (the rest of ``group``), value counts unchanged, each twin keeping what the reader's
    bounds demand of it: part (a) of :func:`_twin_ranges_all`, and (b) below. Returns (bottom, top)
    per member."""
    slot = values.slots[int(name.split()[1])]
    s, c, lo, hi = slot.s[group], slot.c[group], slot.lo, slot.hi
    # (a) value moves between a member and all its twins
    bottom, top = _twin_ranges_all(group, np.zeros(group.size, dtype=np.int64), name, values)
    up, down = top - s, s - bottom
    # (b) t rows *with* a value move between a member v and one twin w (rows unchanged), carrying
    # value delta: each side's sum must stay within [lo, hi] times its new value count
    if values.rows is not None:
        r = values.rows[group]
        step = max(1, 4_000_000 // max(1, group.size))
        for a in range(0, group.size, step):
            v = slice(a, a + step)
            off = np.ones((min(step, group.size - a), group.size), dtype=bool)
            off[np.arange(off.shape[0]), np.arange(a, a + off.shape[0])] = False  # v is not its own twin
            rv, cv, sv = r[v, None], c[v, None], s[v, None]
            t = np.minimum(rv - cv, c[None, :])  # v takes t valued rows of twin w
            d = np.minimum(hi * (cv + t) - sv, s[None, :] - lo * (c[None, :] - t))
            ok = off & (t > 0) & (d >= np.maximum(s[None, :] - hi * (c[None, :] - t), lo * (cv + t) - sv))
            up[v] = np.maximum(up[v], np.where(ok, d, -np.inf).max(axis=1))
            t = np.minimum(cv, r[None, :] - c[None, :])  # twin w takes t valued rows of v
            d = np.minimum(sv - lo * (cv - t), hi * (c[None, :] + t) - s[None, :])
            ok = off & (t > 0) & (d >= np.maximum(sv - hi * (cv - t), lo * (c[None, :] + t) - s[None, :]))
            down[v] = np.maximum(down[v], np.where(ok, d, -np.inf).max(axis=1))
    return s - np.maximum(down, 0.0), s + np.maximum(up, 0.0)


def _blocks(vs: list[int], singles: list[int], gid: np.ndarray, free_q: set[str], values: CellValues) -> list[np.ndarray]:
    """The unknowns of a programme over the component ``vs``: each of ``singles`` on its own, and
    every other twin group (same equations, same signs: ``gid``) as one unknown, its members' sum.

    Exact, not an approximation: a group's members enter every equation only through their sum, and
    for the quantity sets solved here (a value count free only together with its sum) each member's
    feasible set is a box, or a cone cut by ``rows >= floor`` — a Minkowski sum of such sets is the
    same shape with summed bounds, so the programme over groups has the same feasible values of
    every single unknown as the programme over cells. Otherwise every variable stays on its own."""
    single = set(singles)
    if any(f"count {i}" in free_q and f"sum {i}" not in free_q for i in range(len(values.slots))):
        return [np.asarray([w], dtype=np.int64) for w in singles + [w for w in vs if w not in single]]
    rest: dict[int, list[int]] = defaultdict(list)
    for w in vs:
        if w not in single:
            rest[int(gid[w])].append(w)
    return [np.asarray([w], dtype=np.int64) for w in singles] + [np.asarray(g, dtype=np.int64) for g in rest.values()]


def _reader_lp(blocks: list[np.ndarray], eqs: list[tuple[np.ndarray, np.ndarray]], var_eqs: dict[int, list[tuple[int, float]]],
               quantities: list[tuple[str, np.ndarray]], values: CellValues,
               free_q: set[str]) -> tuple[tuple, dict[str, int]]:
    """The reader's programme with the quantities ``free_q`` of the variables in ``blocks`` unknown
    (one unknown per block: the sum of its twins, see :func:`_blocks`) and everything else fixed at
    its true value (fixing only narrows the reader's feasible set).

    Rows lie at or above one (and their value counts); value counts between zero and the rows; a
    sum within ``[lo, hi]`` times its value count; every equation holds for every quantity.
    Returns ``(A_ub, b_ub, A_eq, b_eq, bounds)`` and each quantity's first column: block ``j``'s
    unknown of quantity ``q`` is column ``first[q] + j``."""
    from scipy.sparse import csr_matrix

    nb = len(blocks)
    members = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(nb), [len(b) for b in blocks])

    def total(per_var: np.ndarray) -> np.ndarray:
        """Each block's sum of a per-variable array."""
        out = np.zeros(nb)
        np.add.at(out, owner, np.asarray(per_var, dtype=float)[members])
        return out

    names = [nm for nm, _ in quantities if nm in free_q]
    first = {nm: b * nb for b, nm in enumerate(names)}
    truth_of = dict(quantities)
    lows = np.zeros(len(names) * nb)
    highs = np.full(len(names) * nb, np.inf)
    ub_r: list[np.ndarray] = []
    ub_c: list[np.ndarray] = []
    ub_d: list[np.ndarray] = []
    n_ub = 0
    idx = np.arange(nb)

    def ineq(col_a: int, coef_a: float, col_b: int, coef_b: float) -> None:
        """coef_a·x[col_a + j] + coef_b·x[col_b + j] <= 0 for every block j."""
        nonlocal n_ub
        r = n_ub + idx
        ub_r.extend([r, r])
        ub_c.extend([col_a + idx, col_b + idx])
        ub_d.extend([np.full(nb, coef_a), np.full(nb, coef_b)])
        n_ub += nb

    rows_free = "rows" in first
    if rows_free:
        b0 = first["rows"]
        assert values.rows is not None
        floor = np.ones(len(values.rows))
        for i, slot in enumerate(values.slots):
            if f"count {i}" not in free_q:
                floor = np.maximum(floor, slot.c)
        lows[b0:b0 + nb] = total(floor)
    for i, slot in enumerate(values.slots):
        cn, sn = f"count {i}", f"sum {i}"
        c_free, s_free = cn in first, sn in first
        if c_free:
            bc = first[cn]
            if not rows_free and values.rows is not None:
                highs[bc:bc + nb] = total(values.rows)  # value counts within the (fixed) rows
        if s_free:
            bs = first[sn]
            if not c_free:
                lows[bs:bs + nb], highs[bs:bs + nb] = slot.lo * total(slot.c), slot.hi * total(slot.c)
            else:
                lows[bs:bs + nb], highs[bs:bs + nb] = -np.inf, np.inf
        if c_free and rows_free:
            ineq(bc, 1.0, b0, -1.0)
        if s_free and c_free:
            ineq(bc, slot.lo, bs, -1.0)
            ineq(bs, 1.0, bc, -slot.hi)
        elif c_free and not s_free:
            # a fixed sum needs enough value counts: lo * c <= s <= hi * c (blocks are single here)
            s_v = total(slot.s)
            if slot.hi > 0:
                lows[bc:bc + nb] = np.maximum(lows[bc:bc + nb], s_v / slot.hi)
            if slot.lo > 0:
                highs[bc:bc + nb] = np.minimum(highs[bc:bc + nb], s_v / slot.lo)
    # equations: every block's twins share each equation's coefficient, so the block enters once
    touched = sorted({e for b in blocks for e, _ in var_eqs[int(b[0])]})
    n_eq = len(touched)
    ev = np.concatenate([eqs[e][0] for e in touched]) if touched else np.zeros(0, dtype=np.int64)
    ec = np.concatenate([eqs[e][1] for e in touched]) if touched else np.zeros(0)
    er = np.repeat(np.arange(n_eq), [len(eqs[e][0]) for e in touched])
    block_of = np.full(len(quantities[0][1]), -1, dtype=np.int64)
    block_of[members] = owner
    bo = block_of[ev]
    free = bo >= 0
    key, at = np.unique(er[free] * nb + bo[free], return_index=True)
    er_f, ec_f = er[free], ec[free]
    a_eq = csr_matrix((np.tile(ec_f[at], len(names)),
                       (np.concatenate([key // nb + q * n_eq for q in range(len(names))]),
                        np.concatenate([key % nb + first[nm] for nm in names]))),
                      shape=(n_eq * len(names), len(names) * nb))
    # the free part's true value (the published side minus the fixed terms), correctly rounded: the
    # truth must satisfy the equations within the solver's tolerance even where sums sit at a bound
    cuts = np.searchsorted(er_f, np.arange(1, n_eq))
    rhs = [math.fsum(part) for nm in names for part in np.split(ec_f * truth_of[nm][ev[free]], cuts)]
    a_ub = b_ub = None
    if n_ub:
        a_ub = csr_matrix((np.concatenate(ub_d), (np.concatenate(ub_r), np.concatenate(ub_c))), shape=(n_ub, len(names) * nb))
        b_ub = np.zeros(n_ub)
    bounds = [(None if lo == -np.inf else float(lo), None if hi == np.inf else float(hi))
              for lo, hi in zip(lows, highs, strict=True)]
    return (a_ub, b_ub, a_eq, rhs, bounds), first


def _batch(vs: list[int], targets: list[int], gid: np.ndarray, eqs: list[tuple[np.ndarray, np.ndarray]],
           var_eqs: dict[int, list[tuple[int, float]]], quantities: list[tuple[str, np.ndarray]],
           values: CellValues, free_q: set[str], name: str, interval: float, signs: np.ndarray,
           budget: list[int]) -> dict[int, float]:
    """How far one feasible table moves each target in its direction (``signs``: +1 up, -1 down),
    each target counting at most what its protection needs: ``max Σ y_t`` with
    ``y_t <= sign_t·(x_t - x*_t)`` and ``0 <= y_t <= need_t``. Every ``y_t`` is a distance some
    table agreeing with the release lies from the truth (a lower bound on that side of the
    interval). The quantities not in ``free_q`` stay fixed. Returns target → distance, in order."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, hstack, vstack

    truth = dict(quantities)[name]
    lp, first = _reader_lp(_blocks(vs, targets, gid, free_q, values), eqs, var_eqs, quantities, values, free_q)
    a_ub, b_ub, a_eq, b_eq, bounds = lp
    n_x, n_t = a_eq.shape[1], len(targets)
    caps = []
    for v in targets:
        need = required_width(float(truth[v]), interval)
        caps.append(max(1.0, math.ceil(need - _TOL)) if name == "rows" else max(need, _TOL * 1e3 * max(1.0, abs(float(truth[v])))))
    # y_t - sign * x_t <= -sign * x*_t
    yr = csr_matrix((np.ones(n_t), (np.arange(n_t), np.arange(n_t))), shape=(n_t, n_t))
    sg = np.asarray(signs, dtype=float)
    xr = csr_matrix((-sg, (np.arange(n_t), first[name] + np.arange(n_t))), shape=(n_t, n_x))
    rows_y = hstack([xr, yr])
    b_y = -sg * np.asarray([float(truth[v]) for v in targets])
    if a_ub is not None:
        a_ub2 = vstack([hstack([a_ub, csr_matrix((a_ub.shape[0], n_t))]), rows_y]).tocsr()
        b_ub2 = np.concatenate([b_ub, b_y])
    else:
        a_ub2, b_ub2 = rows_y.tocsr(), b_y
    a_eq2 = hstack([a_eq, csr_matrix((a_eq.shape[0], n_t))]).tocsr()
    obj = np.concatenate([np.zeros(n_x), -np.ones(n_t)])
    _spend(budget)
    # one quantity (bounds and equations only): HiGHS's presolve costs ~10x the solve here, measured
    res = linprog(obj, A_ub=a_ub2, b_ub=b_ub2, A_eq=a_eq2, b_eq=b_eq,
                  bounds=list(bounds) + [(0.0, c) for c in caps], method="highs",
                  options={"presolve": len(free_q) > 1})
    if res.status != 0:
        return dict.fromkeys(targets, 0.0)  # nothing shown: the targets go on to their own programmes
    y = res.x[n_x:]
    return {v: float(max(0.0, y[t] - _TOL)) for t, v in enumerate(targets)}


def _spend(budget: list[int]) -> None:
    """Count one programme against ``LP_LIMIT``; refuse (:class:`ProtectionTooLarge`) beyond it."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ProtectionTooLarge(
            f"the protection-interval check needs more than {LP_LIMIT} linear programmes for this "
            "table; publish fewer or coarser totals, or no remainder rows"
        )


def _maximise(lp: tuple, obj: np.ndarray, budget: list[int]) -> float:
    """max of obj · x over the reader's feasible set ``lp`` (inf when unbounded); counts the budget."""
    from scipy.optimize import linprog

    a_ub, b_ub, a_eq, rhs, bounds = lp
    _spend(budget)
    res = linprog(-obj, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=rhs, bounds=bounds, method="highs")
    if res.status == 3:
        return math.inf
    if res.status != 0:  # infeasible: the truth is feasible, so this is a numerical failure
        raise PrivacyRefusal("the protection-interval check failed to solve; nothing published")
    return float(-res.fun)


def _wide_many(bottom: np.ndarray, top: np.ndarray, x: np.ndarray, need: np.ndarray, integer: bool) -> np.ndarray:
    """:func:`_wide`, for many values at once."""
    scale = np.maximum(1.0, np.abs(x))
    if integer:
        width = np.floor(top + _TOL * scale) - np.ceil(bottom - _TOL * scale)
        return width >= np.maximum(1.0, need)
    width = top - bottom
    return (width > _TOL * scale) & (width >= need - _TOL * scale)


def _wide(bottom: float, top: float, x: float, need: float, integer: bool) -> bool:
    """Is [bottom, top] wide enough to protect x?"""
    scale = max(1.0, abs(x))
    if integer:
        width = math.floor(top + _TOL * scale) - math.ceil(bottom - _TOL * scale)
        return width >= max(1.0, need)
    width = top - bottom
    return width > _TOL * scale and width >= need - _TOL * scale


def protect_intervals(system: TableSystem, values: CellValues, interval: float) -> set[int]:
    """Secondary suppression against the reader above: the algebraic protection of
    :func:`pipeline.privacy.secondary.protect`, then further complements until every withheld
    value's feasible interval is wide enough. Mutates ``system.suppressed``; returns the newly
    withheld variables. Refuses when an exposed value cannot be given a complement."""
    from .secondary import nearest_complement, protect

    newly = protect(system)
    for _ in range(system.n + 1):
        exposed = unprotected(system, values, interval)
        if not exposed:
            return newly
        added = []
        for var, name in sorted(exposed.items()):
            choice = _floor_complement(system, values, var) if name == "rows" else None
            if choice is None:
                choice = _widest_complement(system, values, var, name)
            if choice is None:
                choice = nearest_complement(system, var)
            if choice is not None and not system.suppressed[choice]:
                system.suppressed[choice] = True
                newly.add(choice)
                added.append(choice)
        if not added:
            raise PrivacyRefusal(
                "secondary suppression could not give every withheld cell its protection interval; "
                "nothing published (lower protection.interval or publish fewer totals)"
            )
        newly |= protect(system)
    raise PrivacyRefusal("secondary suppression did not converge; nothing published")


def _floor_complement(system: TableSystem, values: CellValues, var: int) -> int | None:
    """The complement for a row count pinned by one equation on its own: an equation whose withheld
    variables all sit at their row floor (one, or their value counts) while its published terms fix
    their total — every one of them is pinned whatever the other equations allow, so only a
    published term of *this* equation helps: its published member with the most rows, else its
    head. None when no equation of ``var`` is like that."""
    rows = values.rows
    if rows is None:
        return None
    floor = values.row_floor()
    sup = system.suppressed
    for e in system.eqs_of(var).tolist():
        mem, head = system.members[e], system.head[e]
        if head >= 0 and sup[head]:
            continue  # its total is withheld too: it can move
        wh = mem[sup[mem]]
        if var not in wh or np.any(rows[wh] > floor[wh]):
            continue
        pub = mem[~sup[mem]]
        if pub.size:
            return int(pub[np.lexsort((pub, -rows[pub]))[0]])
        if head >= 0:
            return int(head)
    return None


def _widest_complement(system: TableSystem, values: CellValues, var: int, name: str) -> int | None:
    """The published full-table cell sharing an equation with ``var`` that holds the most of the
    exposed quantity (the most slack it brings to ``var``'s interval per cell withheld); None
    when no published cell shares one."""
    if name == "rows":
        weight = values.rows
    else:
        kind, i = name.split()
        weight = values.slots[int(i)].c if kind == "count" else values.slots[int(i)].s
    if weight is None:
        return None
    cand = [int(m) for e in system.eqs_of(var) for m in system.members[e]
            if not system.suppressed[m] and system.level[m] == 0]
    if not cand:
        return None
    return max(cand, key=lambda c: (float(weight[c]), -c))
