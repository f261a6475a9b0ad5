"""One run: the stages in order (load → aggregate → suppress/noise → gate → write → publish), timed.

Guarantees:
- Nothing is visible until every stage has passed; a failure or refusal at any stage leaves no
  release folder (the staging folder is removed) and, in DP mode, no ledger entry.
- Only aggregate rows (cells) ever cross from DuckDB into Python.
- The same config, source and run id give a byte-identical ``report.parquet``; publishing onto an
  existing run id confirms identical bytes (status ``unchanged``) or refuses.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config.models import ReportConfig, url_problem
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
from ..engines.duckdb.connection import fetch_arrow
from ..engines.duckdb.sources import check_columns, open_source
from ..engines.duckdb.sql import Query
from ..errors import ConfigError, PipelineError, ReleaseError, SourceError, first_line
from ..progress import Stages, fault_point
from ..releases.store import (
    MANIFEST_FILE,
    REPORT_FILE,
    Release,
    existing_report_sha,
    output_read_back,
    parquet_bytes,
    publish,
    release_dir,
    sha256,
    stage,
)


def run_report(
    cfg: ReportConfig,
    run_id: str,
    *,
    output_dir: str | Path | None = None,
    verbose: bool = False,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
    summary_html: bool = True,
) -> Release:
    """Run one report and publish it atomically. Raises a :class:`PipelineError` subclass on failure."""
    import duckdb

    from ..engines.duckdb.connection import connect

    out = preflight(cfg, output_dir=output_dir, temp_directory=temp_directory)
    final = release_dir(out, cfg.report, run_id)
    stages = Stages(verbose=verbose)
    con = connect(cfg, threads=threads, memory_limit=memory_limit, temp_directory=temp_directory)
    stages.attach(con)  # live query progress on a terminal only
    try:
        with stages.stage("load"):
            source = open_source(con, cfg)
            check_columns(cfg, source.schema, con, source)
            known = [f.rows for f in source.files]
            stages.count(f"in {len(known)} file(s)", sum(known) if None not in known else None)
        if cfg.mode == "dp":
            from .dp import run_dp

            return run_dp(cfg, run_id, con, source, final, stages, summary_html=summary_html)
        return _run_threshold(cfg, run_id, con, source, final, stages, summary_html=summary_html)
    except duckdb.Error as exc:
        raise SourceError(f"source {cfg.source.path!r}: {first_line(exc)}") from None
    finally:
        con.close()


def preflight(
    cfg: ReportConfig, *, output_dir: str | Path | None = None, temp_directory: str | Path | None = None
) -> Path:
    """The checks a run makes on its settings before it opens any data (``validate`` runs them
    too, so that it never says ok where ``run`` then refuses). Returns the output folder.

    Raises ConfigError for URL flags, an output folder the source could read back, and a
    ``public_partitions`` file that does not exist."""
    for flag, value in (("--output", output_dir), ("--temp-dir", temp_directory)):
        problem = url_problem(str(value)) if value is not None else None
        if problem:
            raise ConfigError(f"{flag}: {problem}")
    out = Path(output_dir).resolve() if output_dir else cfg.output_dir
    _check_output_location(cfg, out, key="--output" if output_dir else "output.dir")
    if cfg.privacy is not None and cfg.privacy.public_partitions is not None:
        path = cfg.resolve(cfg.privacy.public_partitions)
        if not path.is_file():
            raise ConfigError(f"privacy.public_partitions: file not found ({path})")
    return out


def _check_output_location(cfg: ReportConfig, out: Path, *, key: str = "output.dir") -> None:
    """Refuse an output folder from which a release could be read back by this config's source."""
    where = f"{cfg.config_path}: " if cfg.config_path and key == "output.dir" else ""
    why = output_read_back(cfg, out)
    if why:
        raise ConfigError(
            f"{where}{key} {out}: {why}; releases must not be written where the source reads "
            "(they could be read back as input): choose a folder outside it"
        )


def execute(con: Any, q: Query) -> Any:
    return con.execute(q.sql, list(q.params)) if q.params else con.execute(q.sql)


def aggregate(cfg: ReportConfig, con: Any, source: Source, *, need_per_unit: bool) -> dict[str, Any]:
    """Build ``__cells`` (and ``__per_unit`` when needed); return data-quality counts."""
    if need_per_unit:
        execute(con, per_unit_sql(cfg, source.schema))
        fault_point("aggregate.per_unit")
        execute(con, cells_from_per_unit_sql(cfg, dominance_n=cfg.dominance.n if cfg.dominance else 0))
        q = quality_from_per_unit_sql(cfg, source.schema)
    else:
        execute(con, cells_direct_sql(cfg, source.schema))
        q = quality_from_cells_sql(cfg, source.schema)
    return aggregate_quality(cfg, con, q)


def aggregate_quality(cfg: ReportConfig, con: Any, q: Query) -> dict[str, Any]:
    """Run a data-quality query (one row of counts) and refuse what must not be coerced.

    Refuses (SourceError) when a time dimension holds values that do not parse as timestamps, or
    when every selected row lacks a privacy unit. NaN/±inf metric values are counted (dropped).
    """
    row = execute(con, q).fetchall()[0]
    names = [d[0] for d in con.description]
    values = dict(zip(names, row, strict=True))
    invalid = {}
    for i, m in enumerate(cfg.metrics):
        if m.column is not None:
            invalid[m.name] = int(values.get(f"bad_{i}") or 0)
    for i, d in enumerate(cfg.dims):
        bad = int(values.get(f"badts_{i}") or 0)
        if bad:
            raise SourceError(
                f"source {cfg.source.path!r}: dimensions[{i}]: column {d.column!r} has {bad} value(s) that do not "
                "parse as timestamps; fix them in the source or filter them out (they are not silently dropped)"
            )
    rows_in = int(values["rows_in"] or 0)
    null_rows = int(values["null_unit_rows"] or 0)
    if rows_in > 0 and null_rows == rows_in:
        raise SourceError(
            f"source {cfg.source.path!r}: privacy_unit: column {cfg.privacy_unit!r} is null in every selected row "
            f"({rows_in} rows); nothing can be attributed to a person, so nothing can be protected: "
            "check the export or the privacy_unit key"
        )
    return {
        "rows_selected": rows_in,
        "rows_dropped_null_unit": null_rows,
        "rows_aggregated": rows_in - null_rows,
        "invalid_values_dropped": invalid,
    }


def _run_threshold(
    cfg: ReportConfig, run_id: str, con: Any, source: Source, final: Path, stages: Stages, *, summary_html: bool
) -> Release:
    import contextlib

    from ..engines.duckdb import suppression
    from ..state.history import History, history_path

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
            execute(con, suppression.primary_sql(cfg))
            if hist is not None:
                from ..engines.duckdb.difference import apply_difference_check

                apply_difference_check(cfg, con, hist, release_id, source.source_id)
            if cfg.totals:
                from ..engines.duckdb.secondary import apply_secondary_suppression

                apply_secondary_suppression(cfg, con)
            con.execute(suppression.finalize_sql())
            cell_counts = suppression.counts(con)
            if cfg.remainder:
                from ..engines.duckdb.remainder import apply_remainder

                cell_counts.update(apply_remainder(cfg, con))
        with stages.stage("collect"):
            if cfg.remainder:
                from ..engines.duckdb.remainder import (
                    published_select_sql as select_with_remainders,
                )

                table = collect_published(cfg, fetch_arrow(execute(con, select_with_remainders(cfg))))
            else:
                table = collect_published(cfg, fetch_arrow(execute(con, published_select_sql(cfg))))
        privacy = {
            "mode": "threshold",
            "min_units": cfg.min_units,
            "unit_of_privacy": "privacy_unit (column name withheld from outputs)",
            "dominance": cfg.dominance.model_dump(exclude_none=True) if cfg.dominance else None,
            "totals": cfg.totals or [],
            "secondary_suppression": bool(cfg.totals),
            "difference_check": (
                {"history": str(hist.path), "rule": "suppress cells whose population differs from an earlier "
                 "published cell with the same dimension values by 1 to min_units-1 units"}
                if hist is not None else "off (no history: set `history:` or a budget ledger)"
            ),
        }
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
    """The published table in its documented order (:func:`plan.published_order`), without the
    ``__level`` sort key. The order is computed here from the values, never taken from the engine."""
    from ..tables import sort_table

    table = sort_table(table, published_order(cfg))
    return table.drop_columns(["__level"])


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


def build_provenance(
    cfg: ReportConfig, run_id: str, source: Source, table: Any, *, quality: dict, cells: dict, privacy: dict
) -> dict[str, Any]:
    """Deterministic facts about a release (no clock time): stored in the Parquet metadata too.

    In DP mode, exact data-dependent counts (rows read/dropped, cells computed/suppressed, file
    sizes and row counts) are not differentially private, so they are withheld here; the DP
    runner keeps them with the ledger entry (``internal.json``), never in the release.
    """
    dp = cfg.mode == "dp"
    if dp:
        withheld = "withheld: exact counts are not covered by the DP guarantee (kept with the ledger entry)"
        quality = {"withheld": withheld}
        cells = {k: v for k, v in cells.items() if k in ("cells_published", "public_partitions")}
        cells["withheld"] = withheld
    return {
        "format_version": 1,
        "report": cfg.report,
        "run_id": run_id,
        "mode": cfg.mode,
        "software": software(),
        "config_hash": cfg.config_hash(),
        "config": cfg.normalised(),
        "source": source.manifest_entry(exact_counts=not dp),
        "rows": quality,
        "cells": cells,
        "privacy": privacy,
        "columns": columns_entry(cfg, table),
    }


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
        report = parquet_bytes(table, provenance)
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
    manifest["timings_s"] = stages.timings
    files = {REPORT_FILE: report}

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
        if ledger_commit is not None:
            return ledger_commit(staged, manifest)
        if before_publish is not None:
            before_publish()
        publish(staged)
    except BaseException:
        staged.discard()
        raise
    fault_point("published")
    return Release(final, manifest, status="published")


__all__ = ["run_report", "PipelineError"]
