"""The written guarantees name their tests: every test docs/PRIVACY.md cites exists, so a guarantee
cannot lose its test (a sentence no test backs) without this test failing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_privacy_md_cites_exists() -> None:
    text = (ROOT / "docs" / "PRIVACY.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"\btest_[a-z0-9_]+", text))
    sources = {p: p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py")}
    modules = {p.stem for p in sources}
    defined = {m for src in sources.values() for m in re.findall(r"^\s*def (test_[a-z0-9_]+)", src, re.M)}
    missing = sorted(cited - modules - defined)
    assert len(cited) > 20  # the document does cite its tests
    assert missing == [], f"docs/PRIVACY.md cites tests that do not exist: {missing}"
