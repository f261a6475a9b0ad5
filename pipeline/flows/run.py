"""One run: the stages in order (load → aggregate → suppress/noise → gate → write → publish), timed.

Guarantees:
- Nothing is visible until every stage has passed; a failure or refusal at any stage leaves no
  release folder (the staging folder is removed) and, in DP mode, no ledger entry.
- Only aggregate rows (cells) ever cross from DuckDB into Python.
- The same config, source and run id give a byte-identical ``report.parquet``; publishing onto an
  existing run id confirms identical bytes (status ``unchanged``) or refuses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import ReportConfig, url_problem
from ..errors import ConfigError, PipelineError, SourceError, first_line
from ..progress import Stages
from ..releases.store import (
    Release,
    output_read_back,
    release_dir,
)


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
    """Run one report and publish it atomically. Raises a :class:`PipelineError` subclass on failure.

    A config with ``window:`` is filtered to its window for ``as_of`` (a date; default today, UTC)
    unless the window is already resolved (:meth:`ReportConfig.for_window`), and ``run_id=None``
    names the run after it. ``log_format="json"``
    writes one JSON line per stage to stderr (:mod:`pipeline.progress`)."""
    from ..engines import connect

    if cfg.window is not None and (cfg.window.start is None or as_of is not None):
        cfg = cfg.for_window(as_of)
    if run_id is None:  # a windowed run is named after its window, as on the command line
        if cfg.window is None:
            from ..errors import ConfigError

            raise ConfigError("run_id: give one (e.g. the date, 2026-11-23); only a config with window: names its runs")
        run_id = cfg.window.run_id()
    out = preflight(cfg, output_dir=output_dir, temp_directory=temp_directory)
    final = release_dir(out, cfg.report, run_id)
    stages = Stages(verbose=verbose, log_format=log_format, report=cfg.report)
    con = connect(cfg, threads=threads, memory_limit=memory_limit, temp_directory=temp_directory)
    stages.attach(con)  # live query progress on a terminal only
    try:
        with stages.stage("load"):
            source = con.open_source(cfg)
            con.check_columns(cfg, source)
            known = [f.rows for f in source.files]
            stages.count(f"in {len(known)} file(s)", sum(known) if None not in known else None)
        if cfg.mode == "dp":
            from .dp import run_dp

            return run_dp(cfg, run_id, con, source, final, stages, summary_html=summary_html)
        from .threshold import run_threshold

        return run_threshold(cfg, run_id, con, source, final, stages, summary_html=summary_html)
    except con.Error as exc:
        raise SourceError(f"source {cfg.source.path!r}: {first_line(exc)}") from None
    finally:
        con.close()


def preflight(
    cfg: ReportConfig, *, output_dir: str | Path | None = None, temp_directory: str | Path | None = None
) -> Path:
    """The checks a run makes on its settings before it opens any data (``validate`` runs them
    too, so that it never says ok where ``run`` then refuses). Returns the output folder.

    Raises ConfigError for URL flags, an output folder the source could read back, a state file
    (ledger, release history) inside the output folder, and a ``public_partitions`` file that does
    not exist."""
    for flag, value in (("--output", output_dir), ("--temp-dir", temp_directory)):
        problem = url_problem(str(value)) if value is not None else None
        if problem:
            raise ConfigError(f"{flag}: {problem}")
    out = Path(output_dir).resolve() if output_dir else cfg.output_dir
    _check_output_location(cfg, out, key="--output" if output_dir else "output.dir")
    _check_state_outside_output(cfg, out, key="--output" if output_dir else "output.dir")
    if cfg.privacy is not None and cfg.privacy.public_partitions is not None:
        path = cfg.resolve(cfg.privacy.public_partitions)
        if not path.is_file():
            raise ConfigError(f"privacy.public_partitions: file not found ({path})")
    return out


def _check_state_outside_output(cfg: ReportConfig, out: Path, *, key: str) -> None:
    """Refuse a ledger or release history (and so their secrets, heads and, for the ledger, exact
    counts and release bytes) under the output folder: whatever ships the releases would ship them."""
    from ..state.history import history_path

    real_out = Path(os.path.realpath(out))
    for name, path in (("budget.ledger", cfg.ledger_path), ("history", history_path(cfg)),
                       ("the state folder (exact run counts)", cfg.state_dir / "internal")):
        if path is None:
            continue
        real = Path(os.path.realpath(path))
        if real_out == real or real_out in real.parents:
            raise ConfigError(
                f"{name} {path} is inside the {key} folder {out}: state files hold secrets (and the ledger exact "
                "counts and release bytes) and would ship with the releases; keep them outside it, e.g. in ../state"
            )


def _check_output_location(cfg: ReportConfig, out: Path, *, key: str = "output.dir") -> None:
    """Refuse an output folder from which a release could be read back by this config's source."""
    where = f"{cfg.config_path}: " if cfg.config_path and key == "output.dir" else ""
    why = output_read_back(cfg, out)
    if why:
        raise ConfigError(
            f"{where}{key} {out}: {why}; releases must not be written where the source reads "
            "(they could be read back as input): choose a folder outside it"
        )


__all__ = ["run_report", "PipelineError"]
