"""Shared fixtures: small generated event sets, config writing, in-process CLI runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

from pipeline.cli import main
from pipeline.generate import generate_events

# Property-based tests: a modest example count by default (CI), more with HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"

BASE_CONFIG: dict[str, Any] = {
    "report": "t_report",
    "source": {"path": "data/events.parquet"},
    "privacy_unit": "user_id",
    "identifiers": ["user_id", "email", "phone", "ip_address", "device_id"],
    "filter": {"event_type": ["enquiry", "call", "order"]},
    "dimensions": ["city", "category", {"column": "event_time", "grain": "month", "as": "month"}],
    "metrics": [
        {"name": "events", "agg": "count"},
        {"name": "buyers", "agg": "count_units"},
        {"name": "order_value_total", "agg": "sum", "column": "order_value", "bounds": [0, 100000]},
        {"name": "order_value_avg", "agg": "mean", "column": "order_value", "bounds": [0, 100000]},
    ],
    "min_units": 10,
    "output": {"dir": "reports"},
}


def parquet_from_sql(path: Path, select: str) -> Path:
    """Write the rows of a DuckDB ``select`` to the Parquet file ``path`` (its folder created)."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    finally:
        con.close()
    return path


@pytest.fixture(scope="session")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60k generated events for 6k users (deterministic)."""
    d = tmp_path_factory.mktemp("events")
    return generate_events(d / "events.parquet", rows=60_000, users=6_000, seed=11)


@pytest.fixture
def project(tmp_path: Path, events_file: Path) -> Path:
    """A project folder: data/events.parquet (symlink to the session file), reports/ written here."""
    (tmp_path / "data").mkdir()
    os.symlink(events_file, tmp_path / "data" / "events.parquet")
    return tmp_path


def write_config(folder: Path, name: str = "report.yaml", **overrides: Any) -> Path:
    cfg = dict(BASE_CONFIG)
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_cli(*args: str) -> Any:
    """Invoke the CLI in-process; returns the click Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def release_dirs(folder: Path) -> list[Path]:
    """Every visible release folder (not staging) under ``folder``."""
    return [p.parent for p in folder.rglob("manifest.json") if not any(x.name.startswith(".") for x in p.parents)]
