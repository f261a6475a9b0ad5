"""Stage timing and progress: live on a terminal, silent (or one line per stage) in cron and CI.

Guarantees:
- Progress goes to stderr only and never contains data values: only stage names, timings, counts
  of rows and files, and DuckDB's percentage of the running query.
- Timings are recorded for the manifest whatever is shown.
- ``verbose`` and stderr a terminal: a transient spinner per stage (rich) with elapsed time, the
  running query's progress and rows read, then one ``✓`` line per finished stage.
- ``verbose`` and not a terminal: one plain line per finished stage (no control characters).
- not ``verbose``: nothing at all, and nothing extra is imported or started, so non-interactive
  runs pay no cost for progress.
- ``log_format="json"``: one JSON object per finished stage on stderr, terminal or not, for log
  collectors: ``{"event": "stage", "report", "stage", "seconds", "counts": [{"label", "value",
  "unit"}]}``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

FAULT_ENV = "ANONYMIZE_FAULT_AT"  # test hook: SIGKILL this process when entering the named stage


@dataclass
class Stages:
    """Records wall time per stage; shows progress on stderr when ``verbose`` (see module doc)."""

    verbose: bool = False
    log_format: str = "text"  # text | json (see module doc)
    report: str | None = None  # named in JSON lines
    timings: dict[str, float] = field(default_factory=dict)
    _tty: bool = field(default_factory=lambda: sys.stderr.isatty())
    _counts: dict[str, str] = field(default_factory=dict)
    _raw: dict[str, tuple[int, str]] = field(default_factory=dict)
    _con: Any = None
    _console: Any = None

    @property
    def live(self) -> bool:
        """True when a live spinner is shown (verbose on a terminal, text logs)."""
        return self.verbose and self._tty and self.log_format == "text"

    def attach(self, con: Any) -> None:
        """Let the spinner show the running DuckDB query's progress (terminal only; no-op otherwise)."""
        if not self.live:
            return
        try:
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")  # DuckDB must not draw its own bar
        except Exception:  # noqa: BLE001 - progress is cosmetic; an older DuckDB just shows no percentage
            return
        self._con = con

    def count(self, label: str, value: int | None, unit: str = "rows") -> None:
        """Show a count (e.g. rows read) with the current stage; never a data value."""
        if value is not None:
            self._counts[label] = f"{int(value):,} {unit} {label}".strip()
            self._raw[label] = (int(value), unit)

    def _query_progress(self) -> float:
        con = self._con
        if con is None:
            return -1.0
        try:
            return float(con.query_progress())
        except Exception:  # noqa: BLE001 - the connection may be between queries
            return -1.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        fault_point(name)
        start = time.perf_counter()
        self._counts = {}
        self._raw = {}
        live = self._start_live(name, start) if self.live else None
        try:
            yield
        finally:
            if live is not None:
                live.stop()
            elapsed = time.perf_counter() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + elapsed, 4)
            if self.log_format == "json":
                import json

                counts = [{"label": k, "value": v, "unit": u} for k, (v, u) in self._raw.items()]
                print(json.dumps({"event": "stage", "report": self.report, "stage": name,
                                  "seconds": round(elapsed, 4), "counts": counts}), file=sys.stderr, flush=True)
            elif self.verbose:
                extra = "".join(f" · {c}" for c in self._counts.values())
                line = f"{name:<10} {elapsed:7.2f} s{extra}"
                if self._tty and self._console is not None:
                    from rich.text import Text

                    self._console.print(Text.assemble(("✓ ", "green"), line), highlight=False)
                else:
                    print(f"stage {line}", file=sys.stderr, flush=True)

    def _start_live(self, name: str, start: float) -> Any:
        from rich.console import Console
        from rich.live import Live

        if self._console is None:
            self._console = Console(file=sys.stderr)
        live = Live(_StageView(self, name, start), console=self._console, transient=True,
                    refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
        live.start()
        return live


class _StageView:
    """What the spinner line shows: frame, stage, elapsed, query %, counts (re-rendered ~8×/s)."""

    def __init__(self, stages: Stages, name: str, start: float) -> None:
        from rich.spinner import Spinner

        self.stages, self.name, self.start = stages, name, start
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> Any:
        from rich.text import Text

        now = time.perf_counter()
        parts: list[Any] = [self.spinner.render(now), " ", (self.name, "bold"), f" {now - self.start:5.1f} s"]
        pct = self.stages._query_progress()
        if pct >= 0:
            parts.append(f" · query {min(pct, 100.0):3.0f}%")
        for c in self.stages._counts.values():
            parts.append(f" · {c}")
        return Text.assemble(*parts)


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL when ``ANONYMIZE_FAULT_AT`` names this point (tests only)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
