"""One release reveals nothing about anyone (issue 15): each class of attack on a single release.

Each test plays the reader: it holds the release (and the config, whose bounds are public) and
tries to recover one person's value or to place a release where it leaks; the pipeline must refuse
or suppress.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from .conftest import release_dirs, run_cli, write_config


def _events(path: Path, sql: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    con.close()
    return path


SIMPLE = "SELECT i AS user_id, 'c' || (i % 3) AS city, CAST(i % 50 AS DOUBLE) AS amount FROM range(600) r(i)"


def _one_line(res, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("anonymize: ")
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


# ----- state files and paths ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["history", "ledger"])
def test_state_files_inside_the_output_folder_are_refused(tmp_path: Path, key: str) -> None:
    """A history or ledger under output.dir ships its secret (and the ledger's exact counts and
    release bytes) with the releases."""
    _events(tmp_path / "data" / "e.parquet", SIMPLE)
    extra = ({"history": "reports/state/history.duckdb"} if key == "history" else {
        "privacy": {"epsilon": 1.0, "delta": 1e-6},
        "budget": {"ledger": "reports/state/ledger.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5}})
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], metrics=[{"name": "n", "agg": "count"}], min_units=5, **extra)
    for args in (["validate", cfg], ["run", cfg, "--run-id", "r1"]):
        _one_line(run_cli(*args), 2, "inside the output.dir folder", "state files hold secrets")
    assert not (tmp_path / "reports" / "state").exists() and release_dirs(tmp_path) == []


def test_a_source_glob_through_a_symlink_cannot_read_back_releases(tmp_path: Path) -> None:
    """The source glob names a symlinked folder; the output is inside the real folder: the
    release files would be read back by the glob (resolved, the paths are the same)."""
    real = tmp_path / "real"
    _events(real / "e.parquet", SIMPLE)
    os.symlink(real, tmp_path / "data")
    cfg = write_config(tmp_path, source={"path": "data/**/*.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], metrics=[{"name": "n", "agg": "count"}], min_units=5,
                       output={"dir": "real/reports"})
    _one_line(run_cli("run", cfg, "--run-id", "r1"), 2, "would match the release")
    assert not (real / "reports").exists()
