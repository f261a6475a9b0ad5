"""DP mode: bounding (SQL) → private partition selection → noisy metrics (OpenDP) → ledger → publish.

Guarantees (the math is in docs/PRIVACY.md):
- The whole release satisfies (ε, δ)-DP for the configured ε and δ with respect to adding or
  removing all rows of one privacy unit, by basic composition of the mechanisms listed in the
  manifest (Laplace) or zCDP composition converted to (ε, δ) (Gaussian).
- The ledger is checked before any work and again, under its lock, before the entry is recorded;
  the entry and the release bytes are committed before the release becomes visible.
- A rerun with the same (source, report, run id) publishes the recorded bytes and spends nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ReportConfig
from ..engines.base import Source
from ..engines.duckdb.cells import dim_key
from ..engines.duckdb.sql import ident
from ..errors import ReleaseError
from ..privacy.budget import BudgetSplit, LevelBudget, budget_split, derive_seed
from ..privacy.mechanisms import add_noise
from ..privacy.rules import noise_to_value, publication_threshold
from ..progress import Stages, fault_point
from ..releases.store import (
    MANIFEST_FILE,
    REPORT_FILE,
    Release,
    StagedRelease,
    publish,
    sha256,
    stage,
)

INTERNAL_FILE = "internal.json"  # exact run statistics, stored in the ledger only


def budget_preflight(cfg: ReportConfig, source_id: str) -> str:
    """What ``run`` checks of the budget before reading data, without spending or creating files:
    the plan fits the configured ε and δ, the ledger (when it exists) verifies, and one more
    release fits the limits. Returns a short description; raises as ``run`` would."""
    from ..state.ledger import Ledger

    assert cfg.budget is not None and cfg.ledger_path is not None
    plan = budget_split(cfg)
    limits = {"epsilon_limit": cfg.budget.epsilon_limit, "delta_limit": cfg.budget.delta_limit}
    ledger = Ledger(cfg.ledger_path)
    if not ledger.path.exists():
        return f"a release spends ε={plan.epsilon:.4g} of the limit {limits['epsilon_limit']:g} (no ledger yet)"
    with ledger.locked():
        ledger.verify()
        view = ledger.check_budget(source_id, plan.epsilon, plan.delta, limits)
    left = limits["epsilon_limit"] - view["epsilon_spent_before"]
    return f"a new release spends ε={plan.epsilon:.4g}; ε={left:.4g} of {limits['epsilon_limit']:g} left"


def run_dp(
    cfg: ReportConfig, run_id: str, con: Any, source: Source, final: Path, stages: Stages, *, summary_html: bool
) -> Release:
    from ..state.ledger import Ledger
    from .finish import finish_release

    assert cfg.privacy is not None and cfg.budget is not None and cfg.ledger_path is not None
    ledger = Ledger(cfg.ledger_path)
    limits = {"epsilon_limit": cfg.budget.epsilon_limit, "delta_limit": cfg.budget.delta_limit}
    plan = budget_split(cfg)
    from concurrent.futures import ThreadPoolExecutor

    from ..state.protected import register

    # the population's key (its files' bytes, not their spelling), hashed while DuckDB bounds
    # contributions (hashlib releases the GIL); checked under the ledger's lock before anything is recorded
    hashing = ThreadPoolExecutor(max_workers=1)
    digests_future = hashing.submit(con.content_digests, [f.path for f in source.files])
    hashing.shutdown(wait=False)
    with stages.stage("ledger"), ledger.locked():
        ledger.verify()
        existing = ledger.find(source.source_id, cfg.report, run_id)
        if existing is not None:  # (registered again: a crash may have come between record and register)
            register(ledger.path.parent, digests_future.result(), source_id=source.source_id, ledger=ledger.path,
                     allow_exact=cfg.budget.allow_exact_releases)
            return restore(ledger, existing, final)
        ledger.check_budget(source.source_id, plan.epsilon, plan.delta, limits)
        secret = ledger.secret()
    seed_pairs = derive_seed(secret, "rows", source.source_id, cfg.report, run_id)
    seed_cells = derive_seed(secret, "cells", source.source_id, cfg.report, run_id)
    public = cfg.privacy.public_partitions is not None
    from .prefetch import AFTER_AGGREGATION, prefetch

    prefetch(*AFTER_AGGREGATION)  # loads while DuckDB bounds contributions
    quality, n_public = bound_contributions(cfg, con, source, seed_pairs, seed_cells, stages)
    with stages.stage("noise"):
        table, cells = noisy_table(cfg, con, plan)
        signal = noise_to_value(cfg, table)
    if public:
        cells["public_partitions"] = n_public
    privacy = {
        "mode": "dp",
        "epsilon": cfg.privacy.epsilon,
        "delta": cfg.privacy.delta,
        "noise": cfg.privacy.noise,
        "max_groups_per_unit": cfg.privacy.max_groups_per_unit,
        "max_rows_per_group": cfg.privacy.max_rows_per_group,
        "min_units": cfg.min_units,
        "public_partitions": public,
        "composition": "basic (sum of ε and δ)" if cfg.privacy.noise == "laplace" else "zCDP (sum of ρ), converted to (ε, δ) by OpenDP",
        "neighbouring": "add or remove all rows of one privacy unit",
        **plan.as_manifest(),
        "noise_to_value": signal,
        "noise_dominated": sorted(k for k, v in signal.items() if v["noise_dominated"]),
    }

    # exact counts are not DP: kept with the ledger entry for operators, never published
    internal = (json.dumps({"rows": quality, "cells": cells, "source": source.manifest_entry()},
                           indent=2, sort_keys=True, default=str) + "\n").encode()

    def commit(staged: StagedRelease, manifest: dict[str, Any]) -> Release:
        with stages.stage("ledger"), ledger.locked():
            ledger.verify()
            existing = ledger.find(source.source_id, cfg.report, run_id)
            if existing is not None:  # another process won the race for this run id
                staged.discard()
                return restore(ledger, existing, final)
            digests = digests_future.result()
            ledger.check_population(source.source_id, digests)
            view = ledger.check_budget(source.source_id, plan.epsilon, plan.delta, limits)
            manifest["budget"] = {
                **view,
                "exact_releases": "allowed (budget.allow_exact_releases: true)" if cfg.budget.allow_exact_releases
                else "refused for this source's files (threshold runs sharing this state folder exit 3)",
                "epsilon_spent": view["epsilon_spent_before"] + plan.epsilon,
                "delta_spent": view["delta_spent_before"] + plan.delta,
                "epsilon_left": max(0.0, limits["epsilon_limit"] - view["epsilon_spent_before"] - plan.epsilon),
                "delta_left": max(0.0, limits["delta_limit"] - view["delta_spent_before"] - plan.delta),
                "ledger": str(ledger.path),
                "entry_seq": len(ledger.entries()) + 1,
            }
            manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()
            _rewrite(staged, MANIFEST_FILE, manifest_bytes)
            if final.exists():
                staged.discard()
                raise ReleaseError(f"{final} already exists but the ledger has no entry for it; move it away and rerun")
            ledger.record(
                {
                    "source_id": source.source_id,
                    "report": cfg.report,
                    "run_id": run_id,
                    "mode": "dp",
                    "epsilon": plan.epsilon,
                    "delta": plan.delta,
                    "rho": plan.rho,
                    "source_fingerprint": source.fingerprint,
                    "config_hash": cfg.config_hash(),
                    "report_sha256": staged.report_sha256,
                    "content_digests": digests,
                },
                {**staged.files, INTERNAL_FILE: internal},
            )
            # before the release is visible: a crash here leaves the register to the rerun of this run id
            register(ledger.path.parent, digests, source_id=source.source_id, ledger=ledger.path,
                     allow_exact=cfg.budget.allow_exact_releases)
            fault_point("ledger.recorded")
            publish(staged)
            fault_point("published")
        return Release(final, manifest, status="published")

    return finish_release(
        cfg, run_id, con, source, final, stages, table,
        quality=quality, cells=cells, privacy=privacy, summary_html=summary_html, ledger_commit=commit,
        unit_pairs=None if public else "__dp_pairs",  # every filtered row's (cell, unit), before bounding
        cell_units="__dp_pre" if not (public or cfg.totals) else None,  # per cell, before bounding
        dp_truth=("__dp_cells", plan),  # the true values the noise was drawn around (never published)
    )


def bound_contributions(
    cfg: ReportConfig, con: Any, source: Source, seed_pairs: int, seed_cells: int, stages: Stages | None = None
) -> tuple[dict[str, Any], int | None]:
    """The DP bounding sequence, written once (a release and ``plan`` both run it): load the public
    partitions (if any), bound each person's rows per cell (Linf) into ``__dp_pairs``, count data
    quality (refusing what must not be coerced), bound each person's cells (L0) into ``__dp_cells``,
    and expand the public cells to every level. Returns (quality counts, public cells or None)."""
    import contextlib

    from ..engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql, dp_quality_sql
    from ..engines.duckdb.public import expand_public, load_public_partitions
    from .quality import aggregate_quality

    assert cfg.privacy is not None
    public = cfg.privacy.public_partitions is not None

    def stage(name: str) -> Any:
        return stages.stage(name) if stages is not None else contextlib.nullcontext()

    n_public = None
    with stage("bounding"):
        if public:
            n_public = load_public_partitions(cfg, con, source)
        con.run(dp_pairs_sql(cfg, source.schema, seed_pairs, public=public))
        quality = aggregate_quality(cfg, con, dp_quality_sql(cfg, source.schema))
    with stage("aggregate"):
        for q in dp_cells_sql(cfg, seed_cells):
            con.run(q)
        if public:
            expand_public(cfg, con)
    return quality, n_public


def _rewrite(staged: StagedRelease, name: str, data: bytes) -> None:
    import os

    staged.files[name] = data
    tmp = staged.staging / (name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, staged.staging / name)


def restore(ledger: Any, entry: Any, final: Path) -> Release:
    """A recorded release: confirm the visible copy, or publish the recorded bytes (no new spend)."""
    from ..releases.store import existing_report_sha, open_release

    current = existing_report_sha(final)
    if current is not None:
        if current != entry.report_sha256:
            raise ReleaseError(
                f"{final} does not match the ledger's record for this run id (report sha256 differs); "
                "it was modified after publication"
            )
        rel = open_release(final)
        rel.status = "unchanged"
        return rel
    files = {k: v for k, v in ledger.files(entry.seq).items() if k != INTERNAL_FILE}
    if REPORT_FILE not in files or sha256(files[REPORT_FILE]) != entry.report_sha256:
        raise ReleaseError(f"the ledger's stored copy of {entry.report}/{entry.run_id} is missing or damaged")
    staged = stage(final, files)
    publish(staged)
    rel = open_release(final)
    rel.status = "restored"
    return rel


def noisy_table(cfg: ReportConfig, con: Any, plan: BudgetSplit) -> tuple[Any, dict[str, int]]:
    """Noisy published table (pyarrow) and cell counts. Only cell aggregates are read from DuckDB.

    Arrow tables are built with :mod:`pipeline.tables`' buffer helpers, never ``pa.array``/``pa.table``:
    those import pandas (~0.3 s) just to check their argument's type.
    """
    from ..tables import arrow_array, arrow_table

    keys = [dim_key(i) for i in range(len(cfg.dims))]
    ingredients = ["CAST(__units AS BIGINT) AS __units", "CAST(coalesce(__rows, 0) AS BIGINT) AS __rows"]
    for i, m in enumerate(cfg.metrics):
        if m.column is not None:
            ingredients += [f"CAST(coalesce(__s{i}, 0) AS DOUBLE) AS __s{i}", f"CAST(coalesce(__c{i}, 0) AS BIGINT) AS __c{i}"]
    select = f"SELECT {', '.join(keys + ingredients)} FROM __dp_cells WHERE __level = $1"
    levels_out = []
    counts = {"cells_computed": 0, "cells_published": 0, "cells_suppressed": 0}
    for lv, lplan in plan.levels:
        sub = con.execute(select, [lv.index]).arrow()
        cols, n_pub = _noisy_level(cfg, sub, lplan)
        levels_out.append((lv, arrow_table(cols), lplan))
        counts["cells_computed"] += sub.num_rows
        counts["cells_published"] += n_pub
        if lplan.selection is not None:
            counts["suppressed_selection"] = counts.get("suppressed_selection", 0) + sub.num_rows - n_pub
    tables = [t for _, t, _ in levels_out]
    if cfg.consistent and cfg.totals:
        from ..privacy.consistency import make_consistent

        tables = make_consistent(cfg, levels_out)
    import numpy as np
    import pyarrow as pa

    parts = []
    for (lv, _, _), t in zip(levels_out, tables, strict=True):
        if cfg.totals:
            t = t.append_column("__level", arrow_array(np.full(t.num_rows, lv.index, dtype=np.int64)))
        parts.append(t)
    counts["cells_suppressed"] = counts["cells_computed"] - counts["cells_published"]
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    if cfg.totals:  # the level's name added in the engine; rows are paired within this one result
        from ..engines.duckdb.suppression import level_name_case

        con.register("__noisy", table)
        try:
            cols = ", ".join([f"{level_name_case(cfg)} AS level"] + [ident(c) for c in table.column_names])
            table = con.execute(f"SELECT {cols} FROM __noisy").arrow()
        finally:
            con.unregister("__noisy")
    # deterministic row order (level, then dimensions), computed in Python, never taken from the engine
    from ..tables import sort_table

    table = sort_table(table, (["__level"] if cfg.totals else []) + [d.name for d in cfg.dims])
    if cfg.totals:
        table = table.drop_columns(["__level"])
    return table, counts


def _noisy_level(cfg: ReportConfig, cells: Any, plan: LevelBudget) -> tuple[dict[str, Any], int]:
    """Selection and noise for one table level's cells; returns output columns and rows published.

    ``cells``: keys ``__d{i}``, ``__units``, ``__rows`` and per sum/mean metric ``__s{i}`` (DOUBLE)
    and ``__c{i}``, without nulls. The released rows are taken by position from ``cells`` itself
    (:func:`engine.take_rows`), so each noisy value stays on the cell whose true value it was drawn
    from; no engine result order is relied on.
    """
    from ..tables import np_column, take_rows

    keys = [dim_key(i) for i in range(len(cfg.dims))]
    n = cells.num_rows
    units = np_column(cells, "__units").astype(np.int64)
    if plan.selection is not None:
        noisy_units = add_noise(units, plan.selection)
        threshold = publication_threshold(plan.selection, cfg.min_units)
        keep = np.nonzero(noisy_units >= threshold)[0]
        noisy_units = noisy_units[keep]
    else:
        keep = np.arange(n)
        noisy_units = None
    sub = take_rows(cells, keep)
    out: dict[str, Any] = {}
    for i, d in enumerate(cfg.dims):
        out[d.name] = sub.column(keys[i])
    for i, m in enumerate(cfg.metrics):
        parts = plan.metrics.get(m.name, {})
        if m.agg == "count_units" and plan.selection is not None:
            out[m.name] = np.asarray(noisy_units, dtype=np.int64)
            out[m.name + "_ci95"] = np.full(len(keep), float(plan.selection.ci95_half_width))
            continue
        if m.agg in ("count", "count_units"):
            src = "__rows" if m.agg == "count" else "__units"
            true = np_column(sub, src).astype(np.int64)
            noisy = add_noise(true, parts["count"])
            if not cfg.consistent:  # consistent mode projects first (see consistency.py)
                noisy = np.maximum(noisy, 0)
            out[m.name] = np.asarray(noisy, dtype=np.int64)
            out[m.name + "_ci95"] = np.full(len(keep), float(parts["count"].ci95_half_width))
            continue
        lo, hi = m.bounds or (0.0, 0.0)
        s = np_column(sub, f"__s{i}").astype(np.float64)
        if m.agg == "sum":
            noisy = add_noise(s, parts["sum"])
            if not cfg.consistent:  # consistent mode projects first (see consistency.py)
                if lo >= 0:
                    noisy = np.maximum(noisy, 0.0)
                if hi <= 0:
                    noisy = np.minimum(noisy, 0.0)
                noisy = np.round(noisy, 2)
            out[m.name] = np.asarray(noisy, dtype=np.float64)
            out[m.name + "_ci95"] = np.full(len(keep), float(parts["sum"].ci95_half_width))
        else:
            c = np_column(sub, f"__c{i}").astype(np.int64)
            mid = (lo + hi) / 2.0
            centred = s - mid * c
            noisy_sum = add_noise(centred, parts["sum"])
            noisy_cnt = np.maximum(add_noise(c, parts["count"]), 1).astype(np.float64)
            mean = np.clip(mid + noisy_sum / noisy_cnt, lo, hi)
            hw = (parts["sum"].ci95_half_width + np.abs(mean - mid) * parts["count"].ci95_half_width) / noisy_cnt
            out[m.name] = np.round(mean, 4)
            out[m.name + "_ci95"] = np.minimum(hw, hi - lo)
    return out, int(len(keep))
