"""Difference checks across threshold-mode releases (in the spirit of Ads Data Hub's).

Two releases whose cells have the same dimension values but populations (or contributions) that
differ by a few people let a reader subtract one from the other. The check is on by default. The history file keeps, per published cell of
every threshold release of a source, keyed hashes of its units (never raw identifiers); a new
cell whose population differs from an already published cell with the same dimension values by
at least 1 and fewer than ``min_units`` units is suppressed (reason ``difference``).

Files: ``<history>`` (DuckDB: ``releases``, ``cell_units``), ``<history>.lock``, ``<history>.secret``
(32 random bytes, mode 0600: the salt of the unit hashes). The Spark engine keeps the same tables
as Parquet in the folder :meth:`History.store` names (``<history>`` with the suffix ``.spark``),
written by Spark; one history is kept by one engine: a run on the other engine refuses rather
than compare with only part of what was published.

Guarantees:
- Unit hashes are ``sha256(secret ‖ unit)`` truncated to 64 bits: without the secret they cannot
  be matched to user ids; the history file never holds an identifier.
- A release's cells are recorded before it becomes visible; a failed or refused run may leave a
  record (which only makes later checks stricter), never the reverse.
- Re-running a run id compares against other releases only, so reruns stay byte-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..config import ReportConfig
from .files import file_lock, load_or_create_secret


def history_path(cfg: ReportConfig) -> Path | None:
    """Where the release history lives: ``history:``, else ``release_history.duckdb`` in the state
    folder (beside the budget ledger, or ``state/`` beside the output folder, never inside it).
    None only when the config turns the check off explicitly (``difference_check: false``)."""
    if not cfg.difference_check:
        return None
    if cfg.history:
        return cfg.resolve(cfg.history).resolve()
    return cfg.state_dir / "release_history.duckdb"


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.secret_path = path.with_name(path.name + ".secret")

    @contextlib.contextmanager
    def locked(self) -> Iterator[History]:
        with file_lock(self.lock_path, what=f"release history {self.path}"):
            yield self

    def secret_hex(self) -> str:
        return load_or_create_secret(self.secret_path).hex()

    def store(self, engine: str) -> Path:
        """Where ``engine`` (``duckdb`` or ``spark``) keeps this history: the DuckDB file, or the
        Spark engine's Parquet folder beside it. Raises LedgerError when the *other* engine's store
        exists: its releases could not be compared, and a difference with them would go unseen."""
        from ..errors import LedgerError

        spark = (self.path.with_suffix(".spark") if self.path.suffix in (".duckdb", ".db")
                 else self.path.with_name(self.path.name + ".spark"))
        mine, other, other_kind = (spark, self.path, "duckdb") if engine == "spark" else (self.path, spark, "spark")
        if other.exists():
            raise LedgerError(
                f"the release history {self.path} is kept by the {other_kind} engine (in {other}); this run's "
                f"engine ({engine}) cannot compare with the releases recorded there, so it is refused: run this "
                f"report with engine.kind: {other_kind} (a new history: path would not know those releases; "
                "docs/PRIVACY.md, Engines)")
        return mine
