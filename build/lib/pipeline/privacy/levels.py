"""Table levels: the full table (every dimension) and the ``totals`` margins over subsets of them.

Pure: a level is a name, an index and the dimensions it keeps; no data, no engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ReportConfig


@dataclass(frozen=True)
class Level:
    """One table level: the full table (all dimensions) or a margin over a subset of them."""

    index: int
    dims: tuple[str, ...]  # output names of the dimensions kept at this level

    @property
    def name(self) -> str:
        return "cell" if self.index == 0 else ("total" if not self.dims else "by_" + "_".join(self.dims))

    def kept(self, cfg: ReportConfig) -> list[int]:
        """Indexes (in ``cfg.dims``) of the dimensions this level keeps; the others are rolled up."""
        return [i for i, d in enumerate(cfg.dims) if d.name in self.dims]


def levels(cfg: ReportConfig) -> list[Level]:
    """Level 0 is the full table; then one level per ``totals`` entry, in config order."""
    out = [Level(0, tuple(d.name for d in cfg.dims))]
    for i, lv in enumerate(cfg.totals or []):
        names = [d.name for d in cfg.dims if d.name in lv]  # keep the dimension order
        out.append(Level(i + 1, tuple(names)))
    return out
