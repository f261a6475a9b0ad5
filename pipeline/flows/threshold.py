"""Threshold mode: aggregate → k and dominance → difference check → secondary suppression →
remainder rows → collect → the shared finish (gate, stage, publish).

Guarantees (docs/PRIVACY.md, "Threshold mode"): every published row aggregates at least
``min_units`` distinct people; the release history stays locked from the difference check until
this release is recorded and published; the published table is sorted in Python
(:func:`pipeline.engines.duckdb.cells.published_order`), so the same inputs give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ReportConfig
from ..engines.base import Source
from ..engines.duckdb.cells import (
    cells_direct_sql,
    cells_from_per_unit_sql,
    per_unit_sql,
    published_order,
    published_select_sql,
    quality_from_cells_sql,
    quality_from_per_unit_sql,
)
from ..progress import Stages, fault_point
from ..releases.store import Release
from .finish import finish_release
from .quality import aggregate_quality


def aggregate(cfg: ReportConfig, con: Any, source: Source, *, need_per_unit: bool) -> dict[str, Any]:
    """Build ``__cells`` (and ``__per_unit`` when needed); return data-quality counts."""
    if need_per_unit:
        con.run(per_unit_sql(cfg, source.schema))
        fault_point("aggregate.per_unit")
        con.run(cells_from_per_unit_sql(cfg, dominance_n=cfg.dominance.n if cfg.dominance else 0))
        q = quality_from_per_unit_sql(cfg, source.schema)
    else:
        con.run(cells_direct_sql(cfg, source.schema))
        q = quality_from_cells_sql(cfg, source.schema)
    return aggregate_quality(cfg, con, q)


def run_threshold(
    cfg: ReportConfig, run_id: str, con: Any, source: Source, final: Path, stages: Stages, *, summary_html: bool
) -> Release:
    import contextlib

    from ..engines.duckdb import suppression
    from ..state.history import History, history_path
    from ..state.protected import check_exact_release

    # exact numbers of a population under a DP budget would bypass it: refused unless its ledger allows
    dp_permissions = check_exact_release(cfg.state_dir, lambda: con.content_digests([f.path for f in source.files]))
    hpath = history_path(cfg)
    hist = History(hpath) if hpath is not None else None
    release_id = f"{source.source_id}\x1f{cfg.report}\x1f{run_id}"
    need_per_unit = bool(cfg.totals) or cfg.dominance is not None or hist is not None or cfg.remainder
    from .prefetch import AFTER_AGGREGATION, prefetch

    # what later stages import (pyarrow; scipy.sparse for secondary suppression) loads while DuckDB aggregates
    prefetch(*AFTER_AGGREGATION, *(("scipy.sparse", "scipy.sparse.csgraph") if cfg.totals else ()))
    with stages.stage("aggregate"):
        quality = aggregate(cfg, con, source, need_per_unit=need_per_unit)
        stages.count("selected", quality["rows_selected"])
    # the history stays locked from the check until this release is recorded and published
    with hist.locked() if hist is not None else contextlib.nullcontext():
        with stages.stage("suppress"):
            con.run(suppression.primary_sql(cfg))
            if hist is not None:
                from ..engines.duckdb.difference import apply_difference_check

                apply_difference_check(cfg, con, hist, release_id, source.source_id, source.schema)
            if cfg.totals:
                from ..engines.duckdb.secondary import apply_secondary_suppression

                apply_secondary_suppression(cfg, con)
            con.execute(suppression.finalize_sql())
            cell_counts = suppression.counts(con)
            if cfg.remainder:
                from ..engines.duckdb.remainder import apply_remainder

                cell_counts.update(apply_remainder(cfg, con))
                if hist is not None:
                    from ..engines.duckdb.difference import check_new_remainders

                    dropped = check_new_remainders(cfg, con, hist, release_id)
                    if dropped:
                        cell_counts["remainder_rows_published"] -= dropped
                        cell_counts["remainder_rows_withheld"] = cell_counts.get("remainder_rows_withheld", 0) + dropped
                        cell_counts["remainder_rows_withheld_difference"] = dropped
        with stages.stage("collect"):
            if cfg.remainder:
                from ..engines.duckdb.remainder import (
                    published_select_sql as select_with_remainders,
                )

                table = collect_published(cfg, con.run(select_with_remainders(cfg)).arrow())
            else:
                table = collect_published(cfg, con.run(published_select_sql(cfg)).arrow())
        privacy = {
            "mode": "threshold",
            "min_units": cfg.min_units,
            "unit_of_privacy": "privacy_unit (column name withheld from outputs)",
            "dominance": cfg.dominance.model_dump(exclude_none=True) if cfg.dominance else None,
            "totals": cfg.totals or [],
            "secondary_suppression": bool(cfg.totals),
            "difference_check": (
                {"history": str(hist.path), "rule": "withhold cells where the people present in only one of "
                 "this cell and an earlier published cell over the same source columns and values, plus "
                 "the people whose contribution to a quantity both publish differs, number 1 to "
                 "min_units-1"}
                if hist is not None else "off (difference_check: false in the config)"
            ),
        }
        if cfg.totals or cfg.remainder:
            interval = cfg.protection_interval
            privacy["protection"] = (
                {"interval": interval, "rule": "every withheld value's feasible range, for a reader who knows the "
                 "bounds, that cells exist and have a row, is at least 2 x interval x value wide (docs/PRIVACY.md)"}
                if interval is not None else "off (protection: false in the config): the algebraic check only"
            )
        if dp_permissions:
            privacy["dp_budgeted_source"] = dp_permissions
        if cfg.remainder:
            privacy["remainder"] = "one row per level aggregating its withheld rows, when safe (docs/PRIVACY.md)"

        def record() -> None:
            if hist is not None:
                from ..engines.duckdb.difference import record_release

                record_release(cfg, con, hist, release_id, source.source_id, run_id)

        return finish_release(
            cfg, run_id, con, source, final, stages, table,
            quality=quality, cells=cell_counts, privacy=privacy, summary_html=summary_html,
            before_publish=record, unit_pairs="__per_unit" if need_per_unit else None, cell_units="__cells",
        )


def collect_published(cfg: ReportConfig, table: Any) -> Any:
    """The published table in its documented order (:func:`pipeline.engines.duckdb.cells.published_order`), without the
    ``__level`` sort key. The order is computed here from the values, never taken from the engine."""
    from ..tables import sort_table

    table = sort_table(table, published_order(cfg))
    return table.drop_columns(["__level"])
