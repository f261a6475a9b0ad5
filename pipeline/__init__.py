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

# The API functions are re-exported lazily (PEP 562): one definition each, in the module that owns
# it, and ``import pipeline`` stays free of DuckDB, pandas and OpenDP.
_LAZY = {
    "load_config": "pipeline.config",
    "run_report": "pipeline.flows.run",
    "open_release": "pipeline.releases.store",
    "catalogue": "pipeline.releases.store",
    "plan_report": "pipeline.flows.whatif",
}

if TYPE_CHECKING:
    from .config import load_config
    from .flows.run import run_report
    from .flows.whatif import plan_report
    from .releases.store import catalogue, open_release


def __getattr__(name: str) -> Any:
    """Import an API function on first use (``from pipeline import run_report`` included)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
