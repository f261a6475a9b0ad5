"""Exact run counts for operators, kept outside every release.

Rows selected, aggregated and dropped, cells computed and withheld per reason, source row counts:
published together with the release, these would let a reader subtract the published rows and
recover the withheld part exactly (one person's rows in a one-person city). So no release file
states them (docs/PRIVACY.md, "What a release states"); they go to
``<state>/internal/<report>/<run id>.json`` (``ReportConfig.state_dir``), written atomically before
the release becomes visible, for ``explain`` and the Python API (``Release.internal``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import ReportConfig


def internal_path(cfg: ReportConfig, run_id: str) -> Path:
    return cfg.state_dir / "internal" / cfg.report / f"{run_id}.json"


def write_internal(path: Path, counts: dict[str, Any]) -> None:
    """Write ``counts`` to ``path`` atomically (temp file, fsync, rename); mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(counts, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_internal(path: str | Path | None) -> dict[str, Any] | None:
    """The counts at ``path``, or None when it is absent or unreadable (another machine, say)."""
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
