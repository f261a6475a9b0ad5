"""Fingerprints of a release of every config in configs/: proof that a refactor changed no output.

    python -m bench.fingerprints [--out FILE] [--compare FILE]

Runs every report config of ``configs/`` on fixed data (generated events with fixed seeds, the
samples), in a fresh temporary project with a fixed ledger secret, and prints one line per
config: the sha256 of ``report.parquet`` and of ``manifest.json`` without its clock-dependent
fields (``created_utc``, ``timings_s``, gate seconds). DP noise comes from OpenDP's CSPRNG and
cannot be seeded, so for this comparison only it is replaced by numpy Laplace/Gaussian draws of
the same scales from a fixed seed (the release gate's noise check still runs on them). Not a
test and not a benchmark: a tool for "byte-identical before and after" (issue 14).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECRET = bytes(range(32))


def _seeded_noise() -> None:
    """Replace ``add_noise`` wherever the pipeline imported it by seeded numpy draws."""
    import numpy as np

    def add_noise(values: Any, mech: Any) -> Any:
        seed = int.from_bytes(hashlib.sha256(f"{mech.name}:{mech.scale!r}:{len(values)}".encode()).digest()[:8], "big")
        rng = np.random.default_rng(seed)
        v = np.asarray(values, dtype=np.float64)
        z = rng.laplace(0.0, mech.scale, len(v)) if mech.noise == "laplace" else rng.normal(0.0, mech.scale, len(v))
        out = v + (np.round(z) if mech.integer else z)
        return out.astype(np.int64) if mech.integer else out

    import importlib
    import pkgutil

    import pipeline

    # seeded draws go to cells by position: fetch the DP candidate cells in key order (a real run
    # draws independent noise per cell, whatever order the engine returns them in)
    try:
        conn = importlib.import_module("pipeline.engines.duckdb.connection")
    except ImportError:  # the layout before issue 14
        conn = importlib.import_module("pipeline.engine")
    fetch = conn.fetch_arrow
    try:
        sort_table = importlib.import_module("pipeline.tables").sort_table
    except ImportError:
        sort_table = conn.sort_table

    def fetch_sorted(result: Any) -> Any:
        t = fetch(result)
        if "__units" in t.column_names:
            t = sort_table(t, [c for c in t.column_names if c.startswith("__d")] + ["__units"])
        return t

    conn.fetch_arrow = fetch_sorted

    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if info.name.endswith((".cli", "__main__")):
            continue
        mod = importlib.import_module(info.name)
        if hasattr(mod, "add_noise"):
            mod.add_noise = add_noise


def _manifest_digest(path: Path) -> str:
    m = json.loads(path.read_text())
    m.pop("created_utc", None)
    m.pop("timings_s", None)
    (m.get("gate") or {}).pop("seconds", None)
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()


def fingerprints(work: Path) -> dict[str, dict[str, str]]:
    from pipeline import load_config, run_report
    from pipeline.generate import generate_events

    shutil.copytree(ROOT / "configs", work / "configs")
    shutil.copytree(ROOT / "samples", work / "samples")
    generate_events(work / "data" / "events.parquet", rows=200_000, users=20_000, seed=7)
    generate_events(work / "data" / "demo_events.parquet", rows=100_000, users=10_000, seed=7)
    import os

    for f in [*(work / "data").iterdir(), *(work / "samples").iterdir()]:  # provenance records times
        os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    (work / "state").mkdir()
    for name in ("privacy_ledger.duckdb", "release_history.duckdb"):
        secret = work / "state" / f"{name}.secret"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
    _seeded_noise()
    out: dict[str, dict[str, str]] = {}
    for cfg_path in sorted((work / "configs").glob("*.yaml")):
        rel = run_report(load_config(cfg_path), "fingerprint", summary_html=False)
        out[cfg_path.stem] = {
            "report": hashlib.sha256(rel.report_path.read_bytes()).hexdigest(),
            "manifest": _manifest_digest(rel.path / "manifest.json"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the fingerprints as JSON")
    ap.add_argument("--compare", type=Path, help="compare with fingerprints written earlier; exit 1 on a difference")
    args = ap.parse_args(argv)
    # a fixed folder: manifests record the source's absolute path
    work = Path(tempfile.gettempdir()) / "anonymize-fingerprints"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        fps = fingerprints(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, fp in fps.items():
        print(f"{name:34} report {fp['report'][:16]}  manifest {fp['manifest'][:16]}")
    if args.out:
        args.out.write_text(json.dumps(fps, indent=2) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        diff = [n for n in sorted(set(before) | set(fps)) if before.get(n) != fps.get(n)]
        for n in diff:
            print(f"DIFFERENT: {n}: {before.get(n)} -> {fps.get(n)}")
        print("identical" if not diff else f"{len(diff)} config(s) differ")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
