"""Stage timing and progress: visible on a terminal, one quiet line per stage otherwise.

Guarantee: progress output goes to stderr only and never contains data values, only stage
names, timings and counts.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

FAULT_ENV = "ANONYMIZE_FAULT_AT"  # test hook: SIGKILL this process when entering the named stage


@dataclass
class Stages:
    """Records wall time per stage; prints progress to stderr when ``verbose``."""

    verbose: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    _tty: bool = field(default_factory=lambda: sys.stderr.isatty())

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        fault_point(name)
        start = time.perf_counter()
        if self.verbose and self._tty:
            print(f"\r… {name}", end="", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + elapsed, 4)
            if self.verbose:
                end = "\n"
                prefix = "\r" if self._tty else ""
                print(f"{prefix}✓ {name:<12} {elapsed:7.2f} s", end=end, file=sys.stderr, flush=True)


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL when ``ANONYMIZE_FAULT_AT`` names this point (tests only)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
