"""Progress output: live on a terminal, one plain line per stage with --verbose, silent otherwise."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from pipeline.progress import Stages
from pipeline.state.internal import read_internal

from .conftest import run_cli, write_config

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_cron_runs_are_silent_and_verbose_prints_one_line_per_stage(project: Path) -> None:
    cfg = write_config(project)
    quiet = run_cli("run", cfg, "--run-id", "q")
    assert quiet.exit_code == 0 and quiet.stderr == ""  # not a terminal, no --verbose: nothing on stderr
    res = run_cli("run", cfg, "--run-id", "v", "--verbose")
    assert res.exit_code == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines and all(line.startswith("stage ") for line in lines)
    assert not ANSI.search(res.stderr) and "\r" not in res.stderr
    manifest = json.loads((project / "reports" / "t_report" / "v" / "manifest.json").read_text())
    shown = [line.split()[1] for line in lines]
    assert set(manifest["timings_s"]) <= set(shown) and shown[0] == "load"
    # rows read: the Parquet row count, recomputed independently
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{project / 'data' / 'events.parquet'}')").fetchall()[0][0]
    load = next(line for line in lines if line.split()[1] == "load")
    assert f"{n:,} rows in 1 file(s)" in load
    aggregate = next(line for line in lines if line.split()[1] == "aggregate")
    exact = read_internal(manifest["internal_counts"])
    assert f"{exact['rows']['rows_selected']:,} rows selected" in aggregate
    # no data value ever appears in progress output
    assert "Mumbai" not in res.stderr and "@" not in res.stderr


def test_json_logs_are_one_object_per_stage(project: Path) -> None:
    """--log-format json: every stderr line is a JSON object naming a stage, its seconds and its
    counts as numbers (the load count is the Parquet row count), whether or not --verbose; the
    release line on stdout is unchanged; no data value appears."""
    cfg = write_config(project)
    res = run_cli("run", cfg, "--run-id", "j", "--log-format", "json")
    assert res.exit_code == 0, res.stderr
    events = [json.loads(line) for line in res.stderr.splitlines()]
    manifest = json.loads((project / "reports" / "t_report" / "j" / "manifest.json").read_text())
    assert set(manifest["timings_s"]) <= {e["stage"] for e in events} and events[0]["stage"] == "load"
    assert all(e["event"] == "stage" and e["seconds"] >= 0 for e in events)
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{project / 'data' / 'events.parquet'}')").fetchall()[0][0]
    assert events[0]["counts"] == [{"label": "in 1 file(s)", "value": n, "unit": "rows"}]
    assert "published:" in res.stdout
    assert "Mumbai" not in res.stderr and "@" not in res.stderr


def test_terminal_shows_live_progress_and_done_lines() -> None:
    from rich.console import Console

    buf = io.StringIO()
    st = Stages(verbose=True, _tty=True)
    st._console = Console(file=buf, force_terminal=True, width=100)
    con = duckdb.connect()
    st.attach(con)
    with st.stage("aggregate"):
        con.execute("SELECT count(DISTINCT i % 1000) FROM range(3000000) r(i)").fetchall()
        st.count("selected", 1234)
    out = buf.getvalue()
    plain = ANSI.sub("", out)
    assert "✓ aggregate" in plain and "1,234 rows selected" in plain
    assert set(st.timings) == {"aggregate"} and st.timings["aggregate"] > 0
    # DuckDB draws no progress bar of its own (it would garble the spinner)
    assert con.execute("SELECT current_setting('enable_progress_bar_print')").fetchone()[0] is False


def test_quiet_stages_import_nothing_extra() -> None:
    code = (
        "import sys, duckdb\n"
        "from pipeline.progress import Stages\n"
        "s = Stages(verbose=False, _tty=True)\n"
        "con = duckdb.connect(); s.attach(con)\n"
        "with s.stage('load'): pass\n"
        "print('rich' in sys.modules, s._con is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
