"""``summary.html``: a small, self-contained page for account managers, from published numbers only."""

from __future__ import annotations

import html
from typing import Any

from .explain import explain_html


def summary_html(manifest: dict[str, Any], table: Any, *, top: int = 15) -> str:
    """HTML summary: published vs suppressed share, top cells by the first metric, error bars in DP mode."""
    cells = manifest.get("cells", {})
    computed = cells.get("cells_computed") or 0
    published = cells.get("cells_published") or 0
    share = (published / computed) if computed else 0.0
    cols = manifest.get("columns", {})
    dims = cols.get("dimensions", [])
    metrics = cols.get("metrics", [])
    first = metrics[0] if metrics else None
    bars = ""
    if first and table.num_rows:
        t = table
        if "level" in t.column_names:
            import pyarrow.compute as pc

            t = t.filter(pc.equal(t["level"], "cell"))
        vals = [float(v) if v is not None else None for v in t.column(first).to_pylist()]
        labels = [" · ".join(str(t.column(d)[i].as_py()) for d in dims) for i in range(t.num_rows)]
        ci = [float(v) if v is not None else None for v in t.column(f"{first}_ci95").to_pylist()] if f"{first}_ci95" in t.column_names else [None] * t.num_rows
        order = sorted(range(len(vals)), key=lambda i: -(vals[i] or 0))[:top]
        vmax = max([(vals[i] or 0) + (ci[i] or 0) for i in order] + [1e-9])
        for i in order:
            v = vals[i] or 0
            w = max(0.0, 100.0 * v / vmax)
            err = ""
            if ci[i]:
                lo = max(0.0, 100.0 * (v - ci[i]) / vmax)
                hi = min(100.0, 100.0 * (v + ci[i]) / vmax)
                err = f"<div class='err' style='left:{lo:.2f}%;width:{hi - lo:.2f}%'></div>"
            bars += (
                f"<div class='row'><div class='lbl'>{html.escape(labels[i])}</div>"
                f"<div class='track'><div class='bar' style='width:{w:.2f}%'></div>{err}</div>"
                f"<div class='val'>{v:,.1f}</div></div>"
            )
    title = html.escape(f"{manifest.get('report')} · {manifest.get('run_id')}")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:60em}}
.kpi{{display:inline-block;margin-right:2em}} .kpi b{{font-size:1.6em;display:block}}
.share{{height:14px;background:#eee;border-radius:7px;overflow:hidden;width:30em}}
.share div{{height:100%;background:#2a7;}}
.row{{display:flex;align-items:center;margin:3px 0}} .lbl{{width:22em;font-size:.85em;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}}
.track{{position:relative;flex:1;height:14px;background:#f3f3f3}} .bar{{height:100%;background:#369}}
.err{{position:absolute;top:5px;height:4px;background:#c33}} .val{{width:7em;text-align:right;font-size:.85em}}
table{{border-collapse:collapse;font-size:.85em}} th,td{{padding:2px 8px;border-bottom:1px solid #eee}}
</style></head><body>
<h1>{title}</h1>
<p>Mode <b>{html.escape(str(manifest.get('mode')))}</b>. Aggregates only: every published number covers many people{'; numbers carry calibrated noise (red bars: 95% interval)' if manifest.get('mode') == 'dp' else ''}.</p>
<div class="kpi"><b>{published:,}</b>cells published</div>
<div class="kpi"><b>{computed - published:,}</b>cells withheld</div>
<div class="kpi"><b>{share:.1%}</b>published share</div>
<div class="share"><div style="width:{share * 100:.2f}%"></div></div>
<h2>Top cells by {html.escape(str(first))}</h2>
{bars or '<p>No published cells.</p>'}
<h2>Run facts</h2>
{explain_html(manifest)}
</body></html>
"""
