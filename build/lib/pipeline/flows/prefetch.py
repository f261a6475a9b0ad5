"""Import what a later stage needs in a background thread while DuckDB works.

DuckDB releases the GIL while it runs a query, so the seconds a run spends in one leave the
interpreter idle; importing a heavy module that a later stage needs (scipy.sparse for secondary
suppression: ~0.3 s) in that time takes it off the critical path.

Guarantees: only timing changes. The later ``import`` in the main thread returns the same module
(Python's per-module import locks make it wait for an import in progress); an import that fails
here is ignored and fails again, visibly, where the module is really imported. The thread imports
only third-party modules the main thread does not import while a query runs, so the two never
wait on each other's import locks.
"""

from __future__ import annotations

import importlib
import threading

# every mode reads its aggregates into Arrow and writes Parquet after the main query (~0.05-0.07 s)
AFTER_AGGREGATION = ("pyarrow", "pyarrow.parquet")


def prefetch(*modules: str) -> threading.Thread:
    """Start importing ``modules`` (in order) in a daemon thread; returns the thread."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - re-raised where the module is really imported
                return

    thread = threading.Thread(target=run, name="anonymize-prefetch", daemon=True)
    thread.start()
    return thread
