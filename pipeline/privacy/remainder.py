"""Which remainder rows may be published (threshold mode, ``remainder: true``); engine-free.

A level's remainder row aggregates every withheld row of that level. It is published only when
(docs/PRIVACY.md, "Remainder rows"):
1. at least two rows of the level are withheld (one withheld row alone would be that row);
2. it aggregates at least ``min_units`` distinct units, and 3. passes the dominance rule: the
   engine judges both over the union of the withheld rows' units, exactly as cells are judged,
   and passes the verdict in as a reason (``None`` when it passes);
4. together with every published cell, margin and already accepted remainder, it determines no
   withheld value: the remainder adds the equation "remainder = sum of the withheld rows of its
   level" and the exact check of :mod:`pipeline.privacy.secondary` must still find nothing
   determined. With the grand total published that equation is already implied (the total minus
   the published rows of the level), so the check is skipped: it could not find anything new;
5. with it, every withheld value keeps its protection interval (:mod:`pipeline.privacy.protection`:
   a remainder of 50 rows over 50 withheld cells, each of which has at least one row, pins them all).
Levels are decided in level order; an accepted remainder is part of the system for the next.
"""

from __future__ import annotations

import numpy as np

from ..config import ReportConfig
from .levels import levels
from .protection import CellValues, ProtectionTooLarge, unprotected
from .secondary import TableSystem, analyse


def _narrows(system: TableSystem, values: CellValues, interval: float) -> bool:
    """Does some withheld value lack its protection interval (condition 5)? Too large to decide
    counts as yes: a remainder row is optional, so it is withheld rather than the run refused."""
    try:
        return bool(unprotected(system, values, interval))
    except ProtectionTooLarge:
        return True


def _members(cfg: ReportConfig, system: TableSystem) -> dict[int, np.ndarray]:
    return {lv.index: np.flatnonzero(system.suppressed & (system.level == lv.index)) for lv in levels(cfg)}


def eligible_levels(cfg: ReportConfig, system: TableSystem) -> list[int]:
    """Levels with at least two withheld rows (condition 1): the only ones with a candidate."""
    members = _members(cfg, system)
    return [lv.index for lv in levels(cfg) if len(members[lv.index]) >= 2]


def choose(cfg: ReportConfig, system: TableSystem, reasons: dict[int, str | None],
           values: CellValues | None) -> tuple[list[int], dict[str, int]]:
    """The levels whose remainder row is published, and the manifest counts.

    ``reasons``: per eligible level, the k/dominance verdict on its candidate (None = passes);
    ``values``: the cells' additive values, for the protection-interval check (condition 5; None
    with ``protection: false``).
    Mutates ``system`` (accepted remainders join it as equations)."""
    lvls = levels(cfg)
    members = _members(cfg, system)
    counts = {"remainder_rows_published": 0, "remainder_rows_withheld": 0}
    accepted: list[int] = []
    total_levels = [lv.index for lv in lvls if lv.index > 0 and not lv.dims]
    implied = bool(total_levels) and bool(np.any((system.level == total_levels[0]) & ~system.suppressed))
    for index in eligible_levels(cfg, system):
        if reasons.get(index) is not None:
            counts["remainder_rows_withheld"] += 1
            continue
        if implied:
            accepted.append(index)
            continue
        system.add_equation(-1, members[index])
        interval = cfg.protection_interval
        narrows = values is not None and interval is not None and _narrows(system, values, interval)
        if analyse(system) or narrows:
            system.remove_last_equation()  # the remainder would pin or narrow a withheld value: keep it back
            counts["remainder_rows_withheld"] += 1
            continue
        accepted.append(index)
    counts["remainder_rows_withheld"] += sum(1 for lv in lvls if len(members[lv.index]) == 1)
    counts["remainder_rows_published"] = len(accepted)
    return accepted, counts
