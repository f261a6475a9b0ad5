"""Typed errors. Each maps to one CLI exit code and carries a one-line, user-facing message.

Exit codes (documented in the README):
    0  published (or an identical release already existed)
    1  anything else: source/data problems, I/O failures, internal errors
    2  usage or config error
    3  refused on privacy grounds (threshold, budget, release gate); nothing published
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a failure with a message meant for the user, not a traceback."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(PipelineError):
    """The report config (or a CLI argument) is invalid. Raised before any data is read."""

    exit_code = 2
    kind = "config error"


class SourceError(PipelineError):
    """The source data is missing, unreadable or holds values the pipeline refuses to coerce."""

    exit_code = 1
    kind = "source error"


class PrivacyRefusal(PipelineError):
    """The run was refused on privacy grounds (budget, gate, difference check): nothing published."""

    exit_code = 3
    kind = "refused"


class LedgerError(PipelineError):
    """The privacy-budget ledger is unreadable, locked for too long or fails verification."""

    exit_code = 3
    kind = "ledger error"


class ReleaseError(PipelineError):
    """Writing or reading a release failed (disk full, permissions, missing release)."""

    exit_code = 1
    kind = "release error"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
