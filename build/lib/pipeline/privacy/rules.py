"""The disclosure rules, each written once and called from every mode, the gate and ``plan``.

Pure functions of the config and of numbers: the engines render them in SQL (the k threshold as a
bound parameter, the difference window as BETWEEN bounds), Python paths call them directly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import ReportConfig
from .mechanisms import Mechanism


def k_threshold(cfg: ReportConfig) -> int:
    """The k rule: a published row (threshold mode) aggregates at least this many distinct people;
    a DP cell under private selection shows at least this many (noisy). ``min_units``."""
    if cfg.min_units is None:
        raise ValueError("no k applies to this report (DP mode with public partitions)")
    return int(cfg.min_units)


def meets_k(units: int, cfg: ReportConfig) -> bool:
    """Whether a row of ``units`` distinct people may be published under the k rule."""
    return int(units) >= k_threshold(cfg)


def difference_window(cfg: ReportConfig) -> tuple[int, int]:
    """Populations differing from an earlier published cell by this many people (inclusive) are
    withheld by the difference check: 1 to k − 1 (a difference of k or more is itself a valid cell)."""
    return 1, k_threshold(cfg) - 1


def publication_threshold(selection: Mechanism, min_units: int | None) -> int:
    """The noisy unit count a cell must reach to be published under private partition selection:
    the selection mechanism's threshold, and ``min_units`` when it is higher (post-processing).
    The one place this rule is written: the release, the gate and ``plan`` call it."""
    return max(int(selection.threshold or 0), int(min_units or 0))


# A metric whose typical 95% noise half-width exceeds its typical value is flagged (docs/PRIVACY.md)
NOISE_DOMINATED = 1.0


def noise_to_value(cfg: ReportConfig, table: Any) -> dict[str, dict[str, Any]]:
    """Per metric, the median over the published full-table rows of ``ci95 / |value|`` and whether it
    exceeds :data:`NOISE_DOMINATED` ("noise-dominated": the numbers are mostly noise). Computed from
    the published values only (post-processing; reveals nothing new)."""
    from ..tables import np_column

    rows = table
    if "level" in table.column_names:
        import pyarrow.compute as pc

        rows = table.filter(pc.equal(table.column("level"), "cell"))
    out: dict[str, dict[str, Any]] = {}
    for m in cfg.metrics:
        if f"{m.name}_ci95" not in rows.column_names or rows.num_rows == 0:
            continue
        value = np.abs(np_column(rows, m.name).astype(np.float64))
        ci = np_column(rows, f"{m.name}_ci95").astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(value > 0, ci / np.where(value > 0, value, 1.0), np.inf)
        med = float(np.median(ratio))
        out[m.name] = {"median_ci95_over_value": med if math.isfinite(med) else None,
                       "noise_dominated": bool(med > NOISE_DOMINATED)}
    return out


def allowed_columns(cfg: ReportConfig) -> set[str]:
    """Columns a report may have: dimensions, metrics, ``level`` (with totals or remainders),
    ``is_remainder`` (with remainders) and ``<metric>_ci95`` (DP mode)."""
    cols = {d.name for d in cfg.dims} | {m.name for m in cfg.metrics}
    if cfg.totals or cfg.remainder:
        cols.add("level")
    if cfg.remainder:
        cols.add("is_remainder")
    if cfg.privacy is not None:
        cols |= {f"{m.name}_ci95" for m in cfg.metrics}
    return cols
