"""Dagster assets for a project of reports (``pip install 'anonymize-pipeline[dagster]'``).

One asset per report of an ``anonymize.yaml`` project. Materialising an asset publishes that
report's release exactly as ``anonymize run-all --select REPORT`` would (same preflight, gate,
ledger and audit; a rerun of the same run id is idempotent). The asset's metadata is what the
release itself may state — its path, run id, cells published, the report's sha256, the gate's
verdict and the ε spent — never the exact withheld counts. A refused or failed run is a failed
materialisation (:class:`dagster.Failure`) carrying the one-line reason and the CLI's exit code;
nothing is published.

    from pipeline.integrations.dagster import project_assets
    import dagster as dg

    defs = dg.Definitions(assets=project_assets("anonymize.yaml"))

Run ids: a report with ``window:`` is named after its last complete window (as of the day the
asset runs, UTC); a report without one needs ``run_id=``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def asset_name(report: str) -> str:
    """A Dagster asset name for a report name (letters, digits and underscores)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", report)
    return name if re.match(r"[A-Za-z_]", name) else "_" + name


def project_assets(project: str | Path, *, run_id: str | None = None, group_name: str = "anonymize") -> list[Any]:
    """One asset per report of ``project`` (see module doc). Validates the whole project first
    (a bad config fails here, as ``anonymize validate PROJECT`` would)."""
    import dagster as dg

    from ..project import load_project

    proj = load_project(project)
    path = proj.path

    def build(report: str, description: str | None) -> Any:
        @dg.asset(name=asset_name(report), group_name=group_name, description=description or f"anonymize report {report}")
        def _release():  # noqa: ANN202 - Dagster reads the signature: no context, no annotation
            from ..project import load_project, run_all

            [outcome] = run_all(load_project(path), [report], run_id=run_id)
            if outcome.status == "failed":
                raise dg.Failure(description=f"anonymize: {outcome.kind}: {outcome.message}",
                                 metadata={"exit_code": outcome.exit_code, "kind": outcome.kind or ""})
            manifest = json.loads((Path(str(outcome.release)) / "manifest.json").read_text())
            gate = manifest.get("gate") or {}
            budget = manifest.get("budget") or {}
            meta: dict[str, Any] = {
                "release": dg.MetadataValue.path(str(outcome.release)),
                "run_id": manifest.get("run_id"),
                "status": outcome.status,
                "mode": manifest.get("mode"),
                "cells_published": outcome.cells_published,
                "report_sha256": (manifest.get("report_file") or {}).get("sha256"),
                "gate_passed": gate.get("passed"),
            }
            if budget.get("epsilon_spent") is not None:
                meta["epsilon_spent"] = budget["epsilon_spent"]
            return dg.MaterializeResult(metadata={k: v for k, v in meta.items() if v is not None})

        return _release

    return [build(cfg.report, cfg.description) for cfg in proj.reports]
