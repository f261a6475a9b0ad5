"""Config validation: every user mistake is a one-line ConfigError naming the key (and line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import config_from_dict, json_schema, load_config
from pipeline.errors import ConfigError

from ..conftest import BASE_CONFIG, run_cli, write_config


def _err(tmp_path: Path, **overrides) -> str:
    path = write_config(tmp_path, **overrides)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


def test_valid_config_loads(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    assert cfg.report == "t_report"
    assert [d.name for d in cfg.dims] == ["city", "category", "month"]
    assert cfg.mode == "threshold"
    assert cfg.resolve("data/x.parquet") == tmp_path.resolve() / "data/x.parquet"


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("report: a\nsource: {path: x.parquet}\nprivacy_unit: u\ndimensions: [d]\n"
                    "metrics: [{name: n, agg: count}]\nmin_units: 5\nminimum_units: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "minimum_units" in str(e.value) and "unknown key" in str(e.value) and "line 7" in str(e.value)


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("report: a\nsource: {path: x.parquet\nprivacy_unit: u\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "YAML syntax error" in str(e.value) and "line" in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"report": "../etc"}, "report"),
        ({"report": "a/b"}, "report"),
        ({"min_units": 1}, "min_units"),
        ({"min_units": 0}, "min_units"),
        ({"dimensions": ["email"]}, "dimensions[0]"),
        ({"dimensions": ["user_id"]}, "dimensions[0]"),
        ({"metrics": [{"name": "s", "agg": "sum", "column": "order_value"}]}, "needs bounds"),
        ({"metrics": [{"name": "s", "agg": "sum", "column": "order_value", "bounds": [5, 1]}]}, "greater than"),
        ({"metrics": [{"name": "s", "agg": "sum", "column": "phone", "bounds": [0, 1]}]}, "metrics[0].column"),
        ({"metrics": [{"name": "n", "agg": "count", "bounds": [0, 1]}]}, "takes no bounds"),
        ({"dimensions": [{"column": "event_time", "grain": "fortnight"}]}, "grain"),
        ({"metrics": "count"}, "metrics"),
        ({"privacy_unit": None}, "privacy_unit"),
        ({"filter": {"email": ["x"]}}, "filter"),
        ({"dimensions": [{"column": "city", "as": "bad name"}]}, "output column name"),
        ({"dimensions": ["city", {"column": "category", "as": "city"}]}, "used twice"),
        ({"totals": [["nope"]]}, "totals"),
    ],
)
def test_invalid_configs(tmp_path: Path, overrides: dict, needle: str) -> None:
    msg = _err(tmp_path, **overrides)
    assert needle in msg
    assert "\n" not in msg


def test_dp_config_checks(tmp_path: Path) -> None:
    budget = {"ledger": "state/l.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5}
    assert "epsilon" in _err(tmp_path, privacy={"epsilon": 0, "delta": 1e-6}, budget=budget)
    assert "epsilon" in _err(tmp_path, privacy={"epsilon": -1, "delta": 1e-6}, budget=budget)
    assert "delta" in _err(tmp_path, privacy={"epsilon": 1, "delta": 1.0}, budget=budget)
    assert "budget" in _err(tmp_path, privacy={"epsilon": 1, "delta": 1e-6})
    assert "exceeds" in _err(tmp_path, privacy={"epsilon": 6, "delta": 1e-6}, budget=budget)
    # budget weights: only in DP mode, positive and finite, never on the selection's own unit count
    weighted = [{"name": "n", "agg": "count", "budget_weight": 2}]
    assert "metrics[0].budget_weight" in _err(tmp_path, metrics=weighted)
    dp = {"privacy": {"epsilon": 1, "delta": 1e-6}, "budget": budget}
    for bad in (0, -1, float("inf")):
        assert "budget_weight" in _err(tmp_path, metrics=[{"name": "n", "agg": "count", "budget_weight": bad}], **dp)
    units = [{"name": "n", "agg": "count"}, {"name": "u", "agg": "count_units", "budget_weight": 2}]
    msg = _err(tmp_path, metrics=units, **dp)
    assert "metrics[1].budget_weight" in msg and "selection_share" in msg and "\n" not in msg


def test_with_overrides_revalidates(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    cfg2 = cfg.with_overrides(min_units=100)
    assert cfg2.min_units == 100 and cfg.min_units == 10
    assert cfg2.base_dir == cfg.base_dir
    with pytest.raises(ConfigError, match="min_units: Input should be greater than or equal to 2"):
        cfg.with_overrides(min_units=1)


def test_config_hash_ignores_key_order() -> None:
    a = config_from_dict(BASE_CONFIG)
    b = config_from_dict(dict(reversed(list(BASE_CONFIG.items()))))
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != a.with_overrides(min_units=11).config_hash()


def test_json_schema_is_generated(tmp_path: Path) -> None:
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "min_units" in schema["properties"]
    res = run_cli("schema")
    assert res.exit_code == 0
    assert json.loads(res.output)["title"] == "anonymize report config"


def test_cli_validate_exit_codes(project: Path) -> None:
    good = write_config(project)
    res = run_cli("validate", good)
    assert res.exit_code == 0, res.output
    bad = write_config(project, "bad.yaml", min_units=1)
    res = run_cli("validate", bad)
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "min_units" in res.stderr


def test_cli_validate_missing_source_column(project: Path) -> None:
    cfg = write_config(project, dimensions=["city", "no_such_column"])
    res = run_cli("validate", cfg)
    assert res.exit_code == 2
    assert "no_such_column" in res.stderr and "dimensions[1]" in res.stderr


def test_shipped_configs_validate() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "configs").glob("*.yaml")):
        load_config(path)  # every shipped config is valid on its own
    packaged = (root / "pipeline" / "resources" / "demo.yaml").read_text()
    assert packaged == (root / "configs" / "demo.yaml").read_text()


def test_published_json_schema_is_current() -> None:
    """configs/report.schema.json is generated from the models (regenerate: anonymize schema --out ...)."""
    root = Path(__file__).resolve().parents[2]
    assert json.loads((root / "configs" / "report.schema.json").read_text()) == json_schema()
