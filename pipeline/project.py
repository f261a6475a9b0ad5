"""A project of reports: ``anonymize.yaml`` at a project root lists reports and shared defaults.

    defaults:                      # merged under every report (a report's own keys win)
      source: {path: data/events.parquet}
      privacy_unit: user_id
      identifiers: [user_id, email, phone]
      output: {dir: reports}
    reports:
      - configs/buyer_activity_weekly.yaml      # a report config file (relative to the project)
      - report: city_totals                     # or a report written inline
        dimensions: [city]
        metrics: [{name: buyers, agg: count_units}]
        min_units: 50

Guarantees:
- Every report is validated as a whole config (defaults merged in) before anything runs; an error
  names the project file, the report (by position and name) and the key.
- Reports of one project share the state folder (release history and, with a ledger, budget)
  unless a report says otherwise: the defaults are the same for all.
- :func:`run_all` runs the selected reports in project order, each atomically (a failed report
  publishes nothing and does not stop the others), and returns every outcome; the CLI's exit code
  is the worst one (3 privacy refusal > 1 error > 2 config).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import ReportConfig
from .config.models import config_from_dict
from .errors import ConfigError, PipelineError

PROJECT_FILE = "anonymize.yaml"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _absolute_paths(defaults: dict[str, Any], root: Path) -> dict[str, Any]:
    """The defaults' paths made absolute against the project root, so a report config in another
    folder still means the project's files."""
    d = copy.deepcopy(defaults)

    def fix(holder: dict[str, Any] | None, key: str) -> None:
        if isinstance(holder, dict) and isinstance(holder.get(key), str) and "://" not in holder[key]:
            q = Path(holder[key]).expanduser()
            holder[key] = str(q if q.is_absolute() else (root / q))

    fix(d.get("source"), "path")
    fix(d.get("output"), "dir")
    fix(d, "history")
    fix(d.get("budget"), "ledger")
    fix(d.get("privacy"), "public_partitions")
    for entry in d.get("exclude_units") or []:
        fix(entry, "path")
    return d


@dataclass
class Project:
    path: Path
    reports: list[ReportConfig] = field(default_factory=list)

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[ReportConfig]:
        if not names:
            return list(self.reports)
        known = {c.report for c in self.reports}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"{self.path}: no report named {', '.join(map(repr, unknown))} "
                              f"(reports: {', '.join(sorted(known))})")
        return [c for c in self.reports if c.report in names]


def load_project(path: str | Path = PROJECT_FILE) -> Project:
    """Read ``anonymize.yaml`` (a file, or a folder holding one) and validate every report."""
    p = Path(path)
    if p.is_dir():
        p = p / PROJECT_FILE
    if not p.is_file():
        raise ConfigError(f"{p}: project file not found (looked for {p.expanduser().resolve()})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: YAML syntax error: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or set(data) - {"defaults", "reports"}:
        extra = sorted(set(data) - {"defaults", "reports"}) if isinstance(data, dict) else []
        raise ConfigError(f"{p}: a project has the keys defaults and reports only"
                          + (f" (unknown: {', '.join(extra)})" if extra else ""))
    defaults = data.get("defaults") or {}
    entries = data.get("reports") or []
    if not isinstance(defaults, dict) or not isinstance(entries, list) or not entries:
        raise ConfigError(f"{p}: reports must be a non-empty list (of config paths or inline configs)")
    root = p.resolve().parent
    defaults = _absolute_paths(defaults, root)
    reports: list[ReportConfig] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            cfg_path = (root / entry).resolve()
            if not cfg_path.is_file():
                raise ConfigError(f"{p}: reports[{i}]: config file not found ({cfg_path})")
            body = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            base_dir, name = cfg_path.parent, f"{p} reports[{i}] ({entry})"
        elif isinstance(entry, dict):
            body, base_dir, name = entry, root, f"{p} reports[{i}]" + (f" ({entry.get('report')})" if entry.get("report") else "")
        else:
            raise ConfigError(f"{p}: reports[{i}] must be a config path or an inline config")
        cfg = config_from_dict(_merge(defaults, body), base_dir=base_dir, source_name=name)
        if any(c.report == cfg.report for c in reports):
            raise ConfigError(f"{p}: reports[{i}]: report name {cfg.report!r} is used twice")
        reports.append(cfg)
    return Project(p, reports)


@dataclass
class Outcome:
    report: str
    status: str  # published | unchanged | restored | failed
    exit_code: int
    release: str | None = None
    kind: str | None = None
    message: str | None = None
    cells_published: int | None = None


SEVERITY = {0: 0, 2: 1, 1: 2, 3: 3}  # the CLI's exit code is the worst outcome's


def run_all(project: Project, names: list[str] | None = None, *, run_id: str | None = None,
            as_of: Any = None, verbose: bool = False, log_format: str = "text") -> list[Outcome]:
    """Run the selected reports in order; each outcome records what happened (never raises for a
    report's own failure). ``log_format="json"``: each report's stages as JSON lines on stderr,
    with the report's name."""
    from .flows.run import run_report
    from .releases.store import check_run_id

    out = []
    for cfg in project.select(names):
        try:
            if cfg.window is not None:
                cfg = cfg.for_window(as_of)
                rid = run_id or cfg.window.run_id()  # type: ignore[union-attr]
            else:
                if not run_id:
                    raise ConfigError(f"report {cfg.report!r} has no window: give --run-id")
                rid = run_id
            check_run_id(rid)
            rel = run_report(cfg, rid, verbose=verbose, summary_html=True, log_format=log_format)
            out.append(Outcome(cfg.report, rel.status, 0, str(rel.path),
                               cells_published=(rel.manifest.get("cells") or {}).get("cells_published")))
        except PipelineError as exc:
            out.append(Outcome(cfg.report, "failed", exc.exit_code, kind=exc.kind, message=exc.message))
        except Exception as exc:  # noqa: BLE001 - a bug in one report must not hide the others' outcomes
            # nothing of it was published (releases are atomic); the summary still names it, exit 1
            out.append(Outcome(cfg.report, "failed", 1, kind="internal error",
                               message=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
    return out


def worst(outcomes: list[Outcome]) -> int:
    return max((o.exit_code for o in outcomes), key=lambda c: SEVERITY.get(c, 2), default=0)
