"""Sources under a DP budget: content digests, and the register that keeps exact releases off them.

A DP budget bounds what *all* releases of a population reveal only if nothing else publishes
that population's exact numbers. Each DP release records the content digests of its source files
in ``dp_sources.json`` in its state folder (the ledger's folder), with the ledger's policy
(``budget.allow_exact_releases``). A threshold-mode run whose state folder holds that register
and whose source has a file with a registered digest is refused (exit 3) unless every ledger that
registered it allows exact releases; the permission used is recorded in the release's manifest.

Guarantees:
- :func:`content_digests` is the sha256 of each file's bytes, in sorted order: the same data under
  another path, glob, hard link or copy has the same digests (renaming or copying a file does not
  make it another population).
- :func:`register` rewrites the register atomically (temp file + rename) and is called under the
  ledger's lock; a crash leaves the previous register.
- :func:`check_exact_release` refuses when in doubt: an unreadable register is a refusal, not a pass.

Limits (docs/PRIVACY.md): digests match byte-identical files only (a re-export with other bytes is
another source unless ``budget.source_id`` names it); the register is seen only by threshold runs
whose state folder is the ledger's folder (the default layout puts both in ``state/``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config import file_url_path
from ..errors import PrivacyRefusal

REGISTER_FILE = "dp_sources.json"
_CHUNK = 1 << 20


def content_digests(paths: Iterable[str | Path]) -> list[str]:
    """sha256 of each file's bytes, sorted (so the order files were listed in does not matter).
    A ``file://`` URL is read as its local path; other URLs are hashed by the Spark engine
    (``SparkEngine.content_digests``)."""
    out = []
    for p in paths:
        if isinstance(p, str):
            p = file_url_path(p) or p
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        out.append(h.hexdigest())
    return sorted(out)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"sources": {}}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("sources"), dict):
            raise ValueError("no 'sources' object")
    except (OSError, ValueError) as exc:
        raise PrivacyRefusal(
            f"{path} (the register of sources under a DP budget) is unreadable ({exc}); "
            "restore it from backup: exact releases are refused while it cannot be read"
        ) from None
    return data


def register(state_dir: Path, digests: list[str], *, source_id: str, ledger: Path, allow_exact: bool) -> None:
    """Record that files with these digests are under ``ledger``'s budget for ``source_id``, with the
    ledger's current policy on exact releases. Call under the ledger's lock."""
    path = state_dir / REGISTER_FILE
    data = _read(path)
    for d in digests:
        owners = data["sources"].setdefault(d, [])
        owners[:] = [o for o in owners if (o.get("ledger"), o.get("source_id")) != (str(ledger), source_id)]
        owners.append({"ledger": str(ledger), "source_id": source_id, "allow_exact_releases": bool(allow_exact)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_exact_release(state_dir: Path, digests: Callable[[], Iterable[str]]) -> list[dict[str, Any]]:
    """Refuse (PrivacyRefusal) an exact release of files that a DP ledger registered, unless every
    such ledger allows exact releases. ``digests`` returns the files' :func:`content_digests` (the
    engine's: remote files are hashed where they are); it is called only when a register exists.
    Returns the permissions used (empty when none applied)."""
    path = state_dir / REGISTER_FILE
    if not path.exists():
        return []
    registered = _read(path)["sources"]
    used: list[dict[str, Any]] = []
    for digest in sorted(set(digests())):
        for owner in registered.get(digest, []):
            if not owner.get("allow_exact_releases"):
                raise PrivacyRefusal(
                    f"source data is under the DP budget of ledger {owner.get('ledger')} (source id "
                    f"{owner.get('source_id')!r}; a file with the same bytes was released there): an exact "
                    "(threshold-mode) release would bypass that budget; nothing was published. To allow it, "
                    "set budget.allow_exact_releases: true in that DP config (recorded in its ledger) and rerun it"
                )
            used.append({"ledger": owner.get("ledger"), "source_id": owner.get("source_id"),
                         "policy": "allow_exact_releases: true"})
    unique = {json.dumps(u, sort_keys=True): u for u in used}
    return [unique[k] for k in sorted(unique)]
