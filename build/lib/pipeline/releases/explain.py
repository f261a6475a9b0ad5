"""Readable accounts of a release, built from its manifest only.

Guarantees: everything shown comes from ``manifest.json`` (counts, settings, noise scales, gate
verdicts, budget figures); no cell value and no dimension value is ever read or shown. The same
sections render as plain text (:func:`explain_text`, also what ``anonymize explain`` prints when
piped), rich tables on a terminal (:func:`print_explain`) and HTML (:func:`explain_html`, used by
notebooks and ``summary.html``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REASONS = {
    "k": "fewer than {k} distinct units",
    "k_metric": "a sum or mean of fewer than {k} people with a value",
    "dominance": "dominance rule (few contributors hold most of a sum)",
    "secondary": "complementary (protects other suppressed cells)",
    "difference": "difference check (against earlier releases)",
    "selection": "DP partition selection (noisy unit count below threshold)",
}
GATE_CHECKS = {
    "columns": "only declared columns",
    "patterns": "no identifier-like values (e-mail, phone, IP, card…)",
    "identifier_values": "no value equal to a source identifier",
    "quasi_identifier": "no dimension behaves like a quasi-identifier",
    "min_units": "every row has ≥ k units (recomputed)",
    "noise": "noisy values lie within their noise of the true cells",
}


@dataclass
class Section:
    """One block of an explanation: key/value pairs (``headers`` None) or a table."""

    title: str
    rows: list[list[str]]
    headers: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def num(v: Any) -> str:
    """A number for people: thousands separators for integers, 4 significant digits otherwise."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.4g}" if abs(v) >= 1e-3 else f"{v:.3g}"
    return str(v)


def readable(name: str) -> str:
    """A column name for people: ``order_value_total`` → ``Order value total``."""
    text = " ".join(w for w in str(name).replace("_", " ").split())
    return text[:1].upper() + text[1:] if text else str(name)


def noise_dominated_text(priv: dict[str, Any]) -> str:
    """The warning for metrics whose typical noise exceeds their typical value (DP manifests)."""
    ratios = priv.get("noise_to_value") or {}
    parts = []
    for name in priv.get("noise_dominated") or []:
        r = (ratios.get(name) or {}).get("median_ci95_over_value")
        parts.append(f"{name} (typical ± {num(r)}× the value)" if r is not None else f"{name} (most published values are 0: the noise swamps them)")
    return ("; ".join(parts) + ": these numbers are mostly noise. Raise ε or the metric's budget_weight, narrow "
            "its bounds, or publish coarser cells")


def _share(part: int | float | None, whole: int | float | None) -> str:
    if not whole:
        return "—"
    return f"{100.0 * float(part or 0) / float(whole):.1f}%"


def sections(manifest: dict[str, Any], path: Path | None = None, *, public: bool = False) -> list[Section]:
    """The explanation of one release as sections (see the module docstring for what is shown).

    ``public`` (the forwarded ``summary.html``): only what describes the published table and its
    protection. Operator facts stay out: paths, the source id, row counts, software, the budget
    and ledger, timings."""
    m = manifest
    cells = m.get("cells", {}) or {}
    rows = m.get("rows", {}) or {}
    internal = None
    if not public:  # the operator's exact counts, when this machine keeps them (never in the release)
        from ..state.internal import read_internal

        internal = read_internal(m.get("internal_counts"))
        if internal:
            cells = {**(internal.get("cells") or {}), "internal": True}
            rows = internal.get("rows") or rows
    priv = m.get("privacy", {}) or {}
    soft = m.get("software", {}) or {}
    dp = m.get("mode") == "dp"
    computed = cells.get("cells_computed")
    overview: list[list[str]] = [["report", f"{m.get('report')} / run {m.get('run_id')}"]]
    desc = (m.get("config") or {}).get("description")
    if desc:
        overview.append(["description", str(desc)])
    overview += [["mode", str(m.get("mode"))], ["created", str(m.get("created_utc", "?"))]]
    if not public:
        overview.append(["software", f"{soft.get('name')} {soft.get('version')}"
                         + (f" · duckdb {soft['duckdb']}" if soft.get("duckdb") else "")
                         + (f" · opendp {soft['opendp']}" if dp and soft.get("opendp") else "")])
    if path is not None and not public:
        overview.append(["path", str(path)])
    src = m.get("source", {}) or {}
    if not public:
        overview.append(["source", f"{src.get('format')} · {len(src.get('files', []) or [])} file(s) · id {src.get('source_id')}"])
    if public:
        pass  # row counts are operator facts
    elif "rows_selected" in rows:
        overview.append(["rows", f"selected {num(rows.get('rows_selected'))} · aggregated {num(rows.get('rows_aggregated'))} · "
                                 f"dropped (no privacy unit) {num(rows.get('rows_dropped_null_unit'))}"])
    elif rows.get("withheld"):  # releases state no count of the withheld part
        overview.append(["rows", str(rows["withheld"])])
    invalid = {k: v for k, v in (rows.get("invalid_values_dropped") or {}).items() if v}
    if invalid and not public:
        overview.append(["invalid values", ", ".join(f"{k}: {num(v)}" for k, v in invalid.items()) + " (NaN/±inf, dropped)"])
    if computed is not None:
        overview.append(["cells", f"computed {num(computed)} · published {num(cells.get('cells_published'))} "
                                  f"({_share(cells.get('cells_published'), computed)}) · suppressed {num(cells.get('cells_suppressed'))}"])
    else:
        overview.append(["cells", f"published {num(cells.get('cells_published'))}"
                                  + (f" (of {num(cells['public_partitions'])} public partitions)" if cells.get("public_partitions") else "")
                                  + ("; computed and withheld counts are not stated by the release" if cells.get("withheld") else "")])
    if "remainder_rows_published" in cells:
        overview.append(["remainder rows", f"published {num(cells['remainder_rows_published'])} · withheld "
                                           f"{num(cells.get('remainder_rows_withheld', 0))} (one per level at most; "
                                           "is_remainder = true, dimensions null)"])
    if dp:
        overview.append(["privacy", f"differential privacy: ε={num(priv.get('epsilon'))} δ={num(priv.get('delta'))} "
                                    f"noise={priv.get('noise')} · a person counts in ≤ {priv.get('max_groups_per_unit')} cells "
                                    f"with ≤ {priv.get('max_rows_per_group')} rows each"])
        if priv.get("composition"):
            overview.append(["composition", str(priv.get("composition"))])
        if priv.get("noise_dominated"):
            overview.append(["noise-dominated", noise_dominated_text(priv)])
    else:
        overview.append(["privacy", f"threshold mode: every published row has ≥ {priv.get('min_units')} distinct units"])
    notes_release = []
    if internal:
        notes_release.append(f"rows and cell counts are the operator's exact counts ({m.get('internal_counts')}): "
                             "they are not in the release and must not be shared with it")
    out = [Section("release", overview, notes=notes_release)]

    reasons = {k[len("suppressed_"):]: v for k, v in cells.items() if k.startswith("suppressed_")}
    if computed is not None and (reasons or cells.get("cells_suppressed")):
        k = priv.get("min_units")
        table = [[REASONS.get(r, r).format(k=k), num(v), _share(v, computed)] for r, v in sorted(reasons.items())]
        table.append(["total suppressed", num(cells.get("cells_suppressed")), _share(cells.get("cells_suppressed"), computed)])
        notes = ["counts only: which cells were withheld is never recorded"]
        if not dp and k:
            notes.append("a cell may meet several rules; it is counted under the first that applied")
        out.append(Section("suppressed cells by reason", table, ["reason", "cells", "share of computed"], notes))

    if dp:
        out.append(_mechanisms_section(priv))
        budget = m.get("budget") or {}
        if budget and not public:
            line = (f"this release ε {num(priv.get('epsilon_spent'))} · δ {num(priv.get('delta_spent'))}; "
                    f"source total ε {num(budget.get('epsilon_spent'))} of {num(budget.get('epsilon_limit'))} "
                    f"(left {num(budget.get('epsilon_left'))}) · δ {num(budget.get('delta_spent'))} of "
                    f"{num(budget.get('delta_limit'))}")
            extra = [["source", str(budget.get("source_id"))]]
            if budget.get("entry_seq") is not None:
                extra.append(["ledger entry", f"#{budget.get('entry_seq')} in {budget.get('ledger')}"])
            out.append(Section("budget", [["spent", line], *extra]))

    gate = m.get("gate") or {}
    if gate:
        table = []
        for name, v in (gate.get("checks") or {}).items():
            v = v if isinstance(v, dict) else {"ok": bool(v)}
            if v.get("skipped"):
                verdict, detail = "skipped", str(v.get("skipped"))
            else:
                verdict, detail = ("pass" if v.get("ok") else "FAIL"), _detail(v)
            table.append([name, verdict, GATE_CHECKS.get(name, ""), detail])
        verdict = "passed" if gate.get("passed") else "FAILED"
        out.append(Section(f"release gate: {verdict}", table, ["check", "result", "what it checks", "found"],
                           ["the gate re-reads the written report and refuses the release on any failure"]))
    t = dict(sorted((m.get("timings_s") or {}).items(), key=lambda kv: _stage_rank(kv[0])))
    if t and not public:
        out.append(Section("timings", [["stages", " · ".join(f"{k} {v:.2f}s" for k, v in t.items())],
                                       ["total", f"{sum(t.values()):.2f}s"]]))
    return out


STAGE_ORDER = ["load", "ledger", "bounding", "aggregate", "suppress", "noise", "collect", "write", "gate", "stage"]


def _stage_rank(name: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def _detail(v: dict[str, Any]) -> str:
    parts = []
    for key, x in v.items():
        if key in ("ok", "skipped"):
            continue
        if isinstance(x, list):
            items = ["/".join(map(str, i)) if isinstance(i, (list, tuple)) else str(i) for i in x]
            parts.append(f"{key}: {', '.join(items) if items else 'none'}")
        elif isinstance(x, dict):
            parts.append(f"{key}: {len(x)}")
        else:
            parts.append(f"{key}: {num(x)}")
    return "; ".join(parts)


def _mechanisms_section(priv: dict[str, Any]) -> Section:
    levels = priv.get("levels") or {"": priv}
    multi = len(levels) > 1
    table: list[list[str]] = []
    selections: list[tuple[str, dict[str, Any]]] = []
    for lname, lp in levels.items():
        prefix = [lname] if multi else []
        sel = lp.get("selection")
        if sel:
            table.append(prefix + ["partition selection", *_mech_cells(sel)])
            selections.append((lname, sel))
        for metric, info in (lp.get("metrics") or {}).items():
            for part, mech in (info.get("mechanisms") or {}).items():
                label = metric if len(info.get("mechanisms") or {}) == 1 else f"{metric} ({part})"
                table.append(prefix + [label, *_mech_cells(mech)])
    headers = (["level"] if multi else []) + ["query", "noise", "sensitivity", "scale", "95% ±", "loss"]
    notes = []
    for lname, sel in selections:
        notes.append(f"partition selection{' (' + lname + ')' if multi else ''}: a cell is published only when its "
                     f"noisy unit count is ≥ {sel.get('threshold')} (and ≥ min_units); δ {num(sel.get('delta'))}")
    notes.append("95% ± is the half-width of the interval that holds the noise 95% of the time (the *_ci95 columns)")
    if not priv.get("public_partitions"):
        notes.append("distinct-unit counts are the noisy counts of partition selection")
    if priv.get("level_split"):
        notes.append(str(priv["level_split"]))
    return Section("noise mechanisms (OpenDP)", table, headers, notes)


def _mech_cells(mech: dict[str, Any]) -> list[str]:
    noise = str(mech.get("noise"))
    kind = noise.capitalize() + (" (int)" if mech.get("integer") else "")
    loss = f"ε {num(mech.get('epsilon'))}" if noise == "laplace" else f"ρ {num(mech.get('rho'))}"
    return [kind, num(mech.get("sensitivity")), num(mech.get("scale")), num(mech.get("ci95_half_width")), loss]


# ----- rendering ---------------------------------------------------------------------------------


def _text_table(headers: list[str] | None, rows: list[list[str]]) -> list[str]:
    if headers is None:
        width = max((len(r[0]) for r in rows), default=0)
        return [f"  {r[0]:<{width}}  {r[1]}" for r in rows]
    n = len(headers)
    widths = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(n)]
    out = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
           "  " + "  ".join("─" * w for w in widths)]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def explain_text(manifest: dict[str, Any], path: Path | None = None) -> str:
    """Plain text: one titled block per section (what ``anonymize explain`` prints when piped)."""
    out: list[str] = []
    for s in sections(manifest, path):
        if out:
            out.append("")
        out.append(s.title)
        out += _text_table(s.headers, s.rows)
        out += [f"  note: {n}" for n in s.notes]
    return "\n".join(out)


STYLE = (
    "<style>.anx{font-family:system-ui,-apple-system,Segoe UI,sans-serif;font-size:13px;color:#1f2933}"
    ".anx h4{margin:14px 0 4px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#52606d}"
    ".anx table{border-collapse:collapse;margin:0 0 4px}"
    ".anx th,.anx td{padding:3px 10px 3px 0;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}"
    ".anx th{color:#52606d;font-weight:600}.anx .note{color:#7b8794;font-size:12px;margin:2px 0}"
    ".anx .fail{color:#c62828;font-weight:700}.anx .pass{color:#2e7d32}</style>"
)


def explain_html(manifest: dict[str, Any], path: Path | None = None, *, public: bool = False) -> str:
    """HTML tables of the same sections (self-contained: inline style, no scripts, no external assets);
    ``public`` as for :func:`sections`."""
    parts = [STYLE, "<div class='anx'>"]
    for s in sections(manifest, path, public=public):
        parts.append(f"<h4>{html.escape(s.title)}</h4><table>")
        if s.headers is None:
            for k, v in s.rows:
                parts.append(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>")
        else:
            parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.headers) + "</tr>")
            for r in s.rows:
                cells = []
                for c in r:
                    cls = " class='fail'" if c == "FAIL" else (" class='pass'" if c == "pass" else "")
                    cells.append(f"<td{cls}>{html.escape(c)}</td>")
                parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in s.notes]
    parts.append("</div>")
    return "".join(parts)


NUMERIC_COLUMNS = ("cells", "sensitivity", "scale", "95% ±", "share of computed")


def render_rich(manifest: dict[str, Any], path: Path | None = None, console: Any = None) -> None:
    """Rich tables (one per section) on ``console`` (default: a terminal console on stdout)."""
    from rich import box
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    console.rule(Text(f"release {manifest.get('report')} / {manifest.get('run_id')}", style="bold"))
    for s in sections(manifest, path):
        if s.headers is None:
            t = Table(title=s.title, title_justify="left", title_style="bold cyan", show_header=False,
                      box=None, padding=(0, 2))
            t.add_column(style="bold")
            t.add_column(overflow="fold")
        else:
            t = Table(title=s.title, title_justify="left", title_style="bold cyan", box=box.SIMPLE_HEAD,
                      padding=(0, 1))
            for h in s.headers:
                numeric = h in NUMERIC_COLUMNS
                t.add_column(h, justify="right" if numeric else "left",
                             no_wrap=numeric or h in ("noise", "result", "loss", "check", "level"))
        for r in s.rows:
            t.add_row(*[Text(c, style="bold red" if c == "FAIL" else "green" if c == "pass" else "") for c in r])
        console.print(t)
        for n in s.notes:
            console.print(Padding(Text(f"note: {n}", style="dim"), (0, 0, 0, 2)))
        console.print()


def print_explain(manifest: dict[str, Any], path: Path | None = None) -> None:
    """Rich tables when stdout is a terminal, plain text (no colour codes) when piped."""
    import sys

    if sys.stdout.isatty():
        render_rich(manifest, path)
    else:
        print(explain_text(manifest, path))
