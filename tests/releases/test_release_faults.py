"""Crashes, kills and I/O failures in threshold mode: nothing partial is ever visible."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import release_dirs, write_config


def _run(cfg: Path, run_id: str, *, env: dict | None = None, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--run-id", run_id, "-q"],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300, preexec_fn=preexec,
    )


@pytest.mark.parametrize("stage", ["load", "aggregate", "aggregate.per_unit", "suppress", "collect", "write", "gate", "stage", "staged", "published"])
def test_kill_threshold_run_at_each_stage(project: Path, stage: str) -> None:
    cfg = write_config(project, totals=[[], ["city"]], history="state/history.duckdb")
    killed = _run(cfg, "k", env={"ANONYMIZE_FAULT_AT": stage})
    assert killed.returncode == -9, killed.stderr
    final = project / "reports" / "t_report" / "k"
    if stage != "published":
        assert not final.exists()  # no partial release
    retry = _run(cfg, "k")
    assert retry.returncode == 0, retry.stderr
    assert (final / "report.parquet").is_file() and (final / "manifest.json").is_file()
    assert [p.name for p in release_dirs(project / "reports")] == ["k"]
    # stale staging folders of the killed process are cleaned up by the next run
    assert not list((project / "reports").rglob(".staging-*"))


def test_disk_full_leaves_no_partial_release(project: Path) -> None:
    """RLIMIT_FSIZE makes every write past 4 KiB fail with EFBIG, as a full disk would."""
    cfg = write_config(project)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    res = _run(cfg, "full", preexec=limit)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "cannot write the release" in res.stderr
    assert release_dirs(project / "reports") == []
    assert not list((project / "reports").rglob(".staging-*"))


def test_output_path_not_a_folder(project: Path) -> None:
    (project / "reports").write_text("a file where the output folder should be")
    res = _run(write_config(project), "x")
    assert res.returncode == 1 and "reports" in res.stderr and res.stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_output_folder_without_permission(project: Path) -> None:  # pragma: no cover - CI runs as root here
    out = project / "reports"
    out.mkdir()
    out.chmod(0o500)
    res = _run(write_config(project), "x")
    assert res.returncode == 1 and "Permission denied" in res.stderr
