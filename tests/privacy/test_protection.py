"""The complement rule of protection intervals: which published cell is withheld next."""

from __future__ import annotations

import numpy as np

from pipeline.privacy.protection import CellValues, ValueSlot, _widest_complement
from pipeline.privacy.secondary import TableSystem


def _system() -> TableSystem:
    # cells 0..4 at the full level, two margins (5 = 0+1+2, 6 = 2+3+4) at level 1; cell 0 withheld
    system = TableSystem(rowids=np.arange(7), level=np.array([0, 0, 0, 0, 0, 1, 1]),
                         units=np.array([3, 8, 8, 20, 5, 19, 33]),
                         suppressed=np.array([True, False, False, False, False, False, False]))
    system.add_equation(5, np.array([0, 1, 2]))
    system.add_equation(6, np.array([2, 3, 4]))
    return system


def test_the_published_cell_sharing_an_equation_with_the_most_of_the_quantity_is_chosen() -> None:
    rows = np.array([2.0, 7.0, 7.0, 50.0, 1.0, 16.0, 58.0])
    sums = np.array([10.0, 90.0, 30.0, 900.0, 5.0, 130.0, 935.0])
    values = CellValues(rows=rows, slots=[ValueSlot(s=sums, c=rows.copy(), lo=0.0, hi=100.0)])
    system = _system()
    # rows: cells 1 and 2 share an equation with 0 and hold 7 each (tie: the lower index); cell 3
    # (50 rows) shares none, the margin 5 is not a full-table cell
    assert _widest_complement(system, values, 0, "rows") == 1
    # the sum of metric slot 0: cell 1 holds 90 > 30
    assert _widest_complement(system, values, 0, "sum 0") == 1
    values.slots[0].s[2] = 95.0
    assert _widest_complement(system, values, 0, "sum 0") == 2
    # a value count is weighed by counts, not sums
    values.slots[0].c[:] = [1, 2, 6, 40, 1, 9, 47]
    assert _widest_complement(system, values, 0, "count 0") == 2
    # a withheld candidate is not chosen; with none left, there is no complement
    system.suppressed[1] = system.suppressed[2] = True
    assert _widest_complement(system, values, 0, "rows") is None
    # no published row count: nothing to weigh by
    assert _widest_complement(_system(), CellValues(rows=None, slots=[]), 0, "rows") is None
