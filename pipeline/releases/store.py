"""Releases on disk: atomic publication, manifest, Parquet provenance metadata, reading back.

Guarantees:
- A release folder ``<output>/<report>/<run id>/`` appears complete or not at all: files are
  written and fsynced in a staging folder beside it, then the folder is renamed into place.
- ``report.parquet`` bytes depend only on the published table and the deterministic provenance
  (no clock time inside it), so the same inputs give byte-identical reports.
- A release is never overwritten: publishing onto an existing run id either confirms the bytes
  are identical or refuses.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ReleaseError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from ..config import ReportConfig

REPORT_FILE = "report.parquet"
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "summary.html"
METADATA_KEY = b"anonymize.provenance"
HEADER_KEY = b"anonymize.header"  # a column's export header (label and unit), in its field metadata
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ConfigError(
            f"--run-id {run_id!r}: use 1-128 characters from A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit, no '..')"
        )
    return run_id


CSV_FILE = "report.csv"


def with_headers(table: pa.Table, headers: dict[str, str]) -> pa.Table:
    """``table`` with each named column's export header in its field metadata (``HEADER_KEY``),
    where exports read it. Unchanged (same bytes downstream) when ``headers`` is empty."""
    if not headers:
        return table
    import pyarrow as pa

    fields = [f.with_metadata({**(f.metadata or {}), HEADER_KEY: headers[f.name].encode()}) if f.name in headers else f
              for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def csv_bytes(report: bytes) -> bytes:
    """The CSV export of a report, derived from the gated Parquet bytes only (so it shows exactly
    the gated table): a header of column names (or the export headers of :func:`with_headers`),
    RFC 4180 quoting, empty fields for nulls."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(report)).replace_schema_metadata(None)
    table = table.rename_columns([
        (f.metadata or {}).get(HEADER_KEY, f.name.encode()).decode() for f in table.schema])
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=True, quoting_style="needed"))
    return buf.getvalue()


def release_dir(output_dir: Path, report: str, run_id: str) -> Path:
    return output_dir / report / check_run_id(run_id)


def parquet_bytes(table: pa.Table, provenance: dict[str, Any]) -> bytes:
    """The report file's bytes: zstd Parquet with the provenance JSON in key-value metadata."""
    import pyarrow.parquet as pq

    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(provenance, sort_keys=True, separators=(",", ":")).encode()
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(report_dir: Path) -> int:
    """Remove staging folders left by killed processes (their pid is no longer alive)."""
    removed = 0
    if not report_dir.is_dir():
        return 0
    for p in report_dir.glob(".staging-*"):
        m = re.match(r"\.staging-.*-p(\d+)-[0-9a-f]+$", p.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    return removed


@dataclass
class StagedRelease:
    """A release written to a hidden staging folder, not yet visible."""

    staging: Path
    final: Path
    report_sha256: str
    files: dict[str, bytes] = field(default_factory=dict)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def stage(final: Path, files: dict[str, bytes]) -> StagedRelease:
    """Write ``files`` into a staging folder next to ``final`` (fsynced). Raises ReleaseError."""
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(parent)
        staging = parent / f".staging-{final.name}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise ReleaseError(f"cannot create the output folder {parent}: {exc.strerror or exc}") from None
    try:
        for name, data in files.items():
            _fsync_write(staging / name, data)
        _fsync_dir(staging)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ReleaseError(f"cannot write the release into {parent}: {exc.strerror or exc}") from None
    return StagedRelease(staging, final, sha256(files.get(REPORT_FILE, b"")), files)


def publish(staged: StagedRelease) -> None:
    """Make a staged release visible by renaming its folder into place (atomic on one filesystem)."""
    try:
        os.rename(staged.staging, staged.final)
    except OSError as exc:
        staged.discard()
        if staged.final.exists():
            raise ReleaseError(
                f"{staged.final} appeared while this run was writing (another process published the same run id)"
            ) from None
        raise ReleaseError(f"cannot publish {staged.final}: {exc.strerror or exc}") from None
    _fsync_dir(staged.final.parent)


def existing_report_sha(final: Path) -> str | None:
    """sha256 of an already published report, or None when the run id is free."""
    if not final.exists():
        return None
    report = final / REPORT_FILE
    if not report.is_file():
        raise ReleaseError(f"{final} exists but holds no {REPORT_FILE}; move it away and rerun")
    return sha256(report.read_bytes())


# ----- reading releases back -------------------------------------------------------------------


@dataclass
class Release:
    """A published (or confirmed) release: where it is, its table and its manifest."""

    path: Path
    manifest: dict[str, Any]
    status: str = "published"  # published | unchanged | restored
    _table: pd.DataFrame | None = None
    _internal: dict[str, Any] | None = None

    @property
    def internal(self) -> dict[str, Any] | None:
        """The operator's exact counts of this run (rows, cells per reason, source rows): never part
        of the release; read from ``manifest['internal_counts']`` when this machine has the file."""
        if self._internal is None:
            from ..state.internal import read_internal

            self._internal = read_internal(self.manifest.get("internal_counts"))
        return self._internal

    @internal.setter
    def internal(self, value: dict[str, Any] | None) -> None:
        self._internal = value

    @property
    def table(self) -> pd.DataFrame:
        """The published table as a pandas DataFrame (Arrow-backed): aggregates only."""
        if self._table is None:
            import pyarrow.parquet as pq

            t = pq.read_table(self.path / REPORT_FILE)
            import pandas as pd

            self._table = t.to_pandas(types_mapper=pd.ArrowDtype)
        return self._table

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILE

    def explain(self) -> ExplainText:
        """What ran, what was suppressed and why (counts only), noise and budget: text that
        renders as HTML tables in a notebook. Built from the manifest alone."""
        from .explain import explain_html, explain_text

        return ExplainText(explain_text(self.manifest, self.path), html=explain_html(self.manifest, self.path))

    def _repr_html_(self) -> str:
        from .explain import explain_html

        return explain_html(self.manifest, self.path)

    def __repr__(self) -> str:
        m = self.manifest
        cells = m.get("cells", {})
        return (
            f"Release({m.get('report')}/{m.get('run_id')}, mode={m.get('mode')}, "
            f"published={cells.get('cells_published')}, path={self.path})"
        )


class ExplainText(str):
    """Plain text (``print`` it) that renders as HTML tables when it is a notebook cell's value."""

    _html: str | None

    def __new__(cls, text: str, html: str | None = None) -> ExplainText:
        obj = super().__new__(cls, text)
        obj._html = html
        return obj

    def _repr_html_(self) -> str:
        if self._html is not None:
            return self._html
        import html

        return f"<pre>{html.escape(str(self))}</pre>"


def open_release(path: str | Path) -> Release:
    """Read a published release folder back (manifest + report). Raises ReleaseError if incomplete."""
    p = Path(path)
    if not (p / MANIFEST_FILE).is_file() or not (p / REPORT_FILE).is_file():
        raise ReleaseError(f"{p} is not a release folder (needs {REPORT_FILE} and {MANIFEST_FILE})")
    try:
        manifest = json.loads((p / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{p / MANIFEST_FILE}: unreadable manifest: {exc}") from None
    return Release(p, manifest, status="existing")


def catalogue(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every release under ``output_dir`` (``<report>/<run id>/``, staging folders skipped), in
    report then run-id order: what a reviewer asks for first. The sha256 is recomputed from the file
    and compared with the manifest's (``intact``)."""
    root = Path(output_dir)
    rows = []
    for manifest_path in sorted(root.glob("*/*/" + MANIFEST_FILE)):
        folder = manifest_path.parent
        if folder.name.startswith(".") or folder.parent.name.startswith("."):
            continue
        try:
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            rows.append({"release": str(folder), "error": "unreadable manifest"})
            continue
        report = folder / REPORT_FILE
        actual = sha256(report.read_bytes()) if report.is_file() else None
        recorded = (m.get("report_file") or {}).get("sha256")
        budget = m.get("budget") or {}
        rows.append({
            "report": m.get("report"), "run_id": m.get("run_id"), "mode": m.get("mode"),
            "window": {k: w[k] for k in ("period", "start", "end") if k in w} if (
                w := (m.get("config") or {}).get("window") or {}) else None,
            "created_utc": m.get("created_utc"), "cells_published": (m.get("cells") or {}).get("cells_published"),
            "gate_passed": (m.get("gate") or {}).get("passed"), "epsilon_spent": budget.get("epsilon_spent"),
            "sha256": recorded, "intact": actual is not None and actual == recorded, "release": str(folder),
        })
    return rows


# ----- where releases may be written ---------------------------------------------------------


# Files a release writes under the output folder: <output>/<report>/<run id or staging>/<name>
RELEASE_FILE_NAMES = ("report.parquet", "report.csv", "manifest.json", "summary.html", "manifest.json.tmp",
                      "summary.html.tmp", "report.csv.tmp")  # every file a release can write (csv: output.formats)


def output_read_back(cfg: ReportConfig, out: Path) -> str | None:
    """Why a release under ``out`` could be read back as input by this config's source, or None.

    - a folder source reads every file beneath it: the output must not be inside it;
    - a glob source: refused when the pattern can match a file a release writes
      (``<out>/<report>/<any run id>/report.parquet``, ``report.csv``, ``manifest.json``, ``summary.html``; the run
      id is treated as matching any pattern part, so the answer holds for every run id);
    - a single file (or a DuckDB database file) reads only itself: any output folder is fine;
    - a ``file://`` URL (Spark) is checked as its local path; other URLs (object storage, HDFS) name
      no local folder a release is written to.
    Paths are compared resolved (symlinks followed): a link cannot put a release where the
    source reads.
    """
    from ..config import file_url_path, source_url

    local = file_url_path(cfg.source.path)
    if source_url(cfg.source.path) and local is None:
        return None  # object storage or a cluster file system: not where a release is written
    raw = local or str(cfg.resolve(cfg.source.path))
    out = out.resolve()
    if glob.has_magic(raw):
        # the fixed folders before the first wildcard resolved as the file system will (symlinks
        # followed), so that a link to the output's real folder cannot hide a match
        parts = Path(os.path.abspath(raw)).parts
        cut = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        pattern = Path(os.path.realpath(Path(*parts[:cut]))).parts + parts[cut:]
        for name in RELEASE_FILE_NAMES:
            target: list[str | None] = [*out.parts, cfg.report, None, name]
            if _glob_can_match(pattern, target):
                return f"the source glob {cfg.source.path!r} would match the release's {name}"
        return None
    p = Path(raw)
    if p.is_dir():
        folder = p.resolve()
        if out == folder or folder in out.parents:
            return f"it is inside the source folder {folder}, whose files are all read"
    return None


def _glob_can_match(pattern: tuple[str, ...], target: list[str | None]) -> bool:
    """Whether glob ``pattern`` (path parts; ``**`` spans any number of folders, as with
    ``recursive=True``) matches ``target``; a ``None`` part stands for any name."""
    import fnmatch
    from functools import cache

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(target)
        part = pattern[i]
        if part == "**":
            return any(match(i + 1, k) for k in range(j, len(target) + 1))
        if j == len(target):
            return False
        name = target[j]
        ok = name is None or (fnmatch.fnmatchcase(name, part) if glob.has_magic(part) else name == part)
        return ok and match(i + 1, j + 1)

    return match(0, 0)
