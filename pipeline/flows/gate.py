"""Release gate: an independent re-check of the written report bytes. Fails closed.

The gate does not trust the aggregation step. It re-reads the Parquet bytes that are about to be
published and refuses (:class:`PrivacyRefusal`, exit 3) when:
- ``columns``: a column is not a declared dimension, metric, interval (``*_ci95``), ``level`` or
  ``is_remainder`` column;
- ``patterns``: any text value looks like an identifier (e-mail, phone, IPv4/IPv6, card number
  passing Luhn, Indian PAN, Aadhaar, GSTIN);
- ``identifier_values`` (threshold mode): a published dimension value shares a normal form with
  a value of a declared identifier column (or the privacy unit) in the source; a DuckDB join;
- ``quasi_identifier`` (threshold mode): a dimension's distinct values number close to the
  distinct units, or most of its values belong to a single unit (in the source);
  in DP mode both are skipped (``DP_EXACT``): a verdict read off the exact data would let one
  person decide whether the release appears;
- ``min_units`` (threshold mode): a published row aggregates fewer than ``min_units`` distinct
  units, or a sum/mean of it the values of 1 to ``min_units - 1`` people, recomputed from the
  source by joining the published keys back to it; a remainder row
  is recomputed as every source row of its level whose keys are not published (at least
  ``min_units`` units and two withheld keys); rows with an unknown level fail;
- ``noise`` (DP mode, during a run): a published row matches no computed cell; a published value
  lies farther from the true (bounded) value it was drawn from than its mechanism's noise reaches
  with probability ``privacy.mechanisms.GATE_TAIL`` (1e-12); or the spread of a metric's deviations over its
  cells is that unlikely under its mechanism (too small: a missing noise draw; too large: a wrong
  scale or values on the wrong cells). The true values stay in the engine: only counts come out.
The result records which checks ran and what they found (counts only, never values).
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

from ..engines.duckdb import gate as checks_sql
from ..errors import PrivacyRefusal
from ..privacy.rules import allowed_columns

if TYPE_CHECKING:
    import pyarrow as pa

    from ..config import ReportConfig
    from ..engines.base import Source


DP_EXACT = "DP mode: its verdict would depend on the exact data, so one person could decide whether a release appears"


def run_gate(
    cfg: ReportConfig,
    report: bytes,
    *,
    con: Any = None,
    source: Source | None = None,
    checks: tuple[str, ...] | None = None,
    unit_pairs: str | None = None,
    cell_units: str | None = None,
    dp_truth: tuple[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every gate check on ``report`` (Parquet bytes). Returns the record; raises on failure.

    ``unit_pairs`` optionally names a temp table the run built from the filtered source with one
    row per (cell, unit) (keys ``__d{i}``, unit ``__u``, as ``__per_unit``); the quasi-identifier
    statistics are then computed from it instead of from another pass over the source;
    ``cell_units`` names the run's cell table (``__cells`` with ``__umin``/``__umax``), from which
    they cost almost nothing (see :func:`_quasi_identifiers`). The recomputed ``min_units`` check
    always reads the source itself.

    With ``con``/``source`` (the run's connection and ``__src`` view) the source-dependent checks
    run too; without them (re-checking an old release with no source) they are recorded as skipped.
    ``dp_truth`` (DP runs only) is ``(table, release plan)``: the run's true cell table (``__dp_cells``)
    and the mechanisms that drew the noise, for the ``noise`` check (skipped without it: the true
    values are never stored).
    """
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, whose import alone costs
    # more than the rest of the gate on a small report
    table = pq.ParquetFile(io.BytesIO(report)).read()
    result: dict[str, Any] = {"passed": False, "checks": {}}
    failures: list[str] = []
    wanted = set(checks) if checks else None
    marks: list[tuple[str, float]] = []  # (check, start): seconds per check, so a slow gate points at its check

    def want(name: str) -> bool:
        ok = wanted is None or name in wanted
        if ok:
            marks.append((name, time.perf_counter()))
        return ok

    if want("columns"):
        extra = [c for c in table.column_names if c not in allowed_columns(cfg)]
        result["checks"]["columns"] = {"ok": not extra, "unexpected": len(extra)}
        if extra:
            failures.append(f"column(s) {', '.join(map(repr, extra))} are not declared dimensions or metrics")

    gcon = con
    own = False
    if gcon is None:
        from ..engines import connect

        gcon, own = connect(), True
    try:
        gcon.register("__gate_report", table)
        text_cols = [c for c, t in zip(table.column_names, table.schema.types, strict=True) if _is_text(t)]
        if want("patterns"):
            hits = checks_sql.pattern_hits(gcon, text_cols)
            result["checks"]["patterns"] = {"ok": not hits, "hits": hits}
            if hits:
                desc = ", ".join(f"{col}: {kind}" for col, kind in sorted(hits))
                failures.append(f"published values look like identifiers ({desc})")
        has_source = source is not None and con is not None
        # DP mode: a check whose verdict reads the exact source would let one person decide whether
        # the release appears at all (a refusal no epsilon covers); only the release and the config
        # may decide. The columns, patterns and noise checks qualify (noise: see PRIVACY.md).
        exact_ok = cfg.privacy is None
        if want("identifier_values"):
            if not exact_ok:
                result["checks"]["identifier_values"] = {"skipped": DP_EXACT}
            elif has_source:
                hits2 = checks_sql.identifier_value_hits(cfg, gcon, source.schema, table)
                result["checks"]["identifier_values"] = {"ok": not hits2, "columns": sorted(hits2)}
                if hits2:
                    failures.append(
                        "published dimension values equal values of identifier column(s) in the source ("
                        + ", ".join(f"{c} = {i}" for c, i in sorted(hits2)) + ")"
                    )
            else:
                result["checks"]["identifier_values"] = {"skipped": "no source"}
        if cfg.exclude_units and has_source and want("exclusions"):
            from ..engines.duckdb.exclusions import remaining_sql

            left = gcon.execute(remaining_sql(cfg, source.schema, gcon)).fetchall()[0][0]
            result["checks"]["exclusions"] = {"ok": left == 0, "lists": len(cfg.exclude_units)}
            if left:
                failures.append("rows of people on an exclude_units list reached the aggregation")
        if want("quasi_identifier"):
            if not exact_ok:
                result["checks"]["quasi_identifier"] = {"skipped": DP_EXACT}
            elif has_source:
                qi = checks_sql.quasi_identifiers(cfg, gcon, source.schema, unit_pairs=unit_pairs, cell_units=cell_units)
                result["checks"]["quasi_identifier"] = {"ok": not qi, "dimensions": qi}
                if qi:
                    failures.append(
                        "dimension(s) behave like quasi-identifiers (nearly one value per person): "
                        + ", ".join(qi)
                    )
            else:
                result["checks"]["quasi_identifier"] = {"skipped": "no source"}
        if want("min_units") and cfg.privacy is None:
            if has_source:
                found = checks_sql.recomputed_min_units(cfg, gcon, source.schema, table)
                low, rem, bad = found["rows_below"], found["remainder_bad"], found["malformed"]
                metric_low = found["metric_below"]
                result["checks"]["min_units"] = {"ok": not (low or rem or bad or metric_low), **found}
                if metric_low:
                    failures.append(
                        f"{metric_low} published row(s) have a sum or mean over fewer than "
                        f"min_units={cfg.min_units} people with a value (recomputed from the source)"
                    )
                if low:
                    failures.append(
                        f"{low} published row(s) aggregate fewer than min_units={cfg.min_units} "
                        "distinct units (recomputed from the source)"
                    )
                if rem:
                    failures.append(
                        f"{rem} remainder row(s) cover fewer than min_units={cfg.min_units} distinct units or "
                        "fewer than two withheld rows, or are malformed (recomputed from the source)"
                    )
                if bad:
                    failures.append(f"{bad} row(s) have an unknown level or a value in a rolled-up dimension")
            else:
                small = checks_sql.declared_min_units(cfg, gcon, table)
                result["checks"]["min_units"] = {"ok": small == 0, "rows_below": small, "recomputed": False}
                if small:
                    failures.append(f"{small} published row(s) show fewer than min_units={cfg.min_units} units")
        if want("noise") and cfg.privacy is not None:
            if dp_truth is not None and con is not None:
                from ..privacy.plausibility import expectations, judge

                truth, split = dp_truth
                counted, unmatched, n_rows = checks_sql.noise_counts(cfg, gcon, table, truth, expectations(cfg, split))
                found_noise, why = judge(counted, unmatched, n_rows, table.num_rows)
                result["checks"]["noise"] = found_noise
                failures += why
            else:
                result["checks"]["noise"] = {"skipped": "the true values exist only during a run"}
    finally:
        try:
            gcon.unregister("__gate_report")
        except Exception:  # pragma: no cover
            pass
        if own:
            gcon.close()
    ends = [t for _, t in marks[1:]] + [time.perf_counter()]
    result["seconds"] = {name: round(end - start, 4) for (name, start), end in zip(marks, ends, strict=True)}
    if failures:
        raise PrivacyRefusal("release gate failed: " + "; ".join(failures))
    result["passed"] = True
    return result


def _is_text(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)


# ----- DP: published noise against the true values it was drawn from -----------------------------
