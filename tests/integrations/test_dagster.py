"""Dagster assets of a project (issue 18), run in-process with the real library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

dg = pytest.importorskip("dagster", reason="the [dagster] extra is not installed")

from pipeline.integrations.dagster import asset_name, project_assets  # noqa: E402

from ..conftest import release_dirs  # noqa: E402
from ..test_project import DEFAULTS, _project  # noqa: E402


def _metadata(result: object, name: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events()  # type: ignore[attr-defined]
               if e.asset_key == dg.AssetKey(name)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_each_report_is_an_asset_whose_metadata_is_its_manifest(project: Path) -> None:
    path = _project(project)
    assets = project_assets(path, run_id="2026-11-23")
    assert sorted(a.key.to_user_string() for a in assets) == ["by_category", "by_city"]
    result = dg.materialize(assets)
    assert result.success
    for name in ("by_city", "by_category"):
        meta = _metadata(result, name)
        manifest = json.loads((Path(meta["release"]) / "manifest.json").read_text())
        assert meta["run_id"] == "2026-11-23" and meta["status"] == "published"
        assert meta["cells_published"] == manifest["cells"]["cells_published"] > 0
        assert meta["report_sha256"] == manifest["report_file"]["sha256"] and meta["gate_passed"] is True
    assert {p.parent.name for p in release_dirs(project / "reports")} == {"by_city", "by_category"}
    again = dg.materialize(project_assets(path, run_id="2026-11-23"))  # idempotent rerun
    assert again.success and _metadata(again, "by_city")["status"] == "unchanged"


def test_a_refused_release_is_a_failed_materialisation_with_its_reason(project: Path) -> None:
    """The second DP release would exceed the source's budget: the materialisation fails with the
    CLI's one-line reason and exit code 3, and nothing more is published or spent."""
    dp = {"report": "dp_city", "dimensions": ["city"], "min_units": 10,
          "metrics": [{"name": "buyers", "agg": "count_units"}],
          "privacy": {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1},
          "budget": {"ledger": "state/ledger.duckdb", "epsilon_limit": 1.5, "delta_limit": 1e-5}}
    path = project / "anonymize.yaml"
    path.write_text(yaml.safe_dump({"defaults": DEFAULTS, "reports": [dp]}, sort_keys=False))
    first = dg.materialize(project_assets(path, run_id="r1"))
    assert first.success and _metadata(first, "dp_city")["epsilon_spent"] == pytest.approx(1.0)
    second = dg.materialize(project_assets(path, run_id="r2"), raise_on_error=False)
    assert not second.success
    [failure] = second.get_step_failure_events()
    data = failure.step_failure_data.user_failure_data
    assert data.description.startswith("anonymize: refused:") and "budget" in data.description
    assert data.metadata["exit_code"].value == 3
    assert [p.name for p in release_dirs(project / "reports")] == ["r1"]


def test_asset_names_are_valid_dagster_names() -> None:
    assert asset_name("buyers-by-city.v2") == "buyers_by_city_v2" and asset_name("2026") == "_2026"


def test_the_readme_lines_define_a_schedulable_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "project_assets" in b]
    _project(project)
    monkeypatch.chdir(project)
    scope: dict = {}
    exec(block, scope)  # noqa: S102 - the README's own lines
    defs = scope["defs"]
    assert sorted(a.key.to_user_string() for a in defs.assets) == ["by_category", "by_city"]
    assert [s.name for s in defs.schedules] == ["nightly"]
