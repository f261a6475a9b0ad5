"""Execution engines behind one interface (:class:`pipeline.engines.base.Engine`).

``connect(cfg)`` gives the engine a run uses: embedded DuckDB (the default), or Spark
(``engine.kind: spark``, issue 17, in progress). The flows never import an engine's driver themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ReportConfig
    from .base import Engine


def connect(cfg: ReportConfig | None = None, **settings: Any) -> Engine:
    """An engine for one run, configured from ``cfg.engine`` and ``settings`` (flags win)."""
    if cfg is not None and cfg.engine.kind == "spark":
        from .spark.engine import connect as spark_connect

        return spark_connect(cfg)
    from .duckdb.connection import connect as duckdb_connect

    return duckdb_connect(cfg, **settings)
