"""The layout's rules, checked on the code itself (issue 14; docs/ARCHITECTURE.md).

Layers, bottom to top: the foundation (errors, _version, tables, progress), config, privacy,
state, engines, releases, flows, then the faces (cli, the package __init__, generate, project, integrations). A module
may import its own layer and the layers below it, never one above; privacy imports no engine, no
SQL and no connection; there is no import cycle between modules. Imports inside functions count
too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pipeline"
LAYERS = ["foundation", "config", "privacy", "state", "engines", "releases", "flows", "face"]
FOUNDATION = {"errors", "_version", "tables", "progress"}
FACE = {"cli", "__init__", "__main__", "generate", "project", "integrations"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(mod: str) -> str:
    parts = mod.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in FOUNDATION:
        return "foundation"
    if top in FACE:
        return "face"
    return top


def _imports(path: Path) -> set[str]:
    """Every pipeline module ``path`` imports (module level and inside functions)."""
    mod = _module(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("pipeline"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                sub = f"{target}.{alias.name}"
                out.add(sub if (PKG / Path(*sub.split(".")[1:])).with_suffix(".py").exists()
                        or (PKG / Path(*sub.split(".")[1:]) / "__init__.py").exists() else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pipeline")}
    return out


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) - {_module(p)} for p in PKG.rglob("*.py")}


def test_no_module_imports_a_layer_above_its_own() -> None:
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            if dep == "pipeline":  # the package face: only the CLI and the tests use it
                if _layer(mod) != "face":
                    bad.append(f"{mod} -> {dep}")
                continue
            if LAYERS.index(_layer(dep)) > LAYERS.index(_layer(mod)):
                bad.append(f"{mod} ({_layer(mod)}) -> {dep} ({_layer(dep)})")
    assert not bad, "imports upward:\n" + "\n".join(sorted(bad))


def test_privacy_imports_only_config_errors_and_tables() -> None:
    allowed = {"pipeline.errors", "pipeline.tables", "pipeline.config"}
    bad = []
    for path in (PKG / "privacy").rglob("*.py"):
        for dep in _imports(path):
            if not (dep.startswith("pipeline.privacy") or dep in allowed or dep.startswith("pipeline.config.")):
                bad.append(f"{_module(path)} -> {dep}")
        text = path.read_text()
        assert "import duckdb" not in text and "pyspark" not in text, path
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    graph = _graph()
    seen: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if seen.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in seen:
                visit(dep)
        stack.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _python_succeeds(code: str) -> None:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and require it to succeed."""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_privacy_imports_with_duckdb_blocked() -> None:
    """The engine-free layer really is: importing every privacy module works without DuckDB."""
    code = (
        "import sys, importlib, pkgutil\n"
        "sys.modules['duckdb'] = None\n"
        "import pipeline.privacy as p\n"
        "for m in pkgutil.iter_modules(p.__path__):\n"
        "    importlib.import_module('pipeline.privacy.' + m.name)\n"
        "assert 'duckdb' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    _python_succeeds(code)


@pytest.mark.parametrize("module", ["pipeline.flows.run", "pipeline.flows.dp", "pipeline.flows.threshold",
                                    "pipeline.flows.whatif", "pipeline.flows.check", "pipeline.flows.gate"])
def test_flows_do_not_import_the_engine_driver(module: str) -> None:
    """Flows reach DuckDB only through the Engine interface (engines.connect, Engine.execute)."""
    path = PKG / Path(*module.split(".")[1:]).with_suffix(".py")
    tree = ast.parse(path.read_text())
    drivers = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name == "duckdb"]
    drivers += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "duckdb"]
    assert not drivers, f"{module} imports duckdb"


def test_public_api_is_the_owning_functions_imported_lazily() -> None:
    """``pipeline.run_report`` & co. are the functions of the modules that own them (no second
    signature to drift), and ``import pipeline`` loads none of DuckDB, pandas, OpenDP."""
    code = (
        "import sys\n"
        "import pipeline\n"
        "heavy = {'duckdb', 'pandas', 'opendp', 'pyarrow'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "from pipeline import load_config, run_report, plan_report, open_release, catalogue\n"
        "import pipeline.config, pipeline.flows.run, pipeline.flows.whatif, pipeline.releases.store as s\n"
        "assert load_config is pipeline.config.load_config\n"
        "assert run_report is pipeline.flows.run.run_report\n"
        "assert plan_report is pipeline.flows.whatif.plan_report\n"
        "assert open_release is s.open_release and catalogue is s.catalogue\n"
        "assert set(pipeline.__all__) <= set(dir(pipeline))\n"
        "try:\n"
        "    pipeline.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('unknown attribute did not raise')\n"
    )
    _python_succeeds(code)


def test_both_engines_implement_the_whole_engine_interface() -> None:
    """Every method the flows and builders may call on an engine (``engines.base.Engine``) exists
    on DuckDB's and Spark's, with the same parameters: a method added to one only would fail on
    the other mid-run, after the data was read."""
    import inspect

    from pipeline.engines.base import Engine
    from pipeline.engines.duckdb.connection import DuckDBEngine
    from pipeline.engines.spark.engine import SparkEngine

    wanted = {n: inspect.signature(f) for n, f in vars(Engine).items() if callable(f) and not n.startswith("_")}
    assert {"attach_history", "detach_history", "history_exists", "tables", "columns", "file_view"} <= set(wanted)
    for cls in (DuckDBEngine, SparkEngine):
        for name, sig in wanted.items():
            method = getattr(cls, name, None)
            assert callable(method), f"{cls.__name__} lacks {name}"
            got = [p.name for p in inspect.signature(method).parameters.values()]
            assert got == [p.name for p in sig.parameters.values()], f"{cls.__name__}.{name}{got} != {sig}"
