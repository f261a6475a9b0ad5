"""``summary.html``: one self-contained page per release for account managers.

Guarantees:
- Built from the release's published table and its manifest only: nothing here reads the source,
  so it can show nothing that the report itself does not publish (suppressed cells appear only as
  counts per reason).
- Self-contained: inline CSS and inline SVG charts; no scripts, fonts, images or other external
  assets, so it renders the same offline, in a mail attachment or behind a strict CSP.
- Every text from data or config is HTML-escaped.
- It is the page that gets forwarded: it shows the published table and how it is protected, and no
  operator facts (no paths, source id, row counts, budget left, ledger or timings: those stay in
  ``manifest.json`` and ``anonymize explain``). Every sentence on it holds for the release it
  describes (threshold, DP with private selection, DP with public partitions).
"""

from __future__ import annotations

import html
import math
from typing import Any

from .explain import REASONS, explain_html, noise_dominated_text, num, readable

PALETTE = {
    "published": "#2f855a",
    "k": "#dd6b20",
    "dominance": "#d69e2e",
    "secondary": "#805ad5",
    "difference": "#d53f8c",
    "selection": "#dd6b20",
}
BAR = "#3b6ea5"
ERR = "#c53030"


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def compact(v: float) -> str:
    """12.3k / 4.5M style numbers for axes and bar labels."""
    a = abs(v)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    if a == 0 or a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * exp >= v:
            return step * exp
    return 10 * exp


def share_bar_svg(cells: dict[str, Any], width: int = 900) -> str:
    """Stacked bar: published share and each suppression reason's share of the computed cells."""
    computed = int(cells.get("cells_computed") or 0)
    published = int(cells.get("cells_published") or 0)
    parts = [("published", published)]
    parts += [(k[len("suppressed_"):], int(v or 0)) for k, v in sorted(cells.items())
              if k.startswith("suppressed_") and v]
    other = computed - sum(v for _, v in parts)
    if other > 0:
        parts.append(("other", other))
    h = 26
    x = 0.0
    rects = []
    for name, v in parts:
        if computed <= 0 or v <= 0:
            continue
        w = width * v / computed
        rects.append(f"<rect x='{x:.2f}' y='0' width='{max(w, 0.5):.2f}' height='{h}' fill='{PALETTE.get(name, '#718096')}'>"
                     f"<title>{_esc(name)}: {v:,} cells</title></rect>")
        x += w
    if not rects:
        rects.append(f"<rect x='0' y='0' width='{width}' height='{h}' fill='#e2e8f0'/>")
    return (f"<svg class='share' viewBox='0 0 {width} {h}' width='100%' height='{h}' preserveAspectRatio='none' role='img' "
            f"aria-label='published versus withheld cells' xmlns='http://www.w3.org/2000/svg'>{''.join(rects)}</svg>")


def bar_chart_svg(labels: list[str], values: list[float], errors: list[float | None] | None = None,
                  *, width: int = 900, title: str = "") -> str:
    """Horizontal bars (one per label) with optional ± error whiskers; pure inline SVG."""
    n = len(values)
    if n == 0:
        return ""
    errors = errors or [None] * n
    label_w, value_w, row_h, top, bottom = 290, 130, 24, 8, 26
    plot_w = width - label_w - value_w
    hi = max([(v or 0) + (e or 0) for v, e in zip(values, errors, strict=True)] + [0.0])
    # non-negative values (counts, sums of non-negative bounds) never go below zero: nor do their whiskers
    floor = 0.0 if all((v or 0) >= 0 for v in values) else -math.inf
    lo = min([max((v or 0) - (e or 0), floor) for v, e in zip(values, errors, strict=True)] + [0.0])
    vmax = _nice_max(hi)
    vmin = -_nice_max(-lo) if lo < 0 else 0.0
    span = vmax - vmin or 1.0

    def sx(v: float) -> float:
        return label_w + plot_w * (v - vmin) / span

    height = top + n * row_h + bottom
    out = [f"<svg viewBox='0 0 {width} {height}' width='100%' role='img' aria-label='{_esc(title)}' "
           f"xmlns='http://www.w3.org/2000/svg' font-family='system-ui,sans-serif' font-size='12'>"]
    for i in range(5):  # grid and axis labels
        gv = vmin + span * i / 4
        gx = sx(gv)
        out.append(f"<line x1='{gx:.1f}' y1='{top}' x2='{gx:.1f}' y2='{top + n * row_h}' stroke='#e2e8f0'/>")
        out.append(f"<text x='{gx:.1f}' y='{height - 8}' text-anchor='middle' fill='#718096'>{_esc(compact(gv))}</text>")
    zero = sx(0.0)
    for i, (lab, v, e) in enumerate(zip(labels, values, errors, strict=True)):
        y = top + i * row_h
        v = float(v or 0.0)
        x0, x1 = sorted((zero, sx(v)))
        short = lab if len(lab) <= 42 else lab[:41] + "…"
        out.append(f"<text x='{label_w - 8}' y='{y + 16}' text-anchor='end' fill='#1a202c'>{_esc(short)}<title>{_esc(lab)}</title></text>")
        out.append(f"<rect x='{x0:.1f}' y='{y + 4}' width='{max(x1 - x0, 0.8):.1f}' height='{row_h - 8}' rx='2' fill='{BAR}'/>")
        text = f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:,.3g}"
        if e:
            a, b = sx(max(v - e, vmin, floor)), sx(min(v + e, vmax))
            cy = y + row_h / 2
            out.append(f"<g stroke='{ERR}' stroke-width='1.6'><line x1='{a:.1f}' y1='{cy:.1f}' x2='{b:.1f}' y2='{cy:.1f}'/>"
                       f"<line x1='{a:.1f}' y1='{cy - 5:.1f}' x2='{a:.1f}' y2='{cy + 5:.1f}'/>"
                       f"<line x1='{b:.1f}' y1='{cy - 5:.1f}' x2='{b:.1f}' y2='{cy + 5:.1f}'/></g>")
            text += f" ± {compact(e)}"
        out.append(f"<text x='{width - value_w + 8}' y='{y + 16}' fill='#2d3748'>{_esc(text)}</text>")
    out.append(f"<line x1='{zero:.1f}' y1='{top}' x2='{zero:.1f}' y2='{top + n * row_h}' stroke='#4a5568'/>")
    out.append("</svg>")
    return "".join(out)


SERIES = ("#3b6ea5", "#dd6b20", "#2f855a", "#805ad5", "#d53f8c", "#718096")


def line_chart_svg(xs: list[str], series: list[tuple[str, list[float | None]]], *, width: int = 900,
                   title: str = "") -> str:
    """One line per series over the ordered x labels (a gap where a value is missing); inline SVG."""
    if not xs or not series:
        return ""
    legend_rows = -(-len(series) // 3)
    left, right, top, plot_h = 70, 40, 12, 230
    height = top + plot_h + 30 + 18 * legend_rows
    plot_w = width - left - right
    vals = [v for _, ys in series for v in ys if v is not None]
    if not vals:
        return ""
    hi = _nice_max(max(max(vals), 0.0))
    lo = -_nice_max(-min(vals)) if min(vals) < 0 else 0.0
    span = hi - lo or 1.0

    def sx(i: int) -> float:
        return left + (plot_w * i / (len(xs) - 1) if len(xs) > 1 else plot_w / 2)

    def sy(v: float) -> float:
        return top + plot_h * (hi - v) / span

    out = [f"<svg viewBox='0 0 {width} {height}' width='100%' role='img' aria-label='{_esc(title)}' "
           f"xmlns='http://www.w3.org/2000/svg' font-family='system-ui,sans-serif' font-size='12'>"]
    for i in range(5):
        gv = lo + span * i / 4
        out.append(f"<line x1='{left}' y1='{sy(gv):.1f}' x2='{width - right}' y2='{sy(gv):.1f}' stroke='#e2e8f0'/>")
        out.append(f"<text x='{left - 8}' y='{sy(gv) + 4:.1f}' text-anchor='end' fill='#718096'>{_esc(compact(gv))}</text>")
    step = max(1, math.ceil(len(xs) / 12))
    for i in range(0, len(xs), step):
        out.append(f"<text x='{sx(i):.1f}' y='{top + plot_h + 18}' text-anchor='middle' fill='#718096'>{_esc(xs[i])}</text>")
    for k, (name, ys) in enumerate(series):
        color = SERIES[k % len(SERIES)]
        run: list[str] = []
        runs: list[list[str]] = []
        for i, v in enumerate(ys):
            if v is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{sx(i):.1f},{sy(float(v)):.1f}")
        if run:
            runs.append(run)
        for r in runs:
            if len(r) == 1:
                x, y = r[0].split(",")
                out.append(f"<circle cx='{x}' cy='{y}' r='2.5' fill='{color}'><title>{_esc(name)}</title></circle>")
            else:
                out.append(f"<polyline points='{' '.join(r)}' fill='none' stroke='{color}' stroke-width='2'>"
                           f"<title>{_esc(name)}</title></polyline>")
        lx = left + (k % 3) * 280
        ly = top + plot_h + 44 + (k // 3) * 18
        out.append(f"<rect x='{lx}' y='{ly - 9}' width='10' height='10' fill='{color}'/>"
                   f"<text x='{lx + 14}' y='{ly}' fill='#2d3748'>{_esc(name if len(name) <= 36 else name[:35] + '…')}</text>")
    out.append("</svg>")
    return "".join(out)


def _time_dimensions(manifest: dict[str, Any]) -> list[str]:
    """Output names of the dimensions with a ``grain`` (time buckets), from the recorded config."""
    out = []
    for d in (manifest.get("config") or {}).get("dimensions", []) or []:
        if isinstance(d, dict) and d.get("grain"):
            out.append(str(d.get("as") or d.get("column")))
    return out


def _column(t: Any, name: str) -> list[Any]:
    return t.column(name).to_pylist() if name in t.column_names else []


def _label(row_dims: list[Any], *, margin: bool = False) -> str:
    if margin:  # rolled-up dimensions are null in a margin row: name only the kept ones
        return " · ".join(str(v) for v in row_dims if v is not None) or "all"
    return " · ".join("—" if v is None else str(v) for v in row_dims)


def summary_html(manifest: dict[str, Any], table: Any, *, top: int = 15) -> str:
    """The page: KPIs, published vs withheld share, top cells (± 95% in DP mode), margins, run facts."""
    cells = manifest.get("cells", {}) or {}
    exact = "cells_computed" in cells  # DP releases withhold exact counts (not covered by the guarantee)
    computed = int(cells.get("cells_computed") or 0)
    published = int(cells.get("cells_published") or 0)
    withheld = int(cells.get("cells_suppressed") or max(computed - published, 0))
    share = published / computed if computed else 0.0
    cols = manifest.get("columns", {}) or {}
    dims: list[str] = list(cols.get("dimensions", []))
    metrics: list[str] = list(cols.get("metrics", []))
    priv = manifest.get("privacy", {}) or {}
    dp = manifest.get("mode") == "dp"
    first = metrics[0] if metrics else None

    # rows of the full table (margins are charted separately)
    levels = _column(table, "level")
    remainder = _column(table, "is_remainder")
    if remainder:  # remainder rows aggregate withheld rows (docs/PRIVACY.md): not charted
        levels = [None if r else lv for lv, r in zip(levels, remainder, strict=True)]
    n = table.num_rows
    idx_cells = [i for i in range(n) if not levels or levels[i] == "cell"]
    dim_vals = {d: _column(table, d) for d in dims}
    met_vals = {m: _column(table, m) for m in metrics}
    ci_vals = {m: _column(table, f"{m}_ci95") for m in metrics}

    def chart(idx: list[int], metric: str, title: str, limit: int, *, margin: bool = False) -> str:
        vals = met_vals.get(metric) or []
        cis = ci_vals.get(metric) or []
        order = sorted(idx, key=lambda i: -(float(vals[i]) if vals[i] is not None else -math.inf))[:limit]
        labels = [_label([dim_vals[d][i] for d in dims], margin=margin) for i in order]
        values = [float(vals[i] or 0.0) for i in order]
        errors = [float(cis[i]) if cis and cis[i] is not None else None for i in order] if cis else None
        return bar_chart_svg(labels, values, errors, title=title)

    top_chart = chart(idx_cells, first, f"top cells by {readable(first)}", top) if first and idx_cells else ""

    # a table of the same top cells with every metric
    top_table = ""
    if first and idx_cells:
        vals = met_vals[first]
        order = sorted(idx_cells, key=lambda i: -(float(vals[i]) if vals[i] is not None else -math.inf))[:top]
        head = "".join(f"<th title='{_esc(d)}'>{_esc(readable(d))}</th>" for d in dims) + "".join(
            f"<th class='r' title='{_esc(m)}'>{_esc(readable(m))}</th>" for m in metrics)
        body = []
        for i in order:
            tds = "".join(f"<td>{_esc('—' if dim_vals[d][i] is None else dim_vals[d][i])}</td>" for d in dims)
            for m in metrics:
                v = met_vals[m][i]
                cell = "—" if v is None else (f"{v:,}" if isinstance(v, int) else f"{float(v):,.2f}")
                ci = ci_vals[m][i] if ci_vals[m] else None
                if ci is not None:
                    cell += f" <span class='pm'>± {_esc(compact(float(ci)))}</span>"
                    tds += f"<td class='r'>{cell}</td>"
                else:
                    tds += f"<td class='r'>{_esc(cell)}</td>"
            body.append(f"<tr>{tds}</tr>")
        top_table = f"<table class='cells'><tr>{head}</tr>{''.join(body)}</table>"

    # margins: one small chart per margin level (first metric)
    margin_html = ""
    if levels and first:
        names = [x for x in dict.fromkeys(levels) if x not in ("cell", None)]
        blocks = []
        for lv in names:
            idx = [i for i in range(n) if levels[i] == lv]
            if lv == "total" or len(idx) < 2:
                continue
            blocks.append(f"<h3>{_esc(lv.replace('by_', 'by ').replace('_', ' '))}</h3>{chart(idx, first, lv, 10, margin=True)}")
        totals = [i for i in range(n) if levels[i] == "total"]
        if totals:
            i = totals[0]
            parts = []
            for m in metrics:
                v = met_vals[m][i]
                if v is None:
                    continue
                ci = ci_vals[m][i] if ci_vals[m] else None
                parts.append(f"<div class='kpi small'><b>{_esc(compact(float(v)))}</b>{_esc(readable(m))}"
                             + (f"<span class='pm'> ± {_esc(compact(float(ci)))}</span>" if ci is not None else "")
                             + "</div>")
            blocks.insert(0, "<h3>grand total</h3>" + "".join(parts))
        if blocks:
            margin_html = f"<section><h2>Margins by {_esc(readable(first))}</h2>{''.join(blocks)}</section>"

    # a trend over the first time dimension: the margin over it alone when published, else the
    # largest series of the other dimensions (published cells only; a gap is a withheld cell)
    trend_html = ""
    times = [t for t in _time_dimensions(manifest) if t in dims]
    if first and times and idx_cells:
        tdim = times[0]
        others = [d for d in dims if d != tdim]
        tvals = dim_vals[tdim]
        margin_name = "by_" + tdim
        m_idx = [i for i in range(n) if levels and levels[i] == margin_name]
        vals = met_vals[first]
        if m_idx:
            src_idx, label_of = m_idx, (lambda i: "all")
            note = f"the published margin by {readable(tdim)}"
        else:
            src_idx = idx_cells

            def label_of(i: int) -> str:
                return _label([dim_vals[d][i] for d in others]) if others else "all"

            note = "published cells only; a gap is a withheld cell"
        xs = sorted({tvals[i] for i in src_idx if tvals[i] is not None}, key=str)
        totals: dict[str, float] = {}
        points: dict[str, dict[Any, float]] = {}
        for i in src_idx:
            if tvals[i] is None or vals[i] is None:
                continue
            lab = label_of(i)
            points.setdefault(lab, {})[tvals[i]] = float(vals[i])
            totals[lab] = totals.get(lab, 0.0) + float(vals[i])
        names = sorted(totals, key=lambda k: -totals[k])[:6]
        series = [(lab, [points[lab].get(x) for x in xs]) for lab in names]
        if len(xs) >= 2 and series:
            svg = line_chart_svg([str(x) for x in xs], series, title=f"{readable(first)} by {readable(tdim)}")
            trend_html = (f"<section><h2>{_esc(readable(first))} by {_esc(readable(tdim))}</h2>{svg}"
                          f"<p class='note'>{_esc(note)}"
                          + (f"; the {len(names)} largest series" if len(totals) > len(names) else "")
                          + (" (noisy values; see the error bars above)" if dp else "") + ".</p></section>")

    # legend of the share bar
    legend = [f"<span><i style='background:{PALETTE['published']}'></i>published {published:,} ({share:.1%})</span>"]
    for k, v in sorted(cells.items()):
        if k.startswith("suppressed_") and v:
            reason = k[len("suppressed_"):]
            label = REASONS.get(reason, reason).format(k=priv.get("min_units"))
            pct = v / computed if computed else 0.0
            legend.append(f"<span><i style='background:{PALETTE.get(reason, '#718096')}'></i>{_esc(label)}: "
                          f"{int(v):,} ({pct:.1%})</span>")

    public_cells = bool(priv.get("public_partitions"))
    if dp:
        badge = f"differential privacy · ε = {num(priv.get('epsilon'))} · δ = {num(priv.get('delta'))} · {_esc(priv.get('noise'))} noise"
        promise = ("Every number carries calibrated random noise (OpenDP); the red whiskers show the 95% "
                   "interval of that noise. ")
        if public_cells:
            promise += ("The cells shown were listed in advance and are published whatever their size, so a "
                        "small cell's numbers are mostly noise; no one person's presence changes any number by "
                        "more than the noise hides.")
        else:
            promise += ("A cell appears only when its noisy count of people passes a threshold, so a cell of "
                        "just a few people appears only with a negligible probability (δ).")
    else:
        badge = f"threshold · every row covers ≥ {num(priv.get('min_units'))} people"
        promise = (f"Every published row aggregates at least {num(priv.get('min_units'))} distinct people; smaller "
                   "groups (and cells that would reveal them) are withheld and only counted.")
    if dp and priv.get("noise_dominated"):
        promise += " Caution: " + noise_dominated_text(priv) + "."
    kpis = [(f"{published:,}", "cells published")]
    if exact:
        kpis += [(f"{withheld:,}", "cells withheld"), (f"{share:.1%}", "published share")]
    if dp:
        kpis.append((num(priv.get("epsilon_spent")), "ε spent by this release"))
    kpi_html = "".join(f"<div class='kpi'><b>{_esc(v)}</b>{_esc(k)}</div>" for v, k in kpis)
    if exact:
        share_section = (f"<section><h2>Published vs withheld cells</h2>{share_bar_svg(cells)}"
                         f"<div class='legend'>{''.join(legend)}</div><p class='note'>{_esc(promise)}</p></section>")
    else:
        why = ("exact counts are not covered by the differential-privacy guarantee" if dp else
               "set against the published rows, they would reveal what was withheld")
        share_section = (f"<section><h2>Published cells</h2><p class='note'>{_esc(promise)} How many cells were "
                         f"computed or withheld is not shown: {why}.</p></section>")
    desc = (manifest.get("config") or {}).get("description")
    title = f"{manifest.get('report')} · {manifest.get('run_id')}"
    err_note = " Whiskers: 95% noise interval (<code>*_ci95</code>)." if dp else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>
:root{{color-scheme:light}}
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f7fafc;color:#1a202c}}
main{{max-width:980px;margin:0 auto;padding:28px 32px 48px}}
header h1{{margin:0;font-size:26px}} header p{{margin:6px 0 0;color:#4a5568}}
.badge{{display:inline-block;margin-top:10px;padding:4px 10px;border-radius:999px;background:#ebf4ff;color:#2c5282;font-size:13px;font-weight:600}}
section{{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:18px 22px;margin-top:18px}}
h2{{font-size:17px;margin:0 0 12px}} h3{{font-size:14px;margin:16px 0 6px;color:#4a5568}}
.kpis{{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}}
.kpi{{flex:1 1 118px;background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:12px 16px;color:#4a5568;font-size:13px}}
.kpi b{{display:block;font-size:24px;color:#1a202c;margin-bottom:2px}}
.kpi.small{{display:inline-block;flex:none;margin:0 10px 6px 0}} .kpi.small b{{font-size:18px}}
.legend{{display:flex;flex-wrap:wrap;gap:6px 18px;margin-top:10px;font-size:13px;color:#2d3748}}
.legend i{{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}}
svg.share{{border-radius:6px;overflow:hidden;display:block}}
table.cells{{border-collapse:collapse;width:100%;font-size:13px;margin-top:14px}}
table.cells th,table.cells td{{padding:5px 8px;border-bottom:1px solid #edf2f7;text-align:left}}
table.cells th{{color:#4a5568;font-weight:600}} .r{{text-align:right!important;white-space:nowrap}}
.pm{{color:{ERR};font-size:12px}} .note{{color:#718096;font-size:12.5px;margin:8px 0 0}}
footer{{color:#718096;font-size:12px;margin-top:22px}} code{{font-size:12px}}
</style></head><body><main>
<header><h1>{_esc(manifest.get('report'))}</h1>
<p>run <b>{_esc(manifest.get('run_id'))}</b>{' · ' + _esc(desc) if desc else ''}</p>
<span class="badge">{badge}</span></header>
<div class="kpis">{kpi_html}</div>
{share_section}
<section><h2>Top {min(top, len(idx_cells))} cells by {_esc(readable(first or ''))}</h2>
{top_chart or '<p>No published cells.</p>'}
<p class="note">Only published cells are shown.{err_note}</p>
{top_table}</section>
{margin_html}
{trend_html}
<section><h2>About this release</h2>{explain_html(manifest, public=True)}</section>
<footer>Generated by anonymize-pipeline from the published report and its manifest only · aggregates, no personal data ·
{_esc(manifest.get('created_utc', ''))}</footer>
</main></body></html>
"""
