"""Readable accounts of a release, built from its manifest only (counts, never cell values)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def _lines(manifest: dict[str, Any], path: Path | None = None) -> list[tuple[str, str]]:
    m = manifest
    cells = m.get("cells", {})
    rows = m.get("rows", {})
    priv = m.get("privacy", {})
    out: list[tuple[str, str]] = [
        ("report", f"{m.get('report')} / run {m.get('run_id')}"),
        ("mode", str(m.get("mode"))),
        ("created", str(m.get("created_utc", "?"))),
        ("software", f"{m.get('software', {}).get('name')} {m.get('software', {}).get('version')}"),
    ]
    if path is not None:
        out.append(("path", str(path)))
    src = m.get("source", {})
    out.append(("source", f"{src.get('format')} · {len(src.get('files', []))} file(s) · id {src.get('source_id')}"))
    out.append(("rows", f"selected {rows.get('rows_selected')} · aggregated {rows.get('rows_aggregated')} · "
                        f"dropped (no privacy unit) {rows.get('rows_dropped_null_unit')}"))
    invalid = {k: v for k, v in (rows.get("invalid_values_dropped") or {}).items() if v}
    if invalid:
        out.append(("invalid values", ", ".join(f"{k}: {v}" for k, v in invalid.items()) + " (NaN/±inf, dropped)"))
    out.append(("cells", f"computed {cells.get('cells_computed')} · published {cells.get('cells_published')} · "
                         f"suppressed {cells.get('cells_suppressed')}"))
    reasons = {k[len('suppressed_'):]: v for k, v in cells.items() if k.startswith("suppressed_")}
    if reasons:
        label = {"k": f"fewer than {priv.get('min_units')} units", "dominance": "dominance rule",
                 "secondary": "complementary (protects other cells)", "difference": "difference check",
                 "selection": "DP partition selection"}
        out.append(("why suppressed", "; ".join(f"{label.get(k, k)}: {v}" for k, v in sorted(reasons.items()))))
    if m.get("mode") == "dp":
        out.append(("privacy", f"ε={priv.get('epsilon')} δ={priv.get('delta')} noise={priv.get('noise')} "
                               f"L0={priv.get('max_groups_per_unit')} Linf={priv.get('max_rows_per_group')}"))
        for name, info in (priv.get("metrics") or {}).items():
            out.append((f"  {name}", f"scale {info.get('scale'):.4g} · 95% ±{info.get('ci95_half_width', float('nan')):.4g}"
                        if isinstance(info.get("scale"), (int, float)) else str(info)))
        budget = m.get("budget") or {}
        if budget:
            out.append(("budget", f"spent ε {budget.get('epsilon_spent')} of {budget.get('epsilon_limit')} · "
                                  f"left ε {budget.get('epsilon_left')} (source {budget.get('source_id')})"))
    else:
        out.append(("privacy", f"threshold mode: every published row has ≥ {priv.get('min_units')} distinct units"))
    gate = m.get("gate") or {}
    if gate:
        ran = ", ".join(k for k, v in gate.get("checks", {}).items() if not (isinstance(v, dict) and v.get("skipped")))
        out.append(("gate", f"{'passed' if gate.get('passed') else 'FAILED'} ({ran})"))
    t = m.get("timings_s") or {}
    if t:
        out.append(("timings", " · ".join(f"{k} {v:.2f}s" for k, v in t.items())))
    return out


def explain_text(manifest: dict[str, Any], path: Path | None = None) -> str:
    rows = _lines(manifest, path)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def explain_html(manifest: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in _lines(manifest)
    )
    return f"<table>{body}</table>"


def print_explain(manifest: dict[str, Any], path: Path | None = None) -> None:
    """Rich table on a terminal, plain text when piped."""
    import sys

    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"release {manifest.get('report')}/{manifest.get('run_id')}", show_header=False)
        t.add_column(style="bold")
        t.add_column()
        for k, v in _lines(manifest, path):
            t.add_row(k, v)
        Console().print(t)
    else:
        print(explain_text(manifest, path))
