"""The README's Python API snippet runs as written (from a copy of the repository layout)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT


def api_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under '## Python API'"
    return match.group(1)


def test_readme_api_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "demo.yaml", tmp_path / "configs" / "demo.yaml")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(api_snippet(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    printed = out.getvalue()
    assert "INTERNAL ONLY" in printed and "suppressed cells by reason" in printed
    release = namespace["release"]
    assert release.status == "published" and release.manifest["privacy"]["min_units"] == 25
    assert int(release.table["buyers"].min()) >= 25
    assert (tmp_path / "reports" / "demo_buyer_activity" / "api-example" / "report.parquet").is_file()
