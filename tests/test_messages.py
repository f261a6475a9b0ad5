"""Every message true and useful (issue 13): what `check`, `validate` and errors tell a user.

Each test states a message a user relies on and checks it against what actually happened.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from .conftest import BASE_CONFIG, run_cli, write_config


def _one_line(err: str) -> str:
    assert err.startswith("anonymize: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----- check: the source is unchanged right after a release ------------------------------------


def test_check_after_a_release_from_a_configs_folder_says_unchanged(tmp_path: Path, events_file: Path) -> None:
    """The README layout: the config in configs/ reads ../data/…; check (no --config) must not cry
    wolf right after the release (the old fingerprint compared 'configs/../data/x' with 'data/x')."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "data").mkdir()
    shutil.copy(events_file, tmp_path / "data" / "events.parquet")
    cfg = write_config(tmp_path / "configs", source={"path": "../data/events.parquet"}, output={"dir": "../reports"})
    assert run_cli("run", cfg, "--run-id", "r1", "-q").exit_code == 0
    out = run_cli("check", tmp_path / "reports" / "t_report" / "r1")
    assert out.exit_code == 0, out.stderr
    assert "unchanged since the release" in out.stdout and "CHANGED" not in out.stdout
    # and a real change is still reported
    (tmp_path / "data" / "events.parquet").write_bytes((tmp_path / "data" / "events.parquet").read_bytes())
    import os

    os.utime(tmp_path / "data" / "events.parquet", ns=(1, 1))
    assert "CHANGED since the release" in run_cli("check", tmp_path / "reports" / "t_report" / "r1").stdout


# ----- URLs are refused, never turned into local folders ---------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"output": {"dir": "s3://bucket/reports"}}, "output.dir"),
        ({"source": {"path": "s3://bucket/events.parquet"}}, "source.path"),
        ({"source": {"path": "https://example.com/e.parquet"}}, "source.path"),
        ({"history": "gs://bucket/history.duckdb"}, "history"),
        ({"engine": {"temp_directory": "s3://bucket/tmp"}}, "engine.temp_directory"),
        ({"privacy": {"epsilon": 1, "delta": 1e-6, "public_partitions": "s3://b/cells.csv"}, "min_units": None,
          "budget": {"ledger": "l.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5}}, "privacy.public_partitions"),
        ({"privacy": {"epsilon": 1, "delta": 1e-6},
          "budget": {"ledger": "s3://b/ledger.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5}}, "budget.ledger"),
    ],
)
def test_url_paths_are_a_config_error(project: Path, overrides: dict, key: str) -> None:
    cfg = write_config(project, **overrides)
    for cmd in (["validate", cfg], ["run", cfg, "--run-id", "r1"]):
        r = run_cli(*cmd)
        assert r.exit_code == 2, (cmd, r.stdout, r.stderr)
        err = _one_line(r.stderr)
        assert key in err and "not supported" in err and "URL" in err
    assert not list(project.glob("s3*")) and not list(project.glob("**/s3:"))


def test_object_store_sources_are_for_the_spark_engine(project: Path) -> None:
    """A source URL Spark can read (s3a://, abfss://, file://…) is accepted with engine.kind: spark
    only; DuckDB's refusal names the key and both ways out; other URLs stay refused on Spark too."""
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    for url in ("s3a://bucket/events/", "abfss://c@acct.dfs.core.windows.net/e/*.parquet", "file:///data/e.parquet"):
        cfg = load_config(write_config(project, source={"path": url}, engine={"kind": "spark"}))
        assert cfg.source.path == url
        from pipeline.engines.base import default_source_id

        assert default_source_id(cfg) == url.rstrip("/")  # the same population from every config folder
        with pytest.raises(ConfigError, match=r"source\.path.*not supported by the DuckDB engine.*engine\.kind: spark"):
            load_config(write_config(project, source={"path": url}))
    with pytest.raises(ConfigError, match="not supported yet"):
        load_config(write_config(project, source={"path": "https://example.com/e.parquet"}, engine={"kind": "spark"}))
    from pipeline.config import file_url_path

    # a file:// URL names its local path (percent-escapes decoded, as Path.as_uri writes them)
    assert file_url_path((project / "a b" / "e.parquet").as_uri()) == str(project / "a b" / "e.parquet")
    assert file_url_path("s3a://bucket/e/") is None and file_url_path("/data/e.parquet") is None
    r = run_cli("validate", write_config(project, source={"path": "s3a://bucket/e/"}))
    assert r.exit_code == 2 and "engine.kind: spark" in _one_line(r.stderr)


@pytest.mark.parametrize("flag", ["--output", "--temp-dir"])
def test_url_flags_are_a_usage_error(project: Path, flag: str) -> None:
    r = run_cli("run", write_config(project), "--run-id", "r1", flag, "s3://bucket/x")
    assert r.exit_code == 2 and flag in _one_line(r.stderr) and "not supported" in r.stderr
    assert not list(project.rglob("s3:"))


# ----- validate says ok only where run would run -----------------------------------------------


def test_validate_refuses_an_exhausted_budget_like_run(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT i AS user_id, 'c' || (i % 2) AS city FROM range(2000) r(i)) "
                f"TO '{tmp_path / 'data' / 'd.parquet'}' (FORMAT parquet)")
    cfg = write_config(tmp_path, source={"path": "data/d.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], metrics=[{"name": "n", "agg": "count"}], min_units=5,
                       privacy={"epsilon": 1.0, "delta": 1e-6},
                       budget={"ledger": "state/l.duckdb", "epsilon_limit": 1.5, "delta_limit": 1e-5})
    first = run_cli("validate", cfg)
    assert first.exit_code == 0 and "no ledger yet" in first.stdout
    assert not (tmp_path / "state").exists()  # validate creates nothing
    assert run_cli("run", cfg, "--run-id", "r1", "-q").exit_code == 0
    v = run_cli("validate", cfg)
    r = run_cli("run", cfg, "--run-id", "r2")
    assert v.exit_code == r.exit_code == 3
    assert "budget exhausted" in _one_line(v.stderr) and "budget exhausted" in r.stderr


# ----- config errors name every problem and the likely fix -------------------------------------


def _yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if text in line)


def test_a_typo_of_a_required_key_is_named_with_the_fix(tmp_path: Path) -> None:
    data = dict(BASE_CONFIG)
    data["min_unit"] = data.pop("min_units")
    path = _yaml(tmp_path, data)
    err = _one_line(run_cli("validate", path, "--no-source").stderr)
    assert f"line {_line_of(path, 'min_unit:')}: min_unit: unknown key (did you mean `min_units`?)" in err
    assert "more problem" not in err


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    data = dict(BASE_CONFIG)
    data["min_unit"] = data.pop("min_units")
    data["metrics"] = [{"name": "n", "agg": "cnt"}]
    data["dimensions"] = [{"column": "event_time", "grain": "mnth"}]
    data["source"] = {"pth": "data/events.parquet"}
    path = _yaml(tmp_path, data)
    err = _one_line(run_cli("validate", path, "--no-source").stderr)
    assert "5 problems" in err
    for needle in ("source.path: required key is missing", "source.pth: unknown key (did you mean `path`?)",
                   "(did you mean `month`?)", "metrics[0].agg", "(did you mean `min_units`?)"):
        assert needle in err, needle
    # in file order, each with its own line
    lines = [int(x) for x in __import__("re").findall(r"line (\d+):", err)]
    assert lines == sorted(lines) and len(lines) >= 4


def test_a_missing_config_file_shows_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    err = _one_line(run_cli("validate", "configs/nope.yaml").stderr)
    assert str(tmp_path.resolve() / "configs" / "nope.yaml") in err


def test_a_column_error_names_line_and_closest_column(project: Path) -> None:
    path = write_config(project, dimensions=["cty", "category"])
    err = _one_line(run_cli("validate", path).stderr)
    assert f"line {_line_of(path, '- cty')}: dimensions[0]: column 'cty'" in err and "(did you mean `city`?)" in err


def test_public_partitions_with_min_units_is_refused(project: Path) -> None:
    (project / "cells.csv").write_text("city\nMumbai\n")
    path = write_config(project, privacy={"epsilon": 1, "delta": 1e-6, "public_partitions": "cells.csv"},
                        budget={"ledger": "l.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5})
    err = _one_line(run_cli("validate", path).stderr)
    assert "min_units has no effect with privacy.public_partitions" in err


# ----- data errors name the real value and where it is -----------------------------------------


def test_text_in_a_csv_metric_column_names_the_value_and_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "e.csv").write_text(
        "user_id,city,order_value\n1,A,1\n2,A,2.5\n3,B,missing\n4,B,n.a.\n5,A,7\n")
    cfg = write_config(tmp_path, source={"path": "data/e.csv"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=2,
                       metrics=[{"name": "v", "agg": "sum", "column": "order_value", "bounds": [0, 10]}])
    err = _one_line(run_cli("run", cfg, "--run-id", "r1").stderr)
    assert "'missing'" in err and "e.csv, line 4" in err and "2 such values" in err and "N/A" not in err
    assert f"line {_line_of(cfg, 'column: order_value')}: metrics[0].column" in err


def test_text_in_a_parquet_metric_column_names_the_value_and_row(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT i AS user_id, 'A' AS city, CASE WHEN i = 7 THEN 'tbd' ELSE CAST(i AS VARCHAR) END "
                f"AS order_value FROM range(10) r(i)) TO '{tmp_path / 'data' / 'e.parquet'}' (FORMAT parquet)")
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=2,
                       metrics=[{"name": "v", "agg": "sum", "column": "order_value", "bounds": [0, 10]}])
    err = _one_line(run_cli("run", cfg, "--run-id", "r1").stderr)
    assert "'tbd'" in err and "e.parquet, row 8" in err


# ----- usage errors look like every other error ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run"], "Missing argument 'CONFIG'"),
        (["nope"], "No such command 'nope'"),
        (["plan", "x.yaml", "--min-units", "1"], "--min-units"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str], needle: str) -> None:
    r = run_cli(*args)
    assert r.exit_code == 2
    err = _one_line(r.stderr)
    assert err.startswith("anonymize: usage error: ") and needle in err and "--help" in err
    assert "Usage:" not in err and r.stdout == ""


def test_help_and_version_still_exit_0() -> None:
    assert run_cli("--help").exit_code == 0 and "Exit codes" in run_cli("--help").stdout
    assert run_cli("--version").exit_code == 0
    bare = run_cli()
    assert bare.exit_code == 0 and "Commands:" in bare.stdout


# ----- DP settings that mislead are flagged or refused -------------------------------------------


def _dp_people(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    con = duckdb.connect()
    con.execute(f"COPY (SELECT i AS user_id, 'c' || (i % 25) AS city, CAST(i % 900 + 100 AS DOUBLE) AS amount "
                f"FROM range(20000) r(i)) TO '{tmp_path / 'data' / 'd.parquet'}' (FORMAT parquet)")
    return tmp_path / "data" / "d.parquet"


def _dp_yaml(tmp_path: Path, **privacy: object) -> Path:
    _dp_people(tmp_path)
    return write_config(
        tmp_path, source={"path": "data/d.parquet"}, identifiers=["user_id"], filter=None, dimensions=["city"],
        min_units=5,
        metrics=[{"name": "people", "agg": "count_units"},
                 {"name": "amount_total", "agg": "sum", "column": "amount", "bounds": [0, 1_000_000]}],
        privacy={"epsilon": 1.0, "delta": 1e-6, **privacy},
        budget={"ledger": "state/l.duckdb", "epsilon_limit": 1e10, "delta_limit": 1e-3},
    )


@pytest.mark.parametrize("epsilon", [10.5, 1000, 1e9])
def test_a_huge_epsilon_is_refused_unless_asked_for(tmp_path: Path, epsilon: float) -> None:
    err = _one_line(run_cli("validate", _dp_yaml(tmp_path, epsilon=epsilon)).stderr)
    assert "privacy.epsilon" in err and "above 10" in err and "allow_large_epsilon" in err
    assert run_cli("run", _dp_yaml(tmp_path, epsilon=epsilon), "--run-id", "r").exit_code == 2
    ok = run_cli("validate", _dp_yaml(tmp_path, epsilon=epsilon, allow_large_epsilon=True))
    assert ok.exit_code == 0, ok.stderr


def test_plan_flags_candidates_above_the_ceiling(tmp_path: Path) -> None:
    from pipeline import load_config, plan_report

    result = plan_report(load_config(_dp_yaml(tmp_path)), epsilons=[1.0, 20.0])
    flags = {c["epsilon"]: c.get("above_epsilon_ceiling", False) for c in result["candidates"]}
    assert flags == {1.0: False, 20.0: True}


def test_noise_dominated_metrics_are_flagged_where_true(tmp_path: Path) -> None:
    """At ε = 1 with bounds up to 1e6, amount_total's 95% half-width (~1.4e7) exceeds its sums
    (~4.4e5 per city), while the people counts (800 per city) are precise. The expected flags are
    recomputed here from the published file itself. The noise cannot be seeded: a city's sum lands
    beyond its half-width with probability ~0.05, so over 25 cities the median flips with
    probability ~1e-9 (over 5 cities it was ~0.2%, and it did once, in CI)."""
    import json

    import pyarrow.parquet as pq

    cfg = _dp_yaml(tmp_path)
    assert run_cli("run", cfg, "--run-id", "r1", "-q").exit_code == 0
    rel = tmp_path / "reports" / "t_report" / "r1"
    rows = pq.read_table(rel / "report.parquet").to_pylist()
    manifest = json.loads((rel / "manifest.json").read_text())

    def median_ratio(metric: str) -> float:
        import statistics

        return statistics.median(r[f"{metric}_ci95"] / abs(r[metric]) if r[metric] else float("inf") for r in rows)

    truth = {m: median_ratio(m) > 1 for m in ("people", "amount_total")}
    assert truth == {"people": False, "amount_total": True}  # the data are built for this
    assert manifest["privacy"]["noise_dominated"] == ["amount_total"]
    assert "noise-dominated" in run_cli("explain", rel).stdout
    assert "Caution" in (rel / "summary.html").read_text() and "amount_total" in (rel / "summary.html").read_text()
    plan = run_cli("plan", cfg)
    assert "noise-dominated at the configured setting" in plan.stdout and "amount_total" in plan.stdout.split(
        "noise-dominated at the configured setting")[1].splitlines()[0]
