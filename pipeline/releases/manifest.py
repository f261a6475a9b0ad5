"""The manifest and the Parquet provenance of a release: deterministic facts only (no clock time).

Guarantees: :func:`build_provenance` depends only on the config, the source description, the
published table's columns and the run's counts, so the same inputs give the same bytes; in DP
mode exact data-dependent counts are withheld (they are not covered by the DP guarantee).
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ..config import ReportConfig
from ..engines.base import Source


def software() -> dict[str, str]:
    import duckdb
    import pyarrow

    info = {"name": "anonymize-pipeline", "version": __version__, "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__}
    try:
        # the installed version, without importing OpenDP (threshold mode never loads it; the
        # module has no __version__ either)
        from importlib.metadata import PackageNotFoundError, version

        info["opendp"] = version("opendp")
    except PackageNotFoundError:  # pragma: no cover
        pass
    return info


def columns_entry(cfg: ReportConfig, table: Any) -> dict[str, Any]:
    return {
        "dimensions": [d.name for d in cfg.dims],
        "metrics": [m.name for m in cfg.metrics],
        "level": bool(cfg.totals),
        "all": list(table.column_names),
    }


# counts of published rows: a reader counts these in the table itself
PUBLISHED_COUNTS = ("cells_published", "public_partitions", "remainder_rows_published")


def build_provenance(
    cfg: ReportConfig, run_id: str, source: Source, table: Any, *, quality: dict, cells: dict, privacy: dict
) -> dict[str, Any]:
    """Deterministic facts about a release (no clock time): stored in the Parquet metadata too.

    States no count of the withheld part: rows read, dropped or aggregated, cells computed or
    withheld (per reason), withheld remainder rows and source row counts are exact statistics that,
    set against the published rows, reveal what was withheld (in DP mode they are not covered by
    the guarantee either). They are kept outside the release (:mod:`pipeline.state.internal`).
    Published counts (cells and remainder rows published, public partitions) stay: a reader counts
    them in the table anyway.
    """
    dp = cfg.mode == "dp"
    withheld = ("withheld: exact counts are not covered by the DP guarantee (kept outside the release)" if dp else
                "withheld: exact counts of the withheld part would reveal it (kept outside the release)")
    quality = {"withheld": withheld}
    cells = {k: v for k, v in cells.items() if k in PUBLISHED_COUNTS}
    cells["withheld"] = withheld
    return {
        "format_version": 1,
        "report": cfg.report,
        "run_id": run_id,
        "mode": cfg.mode,
        "software": software(),
        "config_hash": cfg.config_hash(),
        "config": cfg.release_config(),  # the engine is in the manifest only: it changes no number
        "source": source.manifest_entry(exact_counts=False),
        "rows": quality,
        "cells": cells,
        "privacy": privacy,
        "columns": columns_entry(cfg, table),
    }
