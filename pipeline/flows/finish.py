"""The end every mode shares: provenance → Parquet bytes → release gate → stage → (ledger) → publish.

Guarantees: the gate re-reads the exact bytes about to be published and fails closed; nothing is
visible until the staged folder is renamed into place; an existing run id is confirmed (identical
bytes) or refused, never overwritten; a failure discards the staging folder.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from ..config import ReportConfig
from ..engines.base import Source
from ..errors import ReleaseError, first_line
from ..progress import Stages, fault_point
from ..releases.manifest import build_provenance
from ..releases.store import (
    MANIFEST_FILE,
    REPORT_FILE,
    Release,
    existing_report_sha,
    parquet_bytes,
    publish,
    sha256,
    stage,
    with_headers,
)
from ..state.internal import internal_path, write_internal


def finish_release(
    cfg: ReportConfig,
    run_id: str,
    con: Any,
    source: Source,
    final: Path,
    stages: Stages,
    table: Any,
    *,
    quality: dict,
    cells: dict,
    privacy: dict,
    summary_html: bool,
    ledger_commit: Any = None,
    before_publish: Any = None,
    unit_pairs: str | None = None,
    cell_units: str | None = None,
    dp_truth: tuple[str, Any] | None = None,
) -> Release:
    """Gate, stage, (ledger-commit,) publish. The gate re-reads the written bytes and fails closed.

    ``dp_truth`` (DP mode): the true cell table and the release plan, for the gate's noise check."""
    from .gate import run_gate

    provenance = build_provenance(cfg, run_id, source, table, quality=quality, cells=cells, privacy=privacy)
    with stages.stage("write"):
        report = parquet_bytes(with_headers(table, cfg.headers()), provenance)
    with stages.stage("gate"):
        gate_result = run_gate(cfg, report, con=con, source=source, unit_pairs=unit_pairs, cell_units=cell_units,
                               dp_truth=dp_truth)
    manifest = dict(provenance)
    manifest["created_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest["report_file"] = {
        "name": REPORT_FILE,
        "sha256": sha256(report),
        "bytes": len(report),
        "rows": table.num_rows,
    }
    manifest["gate"] = gate_result
    manifest["engine"] = {"kind": cfg.engine.kind}  # where it was computed (not in the provenance)
    manifest["timings_s"] = stages.timings
    internal = internal_path(cfg, run_id)
    manifest["internal_counts"] = str(internal)  # where the operator's exact counts are; not the counts
    counts = {"rows": quality, "cells": cells, "source": source.manifest_entry(exact_counts=True)}
    files = {REPORT_FILE: report}
    if "csv" in cfg.output.formats:
        from ..releases.store import CSV_FILE, csv_bytes

        files[CSV_FILE] = csv_bytes(report)  # from the gated bytes, never from another copy of the table
        manifest["files"] = {CSV_FILE: {"sha256": sha256(files[CSV_FILE]), "bytes": len(files[CSV_FILE])}}

    existing = existing_report_sha(final)
    if existing is not None and ledger_commit is None:
        if existing == manifest["report_file"]["sha256"]:
            from ..releases.store import open_release

            rel = open_release(final)
            rel.status = "unchanged"
            return rel
        raise ReleaseError(
            f"{final} is already published with different content (the source or config changed); "
            "releases are never overwritten: use a new --run-id"
        )
    if summary_html:
        from ..releases.summary import summary_html as render

        try:
            files["summary.html"] = render(manifest, table).encode()
        except Exception as exc:  # the summary is a convenience; never block a release on it
            manifest["summary_error"] = first_line(exc)
    files[MANIFEST_FILE] = (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()
    with stages.stage("stage"):
        staged = stage(final, files)
    try:
        fault_point("staged")
        write_internal(internal, counts)  # before the release is visible
        if ledger_commit is not None:
            rel = ledger_commit(staged, manifest)
            rel.internal = counts
            return rel
        if before_publish is not None:
            before_publish()
        publish(staged)
    except BaseException:
        staged.discard()
        raise
    fault_point("published")
    return Release(final, manifest, status="published", _internal=counts)
