"""The example notebooks execute top to bottom (real DuckDB, real OpenDP) and are committed clean.

Each notebook runs in its own kernel, in a fresh temporary working directory, with
``ANONYMIZE_REPO`` pointing at this checkout and ``ANONYMIZE_NOTEBOOK_WORK`` at the temporary
directory, so nothing is written into the repository. The kernel is this test run's own
interpreter, registered under a private kernelspec in a temporary ``JUPYTER_PATH``: it works in a
fresh virtualenv or CI image without any user-level Jupyter setup.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "anonymize-tests"
TIMEOUT_S = 240  # per cell
FIGURES = {
    "01_quickstart.ipynb": ["top_categories.png"],
    "02_privacy_tradeoffs.ipynb": ["k_vs_suppressed.png", "epsilon_vs_error.png", "epsilon_vs_cells.png",
                                   "selection_share.png"],
    "03_release_review.ipynb": ["error_bars.png"],
}


def strip(path: Path) -> None:
    """Remove outputs, execution counts and cell metadata in place (``python -m tests.test_notebooks``)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    nbformat.write(nb, path)


def test_the_three_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == sorted(FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path: Path) -> None:
    """Like `nbstripout --verify`: no outputs, execution counts or per-cell metadata in git."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: python -m tests.test_notebooks"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
        assert not cell.get("metadata"), f"{path.name} cell {i} has metadata {dict(cell.metadata)}"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec for this interpreter in a private Jupyter data dir (not the user's)."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, prefix=str(prefix), display_name="anonymize tests")
    data = prefix / "share" / "jupyter"
    spec = (data / "kernels" / KERNEL / "kernel.json").read_text()
    assert sys.executable in spec or "python" in spec
    return data


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, kernel_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    work = tmp_path / "work"
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("ANONYMIZE_REPO", str(ROOT))
    monkeypatch.setenv("ANONYMIZE_NOTEBOOK_WORK", str(work))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    monkeypatch.chdir(tmp_path)
    repo_before = {p for p in ROOT.iterdir()}
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    for fig in FIGURES[path.name]:
        assert (work / fig).is_file() and (work / fig).stat().st_size > 5_000, fig
    assert {p for p in ROOT.iterdir()} == repo_before  # nothing new in the repository
    if path.name.startswith("03"):
        assert (work / "state" / "privacy_ledger.duckdb").is_file()  # the ledger lived in the work folder
        html = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if "text/html" in o.get("data", {}) and "noise mechanisms" in o["data"]["text/html"]]
        assert html, "release.explain() should render as HTML tables"
    if path.name.startswith("01"):
        assert (work / "reports" / "demo_buyer_activity" / "quickstart" / "summary.html").is_file()
    # the strip helper turns the executed notebook back into the committed cells
    executed = tmp_path / path.name
    nbformat.write(nb, executed)
    strip(executed)
    assert nbformat.read(executed, as_version=4).cells == nbformat.read(path, as_version=4).cells


if __name__ == "__main__":  # strip every notebook before committing
    for p in NOTEBOOKS:
        strip(p)
        print(f"stripped {p.relative_to(ROOT)}")
