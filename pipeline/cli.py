"""``anonymize``: a thin command line over the library. Exit codes: 0 ok, 1 other, 2 usage/config, 3 refused.

Every user mistake ends in one line on stderr (``anonymize: <kind>: <message>``), never a traceback;
set ``ANONYMIZE_DEBUG=1`` to see tracebacks of internal errors.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import PipelineError

DEMO_CONFIG = "demo.yaml"


_JSON = {"on": False}  # set by a command's --json: failures are then also one JSON object on stdout


def _fail(kind: str, message: str, code: int, extra: dict[str, Any] | None = None) -> None:
    # always exactly one line: a line break inside a path or value is shown escaped
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    if _JSON["on"]:
        click.echo(json.dumps({"status": "failed", "exit_code": code, "kind": kind, "message": message,
                               **(extra or {})}))
    click.echo(f"anonymize: {kind}: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one stderr line and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _JSON["on"] = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            _fail(exc.kind, exc.message, exc.exit_code)
        except BrokenPipeError:
            # the reader went away (`anonymize explain … | head`): stop quietly, as Unix tools do
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        except KeyboardInterrupt:
            _fail("interrupted", "stopped by the user; nothing was published", 130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except MemoryError:
            _fail("error", "out of memory: set engine.memory_limit / --memory-limit so DuckDB spills to disk", 1)
        except OSError as exc:
            _fail("error", f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
        except Exception as exc:  # an internal error: still one line unless debugging
            if os.environ.get("ANONYMIZE_DEBUG"):
                traceback.print_exc()
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail("internal error", f"{type(exc).__name__}: {msg} (set ANONYMIZE_DEBUG=1 for details)", 1)

    return wrapper


class _Cli(click.Group):
    """The command group, with click's usage errors in the same one-line form as every other error
    (``anonymize: usage error: <what> (see `anonymize run --help`)``, exit 2)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D401 - click's entry point
        kwargs["standalone_mode"] = False
        _JSON["on"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as exc:
            no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
            if no_args and isinstance(exc, no_args) and exc.ctx is not None:  # bare `anonymize`: the help
                click.echo(exc.ctx.get_help())
                sys.exit(0)
            where = exc.ctx.command_path if exc.ctx is not None else "anonymize"
            _fail("usage error", f"{exc.format_message()} (see `{where} --help`)", 2)
        except click.exceptions.Abort:
            _fail("interrupted", "stopped by the user; nothing was published", 130)
        except click.ClickException as exc:
            _fail("error", exc.format_message(), exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="anonymize-pipeline", prog_name="anonymize")
def main() -> None:
    """Publish aggregate statistics with no personal data: k-thresholds, or differential privacy.

    \b
    Exit codes: 0 published · 1 source/data or other error · 2 usage or config error
                3 refused on privacy grounds (nothing was published)
    """


def _engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--threads", type=click.IntRange(1), help="DuckDB worker threads (default: all cores).")(fn)
    fn = click.option("--memory-limit", help="DuckDB memory limit, e.g. 4GB; beyond it DuckDB spills to --temp-dir.")(fn)
    fn = click.option("--temp-dir", type=click.Path(file_okay=False), help="Spill directory for large runs.")(fn)
    return fn


def _validate_one(cfg: Any, output: str | None, no_source: bool) -> tuple[str, str]:
    """Every check ``run`` makes before it reads data, for one report: the output location, the
    source's columns and types, and in DP mode the budget split and the ledger. Returns the source
    id and the budget line ("" in threshold mode)."""
    from .flows.run import preflight

    preflight(cfg, output_dir=output)
    if not no_source:
        from .engines import connect

        con = connect(cfg)
        try:
            src = con.open_source(cfg)
            con.check_columns(cfg, src)
            source_id = src.source_id
        finally:
            con.close()
    else:
        from .engines.base import default_source_id

        source_id = default_source_id(cfg)
    extra = ""
    if cfg.mode == "dp":
        from .flows.dp import budget_preflight

        extra = "; " + budget_preflight(cfg, source_id)
    return source_id, extra


@main.command()
@click.argument("config", type=click.Path())
@click.option("--no-source", is_flag=True, help="Check the config alone, without opening the source schema.")
@click.option("--output", "output", type=click.Path(file_okay=False), help="Output folder a run would use (overrides output.dir).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (also on failure).")
@handle_errors
def validate(config: str, no_source: bool, output: str | None, as_json: bool) -> None:
    """Validate CONFIG and the source: every check `run` makes before it reads data.

    Config keys, source columns and types (CSV files are checked line by line inside DuckDB), the
    output location, and in DP mode the budget split and the ledger (verified, and with budget
    left for one more release). Exit codes as for `run`.
    """
    from .config import load_config

    if Path(config).is_dir() or Path(config).name == "anonymize.yaml":
        from .project import load_project

        proj = load_project(config)
        for cfg in proj.reports:  # each report gets every check a single config gets
            _validate_one(cfg, output, no_source)
        names = [c.report for c in proj.reports]
        if as_json:
            click.echo(json.dumps({"status": "valid", "exit_code": 0, "project": str(proj.path), "reports": names}))
        else:
            click.echo(f"ok: {proj.path} holds {len(names)} valid report(s): {', '.join(names)}")
        return
    cfg = load_config(config)
    source_id, extra = _validate_one(cfg, output, no_source)
    if as_json:
        click.echo(json.dumps({"status": "valid", "exit_code": 0, "config": config, "report": cfg.report,
                               "mode": cfg.mode, "source_id": source_id, "budget": extra[2:] or None}))
        return
    click.echo(f"ok: {config} is a valid {cfg.mode}-mode report {cfg.report!r}{extra}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--run-id", help="Identity of this release, e.g. the date: 2026-11-23 (default with window: its name).")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Date the window is computed from (config window:; default today, UTC).")
@click.option("--output", "output", type=click.Path(file_okay=False), help="Output folder (overrides output.dir).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the release path.")
@click.option("--verbose", "-v", is_flag=True,
              help="One line per stage on stderr even when it is not a terminal (on a terminal progress is always shown).")
@click.option("--no-summary", is_flag=True, help="Do not write summary.html.")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), help="Engine (overrides engine.kind).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (also on failure).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON line per stage on stderr (for log collectors).")
@_engine_options
@handle_errors
def run(config: str, run_id: str | None, as_of: Any, output: str | None, quiet: bool, verbose: bool, no_summary: bool,
        engine: str | None, as_json: bool, log_format: str, threads: int | None, memory_limit: str | None,
        temp_dir: str | None) -> None:
    """Run CONFIG and publish <output>/<report>/<run id>/ atomically."""
    from .config import load_config
    from .errors import ConfigError
    from .flows.run import run_report
    from .releases.store import check_run_id

    cfg = load_config(config)
    if cfg.window is not None:
        cfg = cfg.for_window(as_of.date() if as_of else None)
        run_id = run_id or cfg.window.run_id()  # type: ignore[union-attr]
    elif as_of is not None:
        raise ConfigError(f"--as-of needs a window: in {config} (window: {{column: …, period: day|week|month}})")
    if not run_id:
        raise ConfigError("give --run-id (or a window: in the config, whose runs are named after their window)")
    check_run_id(run_id)
    if engine:
        cfg = cfg.with_overrides(engine={"kind": engine})
    rel = run_report(
        cfg, run_id, output_dir=output, verbose=not as_json and not quiet and (verbose or sys.stderr.isatty()),
        threads=threads, memory_limit=memory_limit, temp_directory=temp_dir, summary_html=not no_summary,
        log_format=log_format,
    )
    if as_json:
        click.echo(json.dumps(release_summary(rel), default=str))
        return
    _print_release(rel, quiet)


def release_summary(rel: Any) -> dict[str, Any]:
    """What a scheduler reads of a release: only what the release itself may state (no exact
    withheld counts), the gate's verdicts and the budget."""
    m = rel.manifest
    gate = m.get("gate") or {}
    budget = m.get("budget") or {}
    return {
        "status": rel.status, "exit_code": 0, "release": str(rel.path), "report": m.get("report"),
        "run_id": m.get("run_id"), "mode": m.get("mode"),
        "cells_published": (m.get("cells") or {}).get("cells_published"),
        "report_sha256": (m.get("report_file") or {}).get("sha256"),
        "gate": {"passed": gate.get("passed"),
                 "checks": {k: v.get("ok", "skipped" if "skipped" in v else None) for k, v in (gate.get("checks") or {}).items()}},
        "epsilon_spent": budget.get("epsilon_spent"), "epsilon_limit": budget.get("epsilon_limit"),
    }


def _print_release(rel: Any, quiet: bool) -> None:
    if quiet:
        click.echo(str(rel.path))
        return
    m = rel.manifest
    cells = m.get("cells", {})
    exact = (rel.internal or {}).get("cells") or {}
    withheld = (f"{exact['cells_suppressed']} withheld (operator count, not in the release)" if "cells_suppressed" in exact
                else "withheld count not stated")
    verb = {"published": "published", "unchanged": "already published (identical)", "restored": "restored"}.get(
        rel.status, rel.status)
    click.echo(f"{verb}: {m.get('report')}/{m.get('run_id')} [{m.get('mode')}] {cells.get('cells_published')} cells published, {withheld}")
    budget = m.get("budget")
    if budget:
        click.echo(f"budget: ε spent {budget.get('epsilon_spent'):.4g} of {budget.get('epsilon_limit'):.4g} for {budget.get('source_id')}")
    click.echo(f"report: {rel.path / 'report.parquet'}")


@main.command("generate-events")
@click.option("--rows", type=click.IntRange(1), default=1_000_000, show_default=True)
@click.option("--users", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--out", type=click.Path(), required=True, help="Parquet file, or folder when --partitions > 1.")
@click.option("--partitions", type=click.IntRange(1), default=1, show_default=True, help="Number of Parquet files.")
@click.option("--threads", type=click.IntRange(1))
@click.option("--shape", type=click.Choice(["default", "wide"]), default="default", show_default=True,
              help="wide: ~300 cities × 200 categories × 12 weeks (the wide benchmark shape).")
@handle_errors
def generate_events_cmd(rows: int, users: int, seed: int, out: str, partitions: int, threads: int | None,
                        shape: str) -> None:
    """Write synthetic marketplace events (deterministic given --seed)."""
    from .generate import generate_events

    path = generate_events(out, rows=rows, users=users, seed=seed, partitions=partitions, threads=threads,
                           shape=shape)
    click.echo(f"wrote {rows:,} events for up to {users:,} users to {path}")


@main.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Project folder holding configs/demo.yaml (created from the packaged copy if absent).")
@click.option("--rows", type=click.IntRange(1), default=300_000, show_default=True)
@click.option("--users", type=click.IntRange(1), default=30_000, show_default=True)
@click.option("--run-id", default="demo", show_default=True)
@handle_errors
def demo(workdir: str, rows: int, users: int, run_id: str) -> None:
    """Generate sample events, run configs/demo.yaml, print where the report is."""
    from importlib import resources

    from .config import load_config
    from .flows.run import run_report
    from .generate import generate_events

    root = Path(workdir)
    cfg_path = root / "configs" / DEMO_CONFIG
    if not cfg_path.exists():
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(resources.files("pipeline").joinpath("resources", DEMO_CONFIG).read_text())
    schema_path = cfg_path.parent / "report.schema.json"  # the config's $schema header names it
    if not schema_path.exists():
        from .config import json_schema

        schema_path.write_text(json.dumps(json_schema(), indent=2) + "\n")
    cfg = load_config(cfg_path)
    src = cfg.resolve(cfg.source.path)
    if not src.exists():
        click.echo(f"generating {rows:,} sample events → {src}")
        generate_events(src, rows=rows, users=users, seed=7)
    rel = run_report(cfg, run_id, verbose=sys.stderr.isatty())
    _print_release(rel, False)
    if (rel.path / "summary.html").exists():
        click.echo(f"summary: {rel.path / 'summary.html'}")
    click.echo("")
    click.echo(rel.explain())


@main.command()
@click.argument("release_dir", type=click.Path(file_okay=False))
@handle_errors
def explain(release_dir: str) -> None:
    """Print a readable account of a release: what ran, what was suppressed and why, budget."""
    from .releases.explain import print_explain
    from .releases.store import open_release

    rel = open_release(release_dir)
    print_explain(rel.manifest, rel.path)


@main.command()
@click.argument("release_dir", type=click.Path(file_okay=False))
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="Config to check against (default: the one recorded in the manifest).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (also on failure).")
@handle_errors
def check(release_dir: str, config: str | None, as_json: bool) -> None:
    """Run the release gate on an existing release and explain the verdict (exit 3 if it fails)."""
    from .errors import PrivacyRefusal
    from .flows.check import check_verdicts

    try:
        verdicts = check_verdicts(release_dir, config)
    except PrivacyRefusal as exc:
        failed = getattr(exc, "verdicts", None)
        if failed is not None and as_json:  # the same failure line, with every check's verdict as data
            _fail(exc.kind, exc.message, exc.exit_code, {"release": release_dir, "gate": {
                "passed": False, "checks": failed.by_name(), "verdicts": failed.checks}})
        details = getattr(exc, "details", None)
        if details and not as_json:
            click.echo(details)  # the per-check account on stdout; the one-line reason on stderr
        raise
    if as_json:
        from .releases.store import open_release

        summary = release_summary(open_release(release_dir))
        summary.update(status="passed", release=release_dir,
                       gate={"passed": True, "checks": verdicts.by_name(), "verdicts": verdicts.checks})
        click.echo(json.dumps(summary))
        return
    click.echo(verdicts.text)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--min-units", "min_units", multiple=True, type=click.IntRange(2), help="Candidate k (repeatable).")
@click.option("--epsilon", "epsilons", multiple=True, type=click.FloatRange(min=0, min_open=True),
              help="Candidate epsilon (repeatable, DP mode).")
@click.option("--selection-share", "shares", multiple=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Candidate privacy.selection_share (repeatable, DP mode with private partition selection).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plan(
    config: str, min_units: tuple[int, ...], epsilons: tuple[float, ...], shares: tuple[float, ...], as_json: bool
) -> None:
    """What-if: cells published and expected error for candidate settings. INTERNAL ONLY; spends no budget."""
    from .config import load_config
    from .flows.whatif import format_plan, plan_report

    cfg = load_config(config)
    result = plan_report(cfg, min_units=list(min_units) or None, epsilons=list(epsilons) or None,
                         selection_shares=list(shares) or None)
    if as_json:
        click.echo(json.dumps({"status": "planned", "exit_code": 0, **result}, indent=2, default=str))
        return
    click.echo(format_plan(result))


@main.command("run-all")
@click.argument("project", type=click.Path(), default=".")
@click.option("--select", "names", multiple=True, help="Run only this report (repeatable).")
@click.option("--run-id", help="Run id for reports without a window.")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), help="Date windows are computed from.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON line per stage of every report on stderr (for log collectors).")
@handle_errors
def run_all_cmd(project: str, names: tuple[str, ...], run_id: str | None, as_of: Any, as_json: bool,
                log_format: str) -> None:
    """Run every report of PROJECT (anonymize.yaml, or the folder holding it) in order; exit with the worst code."""
    from dataclasses import asdict

    from .project import load_project, run_all, worst

    proj = load_project(project)
    outcomes = run_all(proj, list(names), run_id=run_id, as_of=as_of.date() if as_of else None,
                       log_format=log_format)
    code = worst(outcomes)
    if as_json:
        click.echo(json.dumps({"status": "ok" if code == 0 else "failed", "exit_code": code,
                               "reports": [asdict(o) for o in outcomes]}))
    else:
        for o in outcomes:
            if o.exit_code == 0:
                click.echo(f"{o.status:<10} {o.report}: {o.cells_published} cells → {o.release}")
            else:
                click.echo(f"{'FAILED':<10} {o.report}: {o.kind}: {o.message}")
        ok = sum(o.exit_code == 0 for o in outcomes)
        click.echo(f"{ok} of {len(outcomes)} report(s) published or unchanged; exit {code}")
    sys.exit(code)


@main.command()
@click.argument("output_dir", type=click.Path(file_okay=False), default="reports")
@click.option("--json", "as_json", is_flag=True, help="One JSON list on stdout.")
@handle_errors
def releases(output_dir: str, as_json: bool) -> None:
    """List every release under OUTPUT_DIR: report, run id, mode, window, cells published, gate, ε, sha256."""
    from .errors import ReleaseError
    from .releases.store import catalogue

    if not Path(output_dir).is_dir():
        raise ReleaseError(f"{output_dir} is not a folder of releases (give the output.dir of a config)")
    rows = catalogue(output_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"{output_dir}: no releases")
        return
    for r in rows:
        if "error" in r:
            click.echo(f"{r['release']}: {r['error']}")
            continue
        eps = f" ε {r['epsilon_spent']:.4g}" if r.get("epsilon_spent") is not None else ""
        state = "" if r["intact"] else "  MODIFIED (sha256 differs from the manifest)"
        gate = "passed" if r["gate_passed"] else "FAILED"
        window = f" window {r['window']['start']}..{r['window']['end']}" if r.get("window") else ""
        click.echo(f"{r['report']}/{r['run_id']}  [{r['mode']}]{window} {r['cells_published']} cells  gate {gate}{eps}  "
                   f"sha256 {str(r['sha256'])[:12]}  {r['created_utc']}{state}")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def schema(out: str | None) -> None:
    """Print the JSON Schema of report configs (for editor validation)."""
    from .config import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out:
        Path(out).write_text(text)
    else:
        click.echo(text, nl=False)


@main.group()
def budget() -> None:
    """Privacy-budget ledger: spend per source, verification."""


@budget.command("show")
@click.option("--ledger", type=click.Path(dir_okay=False), help="Ledger file (default: from --config).")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Take the ledger path and limits from a config.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def budget_show(ledger: str | None, config: str | None, as_json: bool) -> None:
    """Print epsilon/delta spent and left per source."""
    from .state.ledger import Ledger, format_spend

    path, limits = _ledger_args(ledger, config)
    rows = Ledger(path).spend(limits=limits)
    click.echo(json.dumps(rows, indent=2, default=str) if as_json else format_spend(rows, path))


@budget.command("verify")
@click.option("--ledger", type=click.Path(dir_okay=False))
@click.option("--config", "config", type=click.Path(dir_okay=False))
@handle_errors
def budget_verify(ledger: str | None, config: str | None) -> None:
    """Check the ledger's hash chain; exit 3 if an entry was edited, deleted or reordered."""
    from .state.ledger import Ledger

    path, _ = _ledger_args(ledger, config)
    n = Ledger(path).verify()
    click.echo(f"ok: {path}: {n} entries, hash chain intact")


def _ledger_args(ledger: str | None, config: str | None) -> tuple[Path, dict | None]:
    from .errors import ConfigError

    limits = None
    if config:
        from .config import load_config

        cfg = load_config(config)
        if cfg.budget is None:
            raise ConfigError(f"{config}: has no budget: block")
        if ledger is None:
            ledger = str(cfg.ledger_path)
        limits = {"epsilon_limit": cfg.budget.epsilon_limit, "delta_limit": cfg.budget.delta_limit}
    if ledger is None:
        ledger = os.environ.get("ANONYMIZE_LEDGER")
    if ledger is None:
        raise ConfigError("give --ledger PATH or --config CONFIG (or set ANONYMIZE_LEDGER)")
    from .config import url_problem

    problem = url_problem(ledger)
    if problem:
        raise ConfigError(f"--ledger: {problem}")
    return Path(ledger), limits


if __name__ == "__main__":  # pragma: no cover
    main()
