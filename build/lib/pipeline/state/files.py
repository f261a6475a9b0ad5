"""State files beside the ledger and the release history: advisory locks and secrets.

Guarantees:
- :func:`file_lock` holds an exclusive ``flock`` on ``<path>.lock`` so processes serialise; it
  gives up after ``timeout`` seconds with :class:`LedgerError` (never blocks forever).
- :func:`load_or_create_secret` returns 32 random bytes kept in a file of mode 0600, created
  atomically on first use; it refuses a secret file that others can read.
- :func:`write_commitment` appends to the secret file (rewritten atomically, mode 0600) a record
  of the state the secret protects (the ledger's last entry), so deleting or rolling back that
  state while the secret remains is detectable; :func:`read_commitment` reads it back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import LedgerError

LOCK_TIMEOUT_S = float(os.environ.get("ANONYMIZE_LEDGER_LOCK_TIMEOUT", "600"))
SECRET_BYTES = 32


@contextlib.contextmanager
def file_lock(lock_path: Path, *, what: str, timeout: float | None = None) -> Iterator[None]:
    """Exclusive advisory lock on ``lock_path`` (created 0600). Raises LedgerError on timeout."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LedgerError(f"cannot open the lock {lock_path}: {exc.strerror}") from None
    deadline = time.monotonic() + (LOCK_TIMEOUT_S if timeout is None else timeout)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LedgerError(f"{what} is busy (another run holds {lock_path}); retry later") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path`` (created with mode 0600 on first use). Call under the file's lock."""
    if not path.exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(SECRET_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise LedgerError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    data = path.read_bytes()
    if len(data) < SECRET_BYTES:
        raise LedgerError(f"{path} is damaged (expected {SECRET_BYTES} bytes)")
    return data[:SECRET_BYTES]


def read_commitment(path: Path) -> dict[str, object] | None:
    """The state record stored after the secret's bytes (None when there is none yet)."""
    import json

    if not path.exists():
        return None
    tail = path.read_bytes()[SECRET_BYTES:]
    if not tail.strip():
        return None
    try:
        data = json.loads(tail.decode())
        if not isinstance(data, dict):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        raise LedgerError(f"{path} is damaged (its state record is unreadable): restore it from backup") from None
    return data


def write_commitment(path: Path, secret: bytes, record: dict[str, object]) -> None:
    """Rewrite the secret file as the secret followed by ``record`` (atomic, mode 0600, fsynced)."""
    import json

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret[:SECRET_BYTES] + b"\n" + json.dumps(record, sort_keys=True).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
