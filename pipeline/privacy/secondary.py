"""Secondary (complementary) suppression for tables published with margins.

Model (docs/PRIVACY.md, "Secondary suppression"): the adversary knows which cells exist. Every
margin row equals the sum of the full-table cells beneath it, for the additive metrics (row
counts and sums); a published remainder row (see :mod:`remainder`) equals the sum of the withheld
rows of its level. A withheld value is *determined* when these equations fix it.

Method:
1. Singleton rule, iterated to a fixed point: an equation with exactly one withheld member (a
   cell, or the margin itself) gets another member withheld: the published cell that creates the
   fewest new singletons, then the one with the fewest units (least information lost); when no
   cell is left, the margin row itself.
2. Exact check: a withheld variable x_j is determined iff e_j lies in the row space of the
   equations restricted to the withheld variables. This is decided by Gauss-Jordan elimination
   modulo the prime 2^31-1, per connected group of equations, after merging variables that sit in
   exactly the same equations (such twins can always trade value, so they are never determined).
   The elimination is only trusted in the safe direction: a variable counts as *not* determined
   only when an integer null-space vector z (A z = 0, checked in exact integer arithmetic) with
   z_j != 0 was found, i.e. two different tables agree with everything published. Everything
   else counts as determined.
3. Each determined variable comes with the combination of equations that reveals it; the cheapest
   published cell (else margin) that enters that combination is withheld, and steps 1-2 repeat.
   Every round withholds at least one more value, so this ends; it never leaves a determined value
   published (if no complement can be found the run is refused).
Only aggregate cell keys and unit counts are read into Python; never row-level data. All choices
are made in a fixed order (variables are numbered by level and dimension values), so the same
cells always give the same suppressions.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from ..errors import PrivacyRefusal

PRIME = 2_147_483_647  # 2^31 - 1: products of two residues fit in int64
DENSE_LIMIT = 16_000_000  # entries of the E x E transform handled with numpy; more equations: sparse rows
CHUNK = 4096  # columns reduced at a time by the numpy elimination
SPARSE_WORK_LIMIT = 400_000_000  # row-operation budget of the sparse elimination (then refuse)
_SMALL = 1 << 20  # lifted null-vector entries up to this size are verified in float64 (exact)


@dataclass
class TableSystem:
    """The linear structure of a table: variables (cells and margin rows) and their equations.

    Variable ``v`` is cell ``rowids[v]`` of ``__cells`` (its position by level, then dimension values). Equation ``e`` says
    ``value(head[e]) = sum(value(members[e]))``; ``head[e] == -1`` marks an equation whose left
    side is a published constant (a remainder row). ``children[e]`` lists, per finer margin level,
    the equations of that level that partition the cells of ``e`` (used to drop redundant rows).
    """

    rowids: np.ndarray
    level: np.ndarray
    units: np.ndarray
    suppressed: np.ndarray
    head: list[int] = field(default_factory=list)
    members: list[np.ndarray] = field(default_factory=list)
    children: dict[int, list[np.ndarray]] = field(default_factory=dict)
    _csr: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    _eq_csr: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def n(self) -> int:
        return len(self.rowids)

    def add_equation(self, head: int, members: np.ndarray) -> int:
        self.head.append(int(head))
        self.members.append(np.asarray(members, dtype=np.int64))
        self._csr = self._eq_csr = None
        return len(self.head) - 1

    def remove_last_equation(self) -> None:
        self.head.pop()
        self.members.pop()
        self._csr = self._eq_csr = None

    def eq_members(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR of equation → its members (indptr, variables), and every equation's head (-1: none)."""
        if self._eq_csr is None:
            lens = np.fromiter((len(m) for m in self.members), dtype=np.int64, count=len(self.members))
            indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            data = np.concatenate(self.members) if self.members else np.zeros(0, dtype=np.int64)
            self._eq_csr = (indptr, data.astype(np.int64), np.asarray(self.head, dtype=np.int64))
        return self._eq_csr

    def var_eqs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR of variable → equations it appears in: (indptr, equation ids, coefficient ±1)."""
        if self._csr is None:
            vs, es, cs = [], [], []
            for e, (h, mem) in enumerate(zip(self.head, self.members, strict=True)):
                vs.append(mem)
                es.append(np.full(len(mem), e, dtype=np.int64))
                cs.append(np.ones(len(mem), dtype=np.int64))
                if h >= 0:
                    vs.append(np.array([h], dtype=np.int64))
                    es.append(np.array([e], dtype=np.int64))
                    cs.append(np.array([-1], dtype=np.int64))
            v = np.concatenate(vs) if vs else np.zeros(0, dtype=np.int64)
            e = np.concatenate(es) if es else np.zeros(0, dtype=np.int64)
            c = np.concatenate(cs) if cs else np.zeros(0, dtype=np.int64)
            order = np.lexsort((e, v))
            indptr = np.zeros(self.n + 1, dtype=np.int64)
            np.add.at(indptr, v + 1, 1)
            self._csr = (np.cumsum(indptr), e[order], c[order])
        return self._csr

    def eqs_of(self, v: int) -> np.ndarray:
        indptr, eqs, _ = self.var_eqs()
        return eqs[indptr[v]:indptr[v + 1]]


# ----- choosing complements ---------------------------------------------------------------------


def protect(system: TableSystem) -> set[int]:
    """Withhold complements until no withheld variable is determined. Mutates ``system.suppressed``.

    Returns the newly withheld variables. Raises :class:`PrivacyRefusal` if a determined variable
    cannot be protected (which the structure of margin equations rules out; fail closed anyway).
    """
    newly: set[int] = set()
    for _ in range(system.n + 1):
        _singleton_pass(system, newly)
        determined = analyse(system)
        if not determined:
            return newly
        added: list[int] = []
        for var in sorted(determined):
            cert = determined[var]
            if cert is not None and added and _breaks(system, cert, added):
                continue  # an earlier complement of this round already spoils that combination
            choice = _complement(system, var, cert)
            if choice is None:
                continue
            system.suppressed[choice] = True
            newly.add(choice)
            added.append(choice)
        if not added:
            raise PrivacyRefusal(
                "secondary suppression could not protect every withheld cell; nothing published "
                "(report this: the table structure is unusual)"
            )
    raise PrivacyRefusal("secondary suppression did not converge; nothing published")


def _singleton_pass(system: TableSystem, newly: set[int]) -> None:
    sup = system.suppressed
    wcount = np.array(
        [int(sup[m].sum()) + (1 if h >= 0 and sup[h] else 0) for h, m in zip(system.head, system.members, strict=True)],
        dtype=np.int64,
    )
    queue = deque(int(e) for e in np.flatnonzero(wcount == 1) if system.head[e] >= 0)
    while queue:
        e = queue.popleft()
        if wcount[e] != 1:
            continue
        choice = _best_member(system, e, wcount)
        if choice is None:
            h = system.head[e]
            choice = h if h >= 0 and not sup[h] else None
        if choice is None:  # pragma: no cover - a lone withheld member always has a published partner
            continue
        sup[choice] = True
        newly.add(choice)
        for e2 in system.eqs_of(choice):
            wcount[e2] += 1
            if wcount[e2] == 1 and system.head[e2] >= 0:
                queue.append(int(e2))


def _best_member(system: TableSystem, e: int, wcount: np.ndarray) -> int | None:
    """The published member of equation ``e`` to withhold: fewest new singletons, fewest units, first."""
    mem = system.members[e]
    cand = mem[~system.suppressed[mem]]
    if cand.size == 0:
        return None
    indptr, eqs, _ = system.var_eqs()
    starts, ends = indptr[cand], indptr[cand + 1]
    lens = ends - starts
    idx = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    touched = eqs[idx]
    fresh = (wcount[touched] == 0) & (touched != e)
    owner = np.repeat(np.arange(cand.size), lens)
    new_singletons = np.bincount(owner, weights=fresh, minlength=cand.size)
    best = np.lexsort((cand, system.units[cand], new_singletons))[0]
    return int(cand[best])


def _score(system: TableSystem, cert: dict[int, int], cand: np.ndarray) -> np.ndarray:
    """(combination · column) mod p for each candidate variable: nonzero means it enters it."""
    indptr, eqs, coef = system.var_eqs()
    lam = np.zeros(len(system.head), dtype=np.int64)
    for e, c in cert.items():
        lam[e] = c
    starts, ends = indptr[cand], indptr[cand + 1]
    lens = ends - starts
    idx = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    owner = np.repeat(np.arange(cand.size), lens)
    contrib = (lam[eqs[idx]] * coef[idx]) % PRIME
    total = np.zeros(cand.size, dtype=np.int64)
    np.add.at(total, owner, contrib)
    return total % PRIME


def _breaks(system: TableSystem, cert: dict[int, int], added: list[int]) -> bool:
    return bool(np.any(_score(system, cert, np.asarray(added, dtype=np.int64)) != 0))


def _complement(system: TableSystem, var: int, cert: dict[int, int] | None) -> int | None:
    """A published variable whose withholding spoils the combination ``cert`` that reveals ``var``.

    Cells before margin rows, then fewest units, then position. Without a certificate (an
    unverified case), the cheapest published member of the nearest equation is taken instead.
    """
    sup = system.suppressed
    if cert is not None:
        pool = [system.members[e] for e in cert] + [np.array([system.head[e]]) for e in cert if system.head[e] >= 0]
        cand = np.unique(np.concatenate(pool))
        cand = cand[~sup[cand]]
        if cand.size:
            cand = cand[_score(system, cert, cand) != 0]
        if cand.size:
            best = np.lexsort((cand, system.units[cand], system.level[cand] > 0))[0]
            return int(cand[best])
    # breadth-first from var through withheld variables: nearest published cell, else margin
    m_ptr, m_vars, heads = system.eq_members()
    v_ptr, v_eqs, _ = system.var_eqs()
    seen_eq = np.zeros(len(heads), dtype=bool)
    seen_var = np.zeros(system.n, dtype=bool)
    seen_var[var] = True
    frontier = np.unique(system.eqs_of(var))
    while frontier.size:
        seen_eq[frontier] = True
        cells = _gather(m_ptr, m_vars, frontier)
        pub = cells[~sup[cells]]
        if pub.size:  # the cheapest: cells before margins, then fewest units, then position
            return int(pub[np.lexsort((pub, system.units[pub], system.level[pub] > 0))[0]])
        hs = heads[frontier]
        hs = hs[hs >= 0]
        pub = hs[~sup[hs]]
        if pub.size:
            return int(pub[np.lexsort((pub, system.units[pub]))[0]])
        mark = np.zeros(system.n, dtype=bool)
        mark[cells] = True
        mark[hs] = True
        new = np.flatnonzero(mark & sup & ~seen_var)
        seen_var[new] = True
        nxt = _gather(v_ptr, v_eqs, new)
        step = np.zeros(len(heads), dtype=bool)
        step[nxt] = True
        frontier = np.flatnonzero(step & ~seen_eq)
    return None


def _gather(indptr: np.ndarray, data: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``data[indptr[i]:indptr[i + 1]]`` for every ``i`` of ``idx``, concatenated."""
    starts = indptr[idx]
    lens = indptr[idx + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return data[:0]
    return data[np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)]


def nearest_complement(system: TableSystem, var: int) -> int | None:
    """The published cell (else margin) nearest to withheld ``var`` through the equations: the
    complement that widens ``var``'s feasible interval (used by :mod:`pipeline.privacy.protection`)."""
    return _complement(system, var, None)


# ----- the exact check -----------------------------------------------------------------------------


def analyse(system: TableSystem, suppressed: np.ndarray | None = None) -> dict[int, dict[int, int] | None]:
    """Withheld variables that the published values determine.

    Returns variable → certificate: the combination of equations (equation → coefficient mod p)
    that isolates it, or None when the variable is only *not proven* undetermined. A variable is
    left out only when an exactly verified integer null-space vector moves it.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    sup = system.suppressed if suppressed is None else suppressed
    indptr, eqs_flat, coef_flat = system.var_eqs()
    n_eqs = len(system.head)
    # a published margin whose finer margins beneath it are all published is their sum: its
    # equation adds nothing to the row space and is dropped (this splits grand totals apart)
    heads = np.asarray(system.head, dtype=np.int64)
    dropped = np.zeros(n_eqs, dtype=bool)
    for e, kid_lists in system.children.items():
        h = system.head[e]
        if h >= 0 and not sup[h] and any(not sup[heads[k]].any() for k in kid_lists):
            dropped[e] = True
    # the (withheld variable, equation, coefficient) entries, in variable then equation order
    withheld = np.flatnonzero(sup)
    lens = indptr[withheld + 1] - indptr[withheld]
    idx = np.repeat(indptr[withheld] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    owner = np.repeat(np.arange(withheld.size), lens)
    eq, coef = eqs_flat[idx], coef_flat[idx]
    keep = ~dropped[eq]
    owner, eq, coef = owner[keep], eq[keep], coef[keep]
    if owner.size == 0:
        return {}
    # connected groups: components of the bipartite graph withheld variables - equations
    n_w = withheld.size
    graph = coo_matrix((np.ones(owner.size), (owner, n_w + eq)), shape=(n_w + n_eqs, n_w + n_eqs))
    _, labels = connected_components(graph, directed=False)
    counts = np.bincount(owner, minlength=n_w)
    constrained = np.flatnonzero(counts > 0)  # a variable in no equation is unconstrained
    # signature of each variable: its (equation, sign) codes, padded; twins share a signature
    width = int(counts.max())
    pos = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    sig = np.full((n_w, width), -1, dtype=np.int64)
    sig[owner, pos] = eq * 2 + (coef < 0)
    entry_start = np.cumsum(counts) - counts
    order = constrained[np.argsort(labels[constrained], kind="stable")]
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    out: dict[int, dict[int, int] | None] = {}
    for members in np.split(order, cuts):
        out.update(_analyse_group(members, withheld, sig, counts, entry_start, eq, coef))
    return out


def _analyse_group(
    members: np.ndarray, withheld: np.ndarray, sig: np.ndarray, counts: np.ndarray,
    entry_start: np.ndarray, eq: np.ndarray, coef: np.ndarray,
) -> dict[int, dict[int, int] | None]:
    """One connected group: merge twins, then decide each representative exactly."""
    # twins (same equations, same coefficients) trade value with each other: never determined
    _, first, inverse, sizes = np.unique(sig[members], axis=0, return_index=True, return_inverse=True,
                                         return_counts=True)
    inverse = inverse.reshape(-1)
    rep_order = np.argsort(first, kind="stable")  # representatives in variable order
    reps = members[first[rep_order]]
    free = set(withheld[members[sizes[inverse] > 1]].tolist())
    # the representatives' entries, with equations renumbered locally
    lens = counts[reps]
    idx = np.repeat(entry_start[reps] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    eq_ids, local_eq = np.unique(eq[idx], return_inverse=True)
    jj = np.repeat(np.arange(reps.size), lens)
    ii, cc = local_eq.reshape(-1), coef[idx]
    n_eq = eq_ids.size
    if n_eq == 1:  # one equation: a lone variable is fixed by it, two or more trade value
        if reps.size > 1 or free:
            return {}
        return {int(withheld[reps[0]]): {int(eq_ids[0]): int(pow(int(cc[0]) % PRIME, PRIME - 2, PRIME))}}
    if n_eq * n_eq <= DENSE_LIMIT:
        credited, determined = _group_dense(ii, jj, cc, reps.size, n_eq)
    else:
        credited, determined = _group_sparse(_columns(ii, jj, cc, reps.size), n_eq)
    rep_vars = withheld[reps]
    free.update(int(rep_vars[j]) for j in credited)
    return {
        int(rep_vars[j]): (None if cert is None else {int(eq_ids[i]): c for i, c in cert.items()})
        for j, cert in determined.items()
        if int(rep_vars[j]) not in free
    }


def _columns(ii: np.ndarray, jj: np.ndarray, cc: np.ndarray, n_var: int) -> list[list[tuple[int, int]]]:
    cols: list[list[tuple[int, int]]] = [[] for _ in range(n_var)]
    for i, j, c in zip(ii.tolist(), jj.tolist(), cc.tolist(), strict=True):
        cols[j].append((i, c))
    return cols


Analysis = tuple[set[int], dict[int, "dict[int, int] | None"]]


def _group_dense(ii: np.ndarray, jj: np.ndarray, cc: np.ndarray, n_var: int, n_eq: int) -> Analysis:
    """Gauss-Jordan mod p with numpy, streaming over the columns in chunks.

    Only the E x E transform ``T`` (the row operations so far) and one chunk ``T @ A[:, chunk]``
    are held in memory, so groups with very many withheld cells and few equations stay cheap.
    A second pass rebuilds the reduced matrix chunk by chunk: pivot rows that touch a non-pivot
    column are not unit rows, and every non-pivot column's circuit is certified as an integer null
    vector with an exact float64 check (sparse products with small integers), or by rational
    reconstruction. Returns (columns proven free, determined columns -> certificate or None).
    """
    from scipy.sparse import csc_matrix

    cols: list[list[tuple[int, int]]] | None = None  # built only for the rare last-resort check
    a = csc_matrix((cc, (ii, jj)), shape=(n_eq, n_var), dtype=np.int64)
    chunk = max(1, min(CHUNK, 8_000_000 // max(n_eq, 1)))
    t = np.eye(n_eq, dtype=np.int64)
    used = np.zeros(n_eq, dtype=bool)
    piv_cols: list[int] = []
    piv_rows: list[int] = []

    def reduced_t(start: int, stop: int) -> np.ndarray:
        """(T @ A[:, start:stop]) mod p, transposed: row c is column start + c (contiguous)."""
        return (a[:, start:stop].T @ t.T) % PRIME

    for start in range(0, n_var, chunk):
        stop = min(start + chunk, n_var)
        yt = reduced_t(start, stop)
        unused = np.flatnonzero(~used)
        if unused.size == 0:
            continue
        # alive: columns with a nonzero on some unused row (pivot candidates). A pivot on row r only
        # changes the columns that are nonzero in row r, so only those are re-examined.
        alive = np.any(yt[:, unused] != 0, axis=1)
        c = -1
        while True:
            nxt = np.flatnonzero(alive[c + 1:])
            if nxt.size == 0:
                break
            c += 1 + int(nxt[0])
            nz = np.flatnonzero(yt[c])
            cand = nz[~used[nz]]
            # the candidate row with the fewest nonzeros left in this chunk: least fill-in
            r = int(cand[np.argmin(np.count_nonzero(yt[c:, cand], axis=0))]) if cand.size > 1 else int(cand[0])
            inv = pow(int(yt[c, r]), PRIME - 2, PRIME)
            if inv != 1:
                yt[c:, r] = (yt[c:, r] * inv) % PRIME
                t[r] = (t[r] * inv) % PRIME
            others = nz[nz != r]
            ycols = c + np.flatnonzero(yt[c:, r])
            if others.size:
                f = yt[c, others][None, :]
                sel = np.ix_(ycols, others)
                yt[sel] = (yt[sel] - yt[ycols, r][:, None] * f) % PRIME
                tcols = np.flatnonzero(t[r])
                sel = np.ix_(others, tcols)
                t[sel] = (t[sel] - f.T * t[r, tcols][None, :]) % PRIME
            used[r] = True
            piv_cols.append(start + c)
            piv_rows.append(r)
            unused = np.flatnonzero(~used)
            if unused.size == 0:
                break
            alive[ycols] = np.any(yt[np.ix_(ycols, unused)] != 0, axis=1)
    pc = np.asarray(piv_cols, dtype=np.int64)
    pr = np.asarray(piv_rows, dtype=np.int64)
    is_pivot = np.zeros(n_var, dtype=bool)
    is_pivot[pc] = True
    credited: set[int] = set()
    unit = np.ones(len(pc), dtype=bool)
    covered = np.zeros(len(pc), dtype=bool)
    a_p = a[:, pc].astype(np.float64).tocsr()
    for start in range(0, n_var, chunk):
        stop = min(start + chunk, n_var)
        local = np.flatnonzero(~is_pivot[start:stop])
        if local.size == 0:
            continue
        ks = start + local
        sub = reduced_t(start, stop)[np.ix_(local, pr)].T if len(pr) else np.zeros((0, local.size), dtype=np.int64)
        unit &= ~np.any(sub != 0, axis=1)
        z = (-sub) % PRIME
        z = np.where(z > PRIME // 2, z - PRIME, z)
        small = np.all(np.abs(z) <= _SMALL, axis=0)
        a_k = a[:, ks].astype(np.float64).toarray()
        resid = a_p @ z.astype(np.float64) + a_k
        good = small & np.all(resid == 0, axis=0)
        credited.update(int(k) for k in ks[good])
        covered |= np.any(sub[:, good] != 0, axis=1)
        bad = np.flatnonzero(~good)
        if bad.size:  # fractional circuits: rational reconstruction, then the same exact check
            zr = _reconstruct_block(z[:, bad])
            if zr is not None:
                zs, scale = zr
                ok = np.all(np.abs(zs) <= _SMALL, axis=0) & (scale <= _SMALL)
                resid = a_p @ zs.astype(np.float64) + a_k[:, bad] * scale.astype(np.float64)
                ok &= np.all(resid == 0, axis=0)
                credited.update(int(k) for k in ks[bad][ok])
                covered |= np.any(sub[:, bad[ok]] != 0, axis=1)
                bad = bad[~ok]
            for b in bad:  # last resort: exact Python integers, one circuit at a time
                if cols is None:
                    cols = _columns(ii, jj, cc, n_var)
                circuit = {int(pc[x]): int(sub[x, b]) for x in np.flatnonzero(sub[:, b])}
                zt = _certify(int(ks[b]), circuit, cols)
                if zt is not None:
                    credited.update(zt)
    credited.update(int(j) for j in pc[covered])
    determined: dict[int, dict[int, int] | None] = {}
    for b, j in enumerate(pc.tolist()):
        if j in credited:
            continue
        if unit[b]:
            row = t[pr[b]]
            determined[j] = {int(i): int(row[i]) for i in np.flatnonzero(row)}
        else:
            determined[j] = None
    for j in np.flatnonzero(~is_pivot).tolist():
        if j not in credited:
            determined[j] = None
    return credited, determined


def _group_sparse(cols: list[list[tuple[int, int]]], n_eq: int) -> Analysis:
    """The same elimination on dict rows, for groups too large for a dense matrix.

    Refuses (fail closed) when the elimination grows beyond ``SPARSE_WORK_LIMIT`` row operations.
    """
    n_var = len(cols)
    rows: list[dict[int, int]] = [{n_var + i: 1} for i in range(n_eq)]
    col_rows: dict[int, set[int]] = defaultdict(set)
    for j, col in enumerate(cols):
        for i, c in col:
            rows[i][j] = c % PRIME
            col_rows[j].add(i)
    used: set[int] = set()
    pivot_row: dict[int, int] = {}
    work = 0
    for j in range(n_var):
        holders = sorted(col_rows.get(j, ()))
        cand = [r for r in holders if r not in used]
        if not cand:
            continue
        r = cand[0]
        inv = pow(rows[r][j], PRIME - 2, PRIME)
        if inv != 1:
            rows[r] = {c: (v * inv) % PRIME for c, v in rows[r].items()}
        prow = rows[r]
        for o in holders:
            if o == r:
                continue
            row = rows[o]
            f = row[j]
            work += len(prow)
            for c, v in prow.items():
                nv = (row.get(c, 0) - f * v) % PRIME
                if nv:
                    row[c] = nv
                    if c < n_var:
                        col_rows[c].add(o)
                else:
                    row.pop(c, None)
                    if c < n_var:
                        col_rows[c].discard(o)
        if work > SPARSE_WORK_LIMIT:
            raise PrivacyRefusal(
                f"secondary suppression: the margins link {n_var} withheld cells through {n_eq} equations, "
                "too many for the exact disclosure check; publish fewer or coarser totals"
            )
        used.add(r)
        pivot_row[j] = r
    piv_of_row = {r: j for j, r in pivot_row.items()}
    unit = dict.fromkeys(pivot_row, True)
    credited: set[int] = set()
    determined: dict[int, dict[int, int] | None] = {}
    for k in range(n_var):
        if k in pivot_row:
            continue
        circuit = {}
        for r in col_rows.get(k, ()):
            circuit[piv_of_row[r]] = rows[r][k]
            unit[piv_of_row[r]] = False
        z = _certify(k, circuit, cols)
        if z is not None:
            credited.update(z)
        else:
            determined[k] = None
    for j, r in pivot_row.items():
        if j in credited:
            continue
        determined[j] = {c - n_var: v for c, v in rows[r].items() if c >= n_var} if unit[j] else None
    for k in list(determined):
        if k in credited:
            del determined[k]
    return credited, determined


def _certify(k: int, circuit: dict[int, int], cols: list[list[tuple[int, int]]]) -> dict[int, int] | None:
    """An exact integer null vector from a circuit mod p (None if the lift does not verify).

    Over the field the circuit is z_k = 1, z_b = -circuit[b]. Entries are lifted to small integers
    (or to fractions by rational reconstruction, then scaled), and A z = 0 is checked exactly.
    """
    lifted = {k: 1}
    for b, val in circuit.items():
        neg = (-val) % PRIME
        lifted[b] = neg if neg <= PRIME // 2 else neg - PRIME
    z = lifted if all(abs(x) <= _SMALL for x in lifted.values()) else None
    if z is None or not _verify(z, cols):
        z = _reconstruct(lifted)
        if z is None or not _verify(z, cols):
            return None
    return z


def _reconstruct_block(z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised rational reconstruction of the columns of ``z`` (residues lifted to ±p/2).

    Each column (a circuit whose own entry is 1) is returned scaled by the lcm of its entries'
    denominators, with that lcm; None when some denominator does not reconstruct.
    """
    bound = int(np.sqrt(PRIME // 2))
    r0 = np.full(z.shape, PRIME, dtype=np.int64)
    r1 = z % PRIME
    s0 = np.zeros(z.shape, dtype=np.int64)
    s1 = np.ones(z.shape, dtype=np.int64)
    for _ in range(64):
        act = r1 > bound
        if not act.any():
            break
        q = np.where(act, r0 // np.where(r1 == 0, 1, r1), 0)
        r0, r1 = np.where(act, r1, r0), np.where(act, r0 - q * r1, r1)
        s0, s1 = np.where(act, s1, s0), np.where(act, s0 - q * s1, s1)
    if np.any(r1 > bound) or np.any(s1 == 0) or np.any(np.abs(s1) > bound):
        return None
    num = np.where(s1 > 0, r1, -r1)
    den = np.abs(s1)
    scale = np.lcm.reduce(den, axis=0)
    if np.any(scale > _SMALL):
        return None
    return num * (scale[None, :] // den), scale


def _verify(z: dict[int, int], cols: list[list[tuple[int, int]]]) -> bool:
    acc: dict[int, int] = defaultdict(int)
    for j, x in z.items():
        for i, c in cols[j]:
            acc[i] += c * x
    return all(v == 0 for v in acc.values())


def _reconstruct(lifted: dict[int, int]) -> dict[int, int] | None:
    """Rational reconstruction of every entry (|num|, den <= sqrt(p/2)), scaled to integers."""
    import math

    bound = math.isqrt(PRIME // 2)
    fracs = {}
    for j, x in lifted.items():
        r0, r1 = PRIME, x % PRIME
        s0, s1 = 0, 1
        while r1 > bound:
            q = r0 // r1
            r0, r1 = r1, r0 - q * r1
            s0, s1 = s1, s0 - q * s1
        if s1 == 0 or abs(s1) > bound:
            return None
        num, den = (r1, s1) if s1 > 0 else (-r1, -s1)
        fracs[j] = (num, den)
    lcm = 1
    for _, den in fracs.values():
        lcm = lcm * den // math.gcd(lcm, den)
    return {j: num * (lcm // den) for j, (num, den) in fracs.items()}
