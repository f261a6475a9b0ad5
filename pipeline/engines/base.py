"""What every engine shares: the Engine interface, the description of an opened source, and how a
source path names files.

The flows, the gate and ``plan`` talk to an engine only through :class:`Engine`: SQL (the
builders of :mod:`pipeline.engines.duckdb` are the single source of truth; another engine
translates them) goes in, :class:`Result` comes out: rows, numpy columns or an Arrow table of
aggregates, in no guaranteed order.

Guarantees:
- :func:`resolve_files` lists exactly the files the config names (globs expanded, folders walked,
  sorted) and refuses a path that names none, with the path as written and as resolved.
- :func:`default_source_id` keys the privacy budget by the population: ``budget.source_id`` when
  given, else the resolved source path.
- A :class:`Source` carries metadata only (format, files, schema, fingerprint): never row data.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .duckdb.sql import Query

from ..config import ReportConfig
from ..errors import SourceError


@dataclass(frozen=True)
class SourceFile:
    path: str
    size_bytes: int
    mtime_ns: int
    rows: int | None = None


@dataclass
class Source:
    """What was opened: format, files, schema (column → DuckDB type) and a fingerprint."""

    format: str
    files: list[SourceFile]
    schema: dict[str, str]
    table: str | None = None
    source_id: str = ""
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def manifest_entry(self, *, exact_counts: bool = True) -> dict[str, Any]:
        """Source description for a manifest; without ``exact_counts`` (DP mode) sizes and row
        counts are left out, since they are exact statistics of the data."""
        files = [{"path": f.path, "size_bytes": f.size_bytes, "rows": f.rows} for f in self.files]
        if not exact_counts:
            files = [{"path": f.path} for f in self.files]
        out = {
            "format": self.format,
            "source_id": self.source_id,
            "fingerprint": self.fingerprint,
            "table": self.table,
            "files": files,
        }
        if self.extra.get("exclusions"):
            out["exclude_units"] = self.extra["exclusions"]  # facts about the lists, not the data
        return out


def detect_format(cfg: ReportConfig) -> str:
    if cfg.source.format != "auto":
        return cfg.source.format
    p = cfg.source.path.lower()
    if p.endswith((".duckdb", ".db")):
        return "duckdb"
    if p.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        return "csv"
    if p.endswith((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")):
        return "json"
    return "parquet"


def resolve_files(cfg: ReportConfig) -> list[Path]:
    """The concrete files the source path names (globs expanded, sorted). Raises if none. A URL
    source (Spark only) is listed by the engine instead (``SparkEngine.open_source``)."""
    from ..config import source_url

    if source_url(cfg.source.path):
        raise SourceError(f"source.path {cfg.source.path!r} is a URL: only the Spark engine lists it")
    raw = os.path.normpath(str(cfg.resolve(cfg.source.path)))  # "a/../b" → "b": one name per file
    if glob.has_magic(raw):
        files = sorted(Path(p) for p in glob.glob(raw, recursive=True) if Path(p).is_file())
        if not files:
            raise SourceError(
                f"source.path {cfg.source.path!r}: the glob matches no files ({raw}); "
                "check the pattern (paths are relative to the config file) and that the export ran"
            )
        return files
    p = Path(raw)
    if p.is_dir():
        files = sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith((".", "_")))
        if not files:
            raise SourceError(f"source.path {cfg.source.path!r}: the folder {raw} holds no files")
        return files
    if not p.exists():
        raise SourceError(
            f"source.path {cfg.source.path!r}: file not found ({raw}); "
            "check the path (relative to the config file) and that the export ran"
        )
    return [p]


def default_source_id(cfg: ReportConfig) -> str:
    """The budget's population key: explicit ``budget.source_id`` or the resolved source path."""
    from ..config import source_url

    if cfg.budget and cfg.budget.source_id:
        return cfg.budget.source_id
    url = source_url(cfg.source.path)
    if url:
        return url.rstrip("/")  # a URL names the same data from every config folder
    sid = str(cfg.resolve(cfg.source.path).resolve())
    return sid + (f"#{cfg.source.table}" if cfg.source.table else "")


class Result(Protocol):
    """A query's result, read once. Its row order is not guaranteed (nothing may rely on it)."""

    @property
    def description(self) -> Any: ...

    def fetchall(self) -> list[tuple]: ...

    def fetchone(self) -> tuple | None: ...

    def fetchnumpy(self) -> dict[str, Any]: ...

    def arrow(self) -> Any: ...


class Engine(Protocol):
    """An execution engine for one run: temp tables and views live in it; only aggregates leave it."""

    name: str
    Error: type[Exception]  # the engine's own error class (the flows turn it into SourceError)

    def execute(self, sql: str, params: Any = None) -> Result: ...

    def executemany(self, sql: str, rows: Any) -> None: ...

    def run(self, q: Query) -> Result: ...

    def open_source(self, cfg: ReportConfig) -> Source: ...

    def check_columns(self, cfg: ReportConfig, source: Source) -> None: ...

    def file_view(self, name: str, path: str) -> None: ...

    def register(self, name: str, table: Any) -> None: ...

    def unregister(self, name: str) -> None: ...

    def content_digests(self, paths: list[str]) -> list[str]: ...

    # the release history (pipeline.state.history): its tables as ``__hist.<table>`` in SQL
    def history_exists(self, hist: Any) -> bool: ...

    def attach_history(self, hist: Any, *, write: bool) -> None: ...

    def detach_history(self) -> None: ...

    def tables(self, database: str) -> set[str]: ...

    def columns(self, table: str, database: str | None = None) -> list[str]: ...

    def query_progress(self) -> float: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...
