"""``anonymize check RELEASE_DIR``: run the release gate again on a published release.

Guarantees:
- The bytes of ``report.parquet`` are compared with the sha256 the manifest recorded; a mismatch
  (the file was edited or replaced after publication) fails the check.
- The gate is the one a run uses (:func:`pipeline.gate.run_gate`), applied check by check to the
  bytes on disk, with the config recorded in the manifest (or ``--config``).
- When the source can still be opened, the source-dependent checks (identifier values,
  quasi-identifiers, recomputed ``min_units``) run against it; otherwise they are reported as
  skipped (and ``min_units`` falls back to the published unit counts), never silently passed.
- Any failed check raises :class:`PrivacyRefusal` (exit 3) whose ``details`` hold the full
  explanation and whose ``verdicts`` hold the same per-check results as data; a folder that is not
  a release raises :class:`ReleaseError`. Nothing is written.
- :func:`check_verdicts` returns those results as data (what ``check --json`` prints), built in the
  same pass as the text, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ReportConfig, config_from_dict, load_config
from ..errors import ConfigError, PipelineError, PrivacyRefusal, SourceError
from ..releases.store import MANIFEST_FILE, open_release, sha256

CHECKS: dict[str, str] = {
    "columns": "only declared dimension, metric, interval and level columns",
    "patterns": "no value looks like an e-mail, phone number, IP address, card number (Luhn), PAN, "
    "Aadhaar or GSTIN",
    "identifier_values": "no published dimension value equals a value of an identifier column in the source",
    "quasi_identifier": "no dimension behaves like a quasi-identifier (close to one value per person)",
    "min_units": "every published row (remainder rows too) aggregates at least min_units distinct units, "
    "recomputed from the source",
    "noise": "DP: every published value lies within its mechanism's noise of the true value it was drawn from "
    "(run time only: true values are never stored)",
}


@dataclass
class Verdicts:
    """The result of one check: every check's ``status`` (ok, FAIL, skipped, n/a) with its reason,
    in the order run (integrity of each file first, then the gate's checks), and the text shown."""

    checks: list[dict[str, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def add(self, status: str, name: str, text: str) -> None:
        self.checks.append({"name": name, "status": status, "detail": text})
        self.lines.append(_line(status, name, text))

    @property
    def passed(self) -> bool:
        return not any(c["status"] == "FAIL" for c in self.checks)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def by_name(self) -> dict[str, str]:
        """One status per check name: FAIL if any of its rows failed, else its first status."""
        out: dict[str, str] = {}
        for c in self.checks:
            if c["name"] not in out or c["status"] == "FAIL":
                out[c["name"]] = c["status"]
        return out


def check_release(release_dir: str | Path, config_path: str | Path | None = None) -> str:
    """Re-run the release gate on ``release_dir``; return the explanation, or raise on failure.

    Raises :class:`ReleaseError` when the folder is not a release, :class:`ConfigError` when the
    config cannot be rebuilt, and :class:`PrivacyRefusal` (with ``details`` and ``verdicts``) when
    any check fails.
    """
    return check_verdicts(release_dir, config_path).text


def check_verdicts(release_dir: str | Path, config_path: str | Path | None = None) -> Verdicts:
    """:func:`check_release`, returning the per-check results as data (raises the same way)."""
    from ..engines import connect
    from ..errors import first_line
    from .gate import run_gate

    rel = open_release(release_dir)
    manifest = rel.manifest
    report = rel.report_path.read_bytes()
    v = Verdicts()
    lines = v.lines
    lines.append(f"release {manifest.get('report')}/{manifest.get('run_id')} at {rel.path}")
    failures: list[str] = []

    recorded = (manifest.get("report_file") or {}).get("sha256")
    actual = sha256(report)
    if recorded == actual:
        v.add("ok", "integrity", "report.parquet matches the sha256 in manifest.json")
    else:
        why = "no sha256 recorded in manifest.json" if not recorded else "report.parquet does not match the sha256 in manifest.json (changed after publication)"
        v.add("FAIL", "integrity", why)
        failures.append(why)

    for name, info in sorted((manifest.get("files") or {}).items()):
        from ..releases.store import CSV_FILE, csv_bytes

        path = rel.path / name
        data = path.read_bytes() if path.is_file() else None
        if data is None or sha256(data) != info.get("sha256"):
            why = f"{name} is missing or does not match the sha256 in manifest.json (changed after publication)"
        elif name == CSV_FILE and data != csv_bytes(report):
            why = f"{name} does not hold exactly the rows of report.parquet"
        else:
            v.add("ok", "integrity", f"{name} matches its sha256 and report.parquet")
            continue
        v.add("FAIL", "integrity", why)
        failures.append(why)

    cfg, note = _config(rel.path, manifest, config_path)
    lines.append(f"config: {note}")
    lines.append(f"mode: {cfg.mode}" + (f", min_units={cfg.min_units}" if cfg.mode == "threshold" else ""))

    con = connect(cfg)
    try:
        source = None
        try:
            source = con.open_source(cfg)
            fp = (manifest.get("source") or {}).get("fingerprint")
            same = "unchanged since the release" if fp == source.fingerprint else (
                "CHANGED since the release (different files, sizes or times): source checks use the current data")
            lines.append(f"source: {cfg.source.path} ({same})")
        except (SourceError, ConfigError, con.Error) as exc:
            msg = exc.message if isinstance(exc, PipelineError) else first_line(exc)
            lines.append(f"source: not available ({msg}); source-dependent checks are skipped")
        for name, what in CHECKS.items():
            if name == "min_units" and cfg.privacy is not None:
                v.add("n/a", name, "DP mode publishes noisy values; no unit threshold")
                continue
            if name in ("identifier_values", "quasi_identifier") and cfg.privacy is not None:
                v.add("n/a", name, "DP mode: a verdict read off the exact data would let one "
                                                "person decide whether a release appears")
                continue
            if name == "noise":
                if cfg.privacy is None:
                    v.add("n/a", name, "threshold mode publishes exact values; no noise")
                else:
                    ran = ((manifest.get("gate") or {}).get("checks") or {}).get("noise", {})
                    when = "passed during the run" if ran.get("ok") else "not recorded by the run"
                    v.add("n/a", name, f"{when}; it cannot be re-run: the true values are never stored")
                continue
            try:
                result = run_gate(cfg, report, con=con if source else None, source=source, checks=(name,))
            except PrivacyRefusal as exc:
                msg = exc.message.removeprefix("release gate failed: ")
                v.add("FAIL", name, msg)
                failures.append(msg)
                continue
            except PipelineError:
                raise
            except Exception as exc:  # unreadable Parquet, wrong column types: the file is not a report
                msg = f"report.parquet cannot be checked: {first_line(exc)}"
                v.add("FAIL", name, msg)
                failures.append(msg)
                break
            v.add(*_describe(name, what, result["checks"].get(name, {})))
    finally:
        con.close()
    if failures:
        lines.append("verdict: FAILED: this release must not be shared")
        text = "\n".join(lines)
        err = PrivacyRefusal(f"release gate failed for {rel.path}: " + "; ".join(dict.fromkeys(failures)))
        err.details = text  # type: ignore[attr-defined]
        err.verdicts = v  # type: ignore[attr-defined]
        raise err
    skipped = sum(1 for c in v.checks if c["status"] == "skipped")
    lines.append("verdict: PASSED" + (f" ({skipped} check(s) skipped: the source is not available)" if skipped else ""))
    return v


def _line(status: str, name: str, text: str) -> str:
    return f"  {status:<7} {name:<18} {text}"


def _describe(name: str, what: str, detail: dict[str, Any]) -> tuple[str, str, str]:
    if detail.get("skipped"):
        return "skipped", name, f"{what}: cannot be checked without the source"
    if name == "min_units" and detail.get("recomputed") is False:
        return "ok", name, ("every row shows at least min_units units (published counts only: "
                            "the source is not available to recompute them)")
    return "ok", name, what


def _config(path: Path, manifest: dict[str, Any], config_path: str | Path | None) -> tuple[ReportConfig, str]:
    """The config to check against: ``--config``, else the one the manifest recorded."""
    if config_path is not None:
        cfg = load_config(config_path)
        same = cfg.config_hash() == manifest.get("config_hash")
        return cfg, f"{config_path}" + ("" if same else " (differs from the config recorded in the manifest)")
    data = manifest.get("config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path / MANIFEST_FILE} records no config; give --config CONFIG")
    name = f"{path / MANIFEST_FILE} (recorded config)"
    base = _base_dir(data, manifest) or path
    cfg = config_from_dict(data, base_dir=base, source_name=name)
    return cfg, "recorded in the manifest" + ("" if base != path else " (its folder is unknown)")


def _base_dir(data: dict[str, Any], manifest: dict[str, Any]) -> Path | None:
    """The folder the original config lived in, recovered from the source files it resolved to.

    The manifest keeps the absolute paths of the source files; the config's (relative) source
    path resolved against the right folder must name one of them.
    """
    from ..engines.base import resolve_files

    files = [f.get("path") for f in (manifest.get("source") or {}).get("files", []) if f.get("path")]
    if not files:
        return None
    first = Path(files[0])
    try:
        target = first.resolve()
    except OSError:
        return None
    for candidate in [first, *first.parents][:40]:
        try:
            cfg = config_from_dict(data, base_dir=candidate)
            found = {p.resolve() for p in resolve_files(cfg)}
        except (PipelineError, OSError):
            continue
        if target in found:
            return cfg.base_dir
    return None
