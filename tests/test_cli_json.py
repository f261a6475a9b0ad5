"""Machine-readable results (issue 18): ``--json`` gives one JSON object on stdout for success and
for failure, with the documented exit code; ``python -m pipeline`` is the same CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, release_dirs, run_cli, write_config


def test_run_json_states_the_release_and_gate(project: Path) -> None:
    res = run_cli("run", write_config(project), "--run-id", "r1", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    [rel] = release_dirs(project)
    manifest = json.loads((rel / "manifest.json").read_text())
    assert out["status"] == "published" and out["exit_code"] == 0 and Path(out["release"]) == rel
    assert out["cells_published"] == manifest["cells"]["cells_published"] > 0
    assert out["report_sha256"] == manifest["report_file"]["sha256"]
    assert out["gate"]["passed"] is True and out["gate"]["checks"]["min_units"] is True
    assert "withheld" not in json.dumps(out)  # only what the release itself states
    again = json.loads(run_cli("run", write_config(project), "--run-id", "r1", "--json").stdout)
    assert again["status"] == "unchanged"


def test_failures_are_one_json_object_with_the_exit_code(project: Path) -> None:
    res = run_cli("run", write_config(project, min_units=1), "--run-id", "r1", "--json")
    assert res.exit_code == 2
    out = json.loads(res.stdout)
    assert out == {"status": "failed", "exit_code": 2, "kind": "config error", "message": out["message"]}
    assert "min_units" in out["message"] and res.stderr.startswith("anonymize: config error:")
    bad = run_cli("run", write_config(project, source={"path": "data/nope.parquet"}), "--run-id", "r1", "--json")
    assert bad.exit_code == 1 and json.loads(bad.stdout)["kind"] == "source error"


def test_validate_and_check_json(project: Path) -> None:
    cfg = write_config(project)
    out = json.loads(run_cli("validate", cfg, "--json").stdout)
    assert out["status"] == "valid" and out["mode"] == "threshold" and out["report"] == "t_report"
    assert run_cli("run", cfg, "--run-id", "r1").exit_code == 0
    [rel] = release_dirs(project)
    checked = json.loads(run_cli("check", rel, "--json").stdout)
    ran = json.loads(run_cli("run", cfg, "--run-id", "r1", "--json").stdout)  # the rerun: the same facts
    assert checked["status"] == "passed" and checked["exit_code"] == 0 and checked["release"] == str(rel)
    assert {k: checked[k] for k in ("report", "run_id", "mode", "cells_published", "report_sha256")} == {
        k: ran[k] for k in ("report", "run_id", "mode", "cells_published", "report_sha256")}
    # the verdicts the check re-ran, by name (integrity first, then the gate's checks)
    assert checked["gate"]["passed"] and checked["gate"]["checks"]["integrity"] == "ok"
    assert checked["gate"]["checks"]["min_units"] == "ok" and "patterns" in checked["gate"]["checks"]
    planned = json.loads(run_cli("plan", cfg, "--min-units", "5", "--json").stdout)
    assert planned["status"] == "planned" and planned["exit_code"] == 0
    # the data and the text are one account: every verdict is a line of the text form
    text = run_cli("check", rel).stdout
    assert all(f"{c['status']:<7} {c['name']:<18} {c['detail']}" in text for c in checked["gate"]["verdicts"])
    assert len(checked["gate"]["verdicts"]) >= len(checked["gate"]["checks"]) >= 5
    (rel / "report.parquet").write_bytes(b"not parquet")
    res = run_cli("check", rel, "--json")
    failed = json.loads(res.stdout)
    assert res.exit_code == 3 and failed["status"] == "failed" and failed["exit_code"] == 3
    assert failed["gate"]["passed"] is False and failed["gate"]["checks"]["integrity"] == "FAIL"
    assert any(c["status"] == "FAIL" and "changed after publication" in c["detail"] for c in failed["gate"]["verdicts"])
    assert res.stderr.count("\n") == 1 and "release gate failed" in res.stderr  # still one line on stderr


def test_python_dash_m_pipeline_is_the_cli() -> None:
    res = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("anonymize")


def test_releases_catalogue(project: Path) -> None:
    cfg = write_config(project)
    for run_id in ("2026-11-23", "2026-11-24"):
        assert run_cli("run", cfg, "--run-id", run_id).exit_code == 0
    rows = json.loads(run_cli("releases", project / "reports", "--json").stdout)
    assert [(r["report"], r["run_id"]) for r in rows] == [("t_report", "2026-11-23"), ("t_report", "2026-11-24")]
    assert all(r["intact"] and r["gate_passed"] and r["mode"] == "threshold" and r["cells_published"] > 0 for r in rows)
    text = run_cli("releases", project / "reports")
    assert text.exit_code == 0 and "t_report/2026-11-23  [threshold]" in text.stdout and "MODIFIED" not in text.stdout
    report = project / "reports" / "t_report" / "2026-11-24" / "report.parquet"
    report.write_bytes(report.read_bytes() + b"x")
    assert "MODIFIED" in run_cli("releases", project / "reports").stdout
    assert run_cli("releases", project / "nope").exit_code == 1


def test_csv_export_is_the_gated_table_and_is_checked(project: Path) -> None:
    import csv
    import io

    import pyarrow.parquet as pq

    cfg = write_config(project, output={"dir": "reports", "formats": ["parquet", "csv"]})
    assert run_cli("run", cfg, "--run-id", "r1").exit_code == 0
    [rel] = release_dirs(project)
    manifest = json.loads((rel / "manifest.json").read_text())
    assert set(manifest["files"]) == {"report.csv"}
    rows = list(csv.DictReader(io.StringIO((rel / "report.csv").read_text())))
    table = pq.read_table(rel / "report.parquet").to_pylist()
    assert len(rows) == len(table) and rows[0]["city"] == table[0]["city"]
    assert [int(r["buyers"]) for r in rows] == [t["buyers"] for t in table]
    assert run_cli("check", rel).exit_code == 0
    (rel / "report.csv").write_text((rel / "report.csv").read_text().replace(rows[0]["city"], "X", 1))
    res = run_cli("check", rel)
    assert res.exit_code == 3 and "report.csv is missing or does not match" in res.stderr
    bad = write_config(project, "bad.yaml", output={"dir": "reports", "formats": ["csv"]})
    assert run_cli("run", bad, "--run-id", "r2").exit_code == 2


def test_csv_headers_carry_labels_and_units(project: Path) -> None:
    """label: and unit: give export headers ('City', 'Order value (INR)'); columns without them keep
    their names; the Parquet columns keep their machine names (the header travels in the field
    metadata, so the CSV is still derived from the gated bytes and re-checked); without labels no
    field metadata is written (the report's bytes are what they were)."""
    import csv
    import io

    import pyarrow.parquet as pq

    from tests.conftest import BASE_CONFIG

    metrics = [dict(m) for m in BASE_CONFIG["metrics"]]
    metrics[2] |= {"label": "Order value", "unit": "INR"}
    metrics[1] |= {"label": "Buyers"}
    metrics[0] |= {"unit": "events"}
    dims = ["city", {"column": "category", "label": "Product category"},
            {"column": "event_time", "grain": "month", "as": "month"}]
    cfg = write_config(project, metrics=metrics, dimensions=dims, output={"dir": "reports", "formats": ["parquet", "csv"]})
    assert run_cli("run", cfg, "--run-id", "r1").exit_code == 0
    rel = project / "reports" / "t_report" / "r1"
    header = next(csv.reader(io.StringIO((rel / "report.csv").read_text())))
    assert header == ["city", "Product category", "month", "events (events)", "Buyers",
                      "Order value (INR)", "order_value_avg"]
    assert pq.read_schema(rel / "report.parquet").names == [
        "city", "category", "month", "events", "buyers", "order_value_total", "order_value_avg"]
    assert run_cli("check", rel).exit_code == 0
    plain = write_config(project, "plain.yaml", output={"dir": "reports2"})
    assert run_cli("run", plain, "--run-id", "p").exit_code == 0
    assert all(f.metadata is None for f in pq.read_schema(project / "reports2" / "t_report" / "p" / "report.parquet"))
    bad = write_config(project, "bad.yaml", metrics=[metrics[0] | {"label": "two\nlines"}])
    res = run_cli("validate", bad, "--no-source")
    assert res.exit_code == 2 and "label" in res.stderr


def test_demo_outside_a_checkout_writes_the_schema_its_config_names(tmp_path: Path) -> None:
    """`anonymize demo --dir X` writes configs/demo.yaml and, beside it, the report.schema.json its
    `$schema` header names (the schema of this version: `anonymize schema`)."""
    res = run_cli("demo", "--dir", tmp_path, "--rows", "20000", "--users", "3000")
    assert res.exit_code == 0, res.stderr
    header = (tmp_path / "configs" / "demo.yaml").read_text().splitlines()[0]
    assert header.endswith("$schema=report.schema.json")
    written = json.loads((tmp_path / "configs" / "report.schema.json").read_text())
    assert written == json.loads(run_cli("schema").stdout)


def test_csv_export_through_the_api(project: Path) -> None:
    """``run_report`` writes every configured format from the same gated table: the CSV's rows are the
    Parquet's, and the manifest lists it with its sha256."""
    import csv
    import hashlib
    import io

    import pyarrow.parquet as pq

    from pipeline import load_config, run_report

    cfg = load_config(write_config(project, output={"dir": "reports", "formats": ["parquet", "csv"]}))
    rel = run_report(cfg, "api1", summary_html=False)
    data = (rel.path / "report.csv").read_bytes()
    assert rel.manifest["files"]["report.csv"]["sha256"] == hashlib.sha256(data).hexdigest()
    rows = list(csv.reader(io.StringIO(data.decode())))
    table = pq.read_table(rel.report_path)
    assert len(rows) == table.num_rows + 1 and rows[0] == table.column_names


def test_packaging_facts() -> None:
    """Typed package (PEP 561 marker shipped), Apache-2.0 by SPDX expression with its LICENSE file."""
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0" and "LICENSE" in meta.get("license-files", ["LICENSE"])
    assert (ROOT / "pipeline" / "py.typed").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert "py.typed" in str(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"])
