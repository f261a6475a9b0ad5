"""A project of reports (issue 18): ``anonymize.yaml`` with shared defaults, ``run-all`` in order
with one summary and the worst exit code, ``--select``, and ``validate`` of the whole project."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .conftest import release_dirs, run_cli

DEFAULTS = {"source": {"path": "data/events.parquet"}, "privacy_unit": "user_id",
            "identifiers": ["user_id", "email", "phone", "ip_address", "device_id"],
            "filter": {"event_type": ["enquiry", "call", "order"]}, "output": {"dir": "reports"}}


def _project(project: Path, extra: list | None = None) -> Path:
    (project / "configs").mkdir(exist_ok=True)
    (project / "configs" / "by_city.yaml").write_text(yaml.safe_dump({
        "report": "by_city", "dimensions": ["city"], "min_units": 10,
        "metrics": [{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"}]}))
    reports = ["configs/by_city.yaml",
               {"report": "by_category", "dimensions": ["category"], "min_units": 10,
                "metrics": [{"name": "buyers", "agg": "count_units"}]}] + (extra or [])
    path = project / "anonymize.yaml"
    path.write_text(yaml.safe_dump({"defaults": DEFAULTS, "reports": reports}, sort_keys=False))
    return path


def test_run_all_publishes_every_report_with_shared_defaults(project: Path) -> None:
    _project(project)
    res = run_cli("run-all", project, "--run-id", "2026-11-23", "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert [r["report"] for r in out["reports"]] == ["by_city", "by_category"]
    assert all(r["status"] == "published" and r["cells_published"] > 0 for r in out["reports"])
    # the file report's defaults point at the project's data and output, not configs/
    assert {p.parent.name for p in release_dirs(project / "reports")} == {"by_city", "by_category"}
    assert (project / "state" / "release_history.duckdb").exists()  # one shared audit store
    again = run_cli("run-all", project, "--run-id", "2026-11-23", "--select", "by_city")
    assert again.exit_code == 0 and "unchanged" in again.stdout and "by_category" not in again.stdout
    assert "2 valid report(s)" in run_cli("validate", project).stdout


def test_one_failing_report_does_not_stop_the_others_and_sets_the_exit_code(project: Path) -> None:
    _project(project, extra=[{"report": "broken", "dimensions": ["no_such_column"], "min_units": 10,
                              "metrics": [{"name": "n", "agg": "count"}]}])
    res = run_cli("run-all", project, "--run-id", "r1")
    assert res.exit_code == 2  # the broken report's config error; the others still ran
    assert "FAILED     broken: config error" in res.stdout and "2 of 3 report(s)" in res.stdout
    assert {p.parent.name for p in release_dirs(project / "reports")} == {"by_city", "by_category"}
    bad = run_cli("run-all", project, "--run-id", "r2", "--select", "nope")
    assert bad.exit_code == 2 and "no report named 'nope'" in bad.stderr


def test_run_all_json_logs_name_each_report(project: Path) -> None:
    _project(project)
    res = run_cli("run-all", project, "--run-id", "r1", "--log-format", "json")
    assert res.exit_code == 0, res.stdout + res.stderr
    events = [json.loads(line) for line in res.stderr.splitlines()]
    assert {e["report"] for e in events} == {"by_city", "by_category"}
    assert all(e["event"] == "stage" for e in events) and "2 of 2 report(s)" in res.stdout


def test_an_internal_error_in_one_report_is_an_outcome_not_a_crash(project: Path, monkeypatch) -> None:
    """Through the API: a bug raising in one report (fault injected into its run) leaves that report
    unpublished and named in the outcomes with exit 1; the next report still runs and publishes."""
    import pipeline.flows.run as flows_run
    from pipeline.project import load_project, run_all, worst

    real = flows_run.run_report

    def faulty(cfg, run_id, **kw):  # noqa: ANN001, ANN003, ANN202 - the real signature
        if cfg.report == "by_city":
            raise RuntimeError("injected fault")
        return real(cfg, run_id, **kw)

    monkeypatch.setattr(flows_run, "run_report", faulty)
    outcomes = run_all(load_project(_project(project)), run_id="r1")
    assert [(o.report, o.status, o.exit_code) for o in outcomes] == [
        ("by_city", "failed", 1), ("by_category", "published", 0)]
    assert outcomes[0].kind == "internal error" and "injected fault" in outcomes[0].message
    assert worst(outcomes) == 1
    assert {p.parent.name for p in release_dirs(project / "reports")} == {"by_category"}


def test_validate_of_a_project_checks_each_dp_reports_budget(project: Path) -> None:
    """``validate PROJECT`` makes every check ``validate CONFIG`` makes: a DP report whose ledger has
    no budget left for another release is refused (exit 3) before any run."""
    dp = {"report": "dp_city", "dimensions": ["city"], "min_units": 10, "metrics": [{"name": "n", "agg": "count"}],
          "privacy": {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 5},
          "budget": {"ledger": "state/ledger.duckdb", "epsilon_limit": 1.0, "delta_limit": 1e-5}}
    _project(project, extra=[dp])
    assert run_cli("validate", project).exit_code == 0
    assert run_cli("run-all", project, "--run-id", "r1", "--select", "dp_city").exit_code == 0  # spends all of ε
    res = run_cli("validate", project)
    assert res.exit_code == 3 and "budget" in res.stderr.lower()
