"""Aggregate-statistics anonymization pipeline.

Public API (the CLI is a thin layer over it)::

    from pipeline import load_config, run_report, open_release
    cfg = load_config("configs/demo.yaml")
    release = run_report(cfg.with_overrides(min_units=100), run_id="2026-11-23")
    release.table, release.manifest, release.explain()

Imports of DuckDB, pandas and OpenDP are lazy so ``anonymize --help`` and ``validate`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "__version__",
    "load_config",
    "run_report",
    "open_release",
    "plan_report",
    "catalogue",
    "ConfigError",
    "SourceError",
    "PrivacyRefusal",
    "PipelineError",
    "LedgerError",
    "ReleaseError",
]

from .errors import (
    ConfigError,
    LedgerError,
    PipelineError,
    PrivacyRefusal,
    ReleaseError,
    SourceError,
)

if TYPE_CHECKING:
    from pathlib import Path

    from .config import ReportConfig
    from .flows.whatif import Plan
    from .releases.store import Release


def load_config(path: Any) -> ReportConfig:
    """Load and validate a YAML report config (raises ConfigError with file, key and line)."""
    from .config import load_config as _load

    return _load(path)


def run_report(
    cfg: ReportConfig,
    run_id: str | None,
    *,
    output_dir: str | Path | None = None,
    verbose: bool = False,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
    summary_html: bool = True,
    as_of: Any = None,
    log_format: str = "text",
) -> Release:
    """Run a report and publish it atomically; same guarantees and ledger as ``anonymize run``.
    ``as_of`` (a date) resolves the config's ``window`` (``run_id=None`` names the run after it);
    the other options are ``run``'s flags."""
    from .flows.run import run_report as _run

    return _run(cfg, run_id, output_dir=output_dir, verbose=verbose, threads=threads, memory_limit=memory_limit,
                temp_directory=temp_directory, summary_html=summary_html, as_of=as_of, log_format=log_format)


def open_release(path: Any) -> Release:
    """Read a published release folder back (table + manifest)."""
    from .releases.store import open_release as _open

    return _open(path)


def catalogue(output_dir: Any) -> list[dict[str, Any]]:
    """Every release under ``output_dir``: report, run id, mode, window, cells published, gate
    verdict, ε spent, sha256 and whether the file still matches it (``anonymize releases``)."""
    from .releases.store import catalogue as _catalogue

    return _catalogue(output_dir)


def plan_report(
    cfg: ReportConfig,
    *,
    min_units: list[int] | None = None,
    epsilons: list[float] | None = None,
    selection_shares: list[float] | None = None,
) -> Plan:
    """What-if planning (internal only, never a release, never spends budget)."""
    from .flows.whatif import plan_report as _plan

    return _plan(cfg, min_units=min_units, epsilons=epsilons, selection_shares=selection_shares)
