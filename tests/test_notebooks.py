"""The notebooks in notebooks/: committed clean, generated from scripts/build_notebooks.py, and they run.

* Clean: no outputs, no execution counts, no metadata beyond the kernelspec and cell tags, so a
  diff of a notebook shows only the code that changed. Exactly one code cell is tagged
  ``parameters`` (papermill), and it is the first code cell.
* In sync: each committed ``.ipynb`` is byte for byte what ``scripts/build_notebooks.py`` writes, so
  the readable cell sources there are the notebooks' true source.
* Executed (slow): each notebook runs top to bottom in a fresh Jupyter kernel of *this* interpreter
  (a kernelspec written to a temporary folder, so neither the PATH nor an installed ``python3``
  kernelspec can pick another Python), with ``SUPERRES_SMALL=1``, the working directory
  ``notebooks/`` (as Jupyter would have it) and the work folder in ``tmp_path``. A cell that raises
  fails the test with nbclient's ``CellExecutionError``, whose message holds the cell's source and
  the traceback. Each notebook is run on its own (0.1 does not rely on 0.0's output). After the
  run, the files each notebook is meant to write must be there, and every cell that draws a
  figure must have produced a PNG (a figure that silently failed to render is a failure too).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NAMES = ("0.0-exploratory.ipynb", "0.1-modeling-and-training.ipynb")
CELL_TIMEOUT_S = 600  # per cell; a SMALL cell takes at most about a minute on 2 cores

#: Source patterns of cells that must leave at least one PNG output when executed.
FIGURE_CALLS = re.compile(r"plt\.subplots\(|display\(ShowImage\(|show_pairs\(lr")


def _builder() -> ModuleType:
    """scripts/build_notebooks.py as a module (scripts/ is not a package)."""
    path = REPO / "scripts" / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=nbformat.NO_CONVERT)


# --------------------------------------------------------------------------- cheap checks
@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name: str) -> None:
    nb = _read(name)
    nbformat.validate(nb)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"{name}: extra notebook metadata {sorted(nb.metadata)}"
    for index, cell in enumerate(nb.cells):
        where = f"{name} cell {index}"
        assert set(cell.metadata) <= {"tags"}, f"{where}: metadata {dict(cell.metadata)}"
        assert "attachments" not in cell, f"{where}: has attachments"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{where}: has outputs"
            assert cell.execution_count is None, f"{where}: has an execution count"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code_cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code_cells[0], f"{name}: the first code cell must be the only 'parameters' cell"
    assert "SUPERRES_SMALL" in tagged[0].source


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_build_script(name: str) -> None:
    committed = (NOTEBOOK_DIR / name).read_text(encoding="utf-8")
    assert committed == _builder().render(name), (
        f"notebooks/{name} differs from scripts/build_notebooks.py: edit the cells there and run "
        "`python scripts/build_notebooks.py`"
    )


# --------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory: pytest.TempPathFactory):
    """Make kernel managers whose kernel is ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    pytest.importorskip("ipykernel")
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / "superres-test"
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "superres test (this interpreter)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    assert specs.get_kernel_spec("superres-test").argv[0] == sys.executable

    def make() -> AsyncKernelManager:
        return AsyncKernelManager(kernel_name="superres-test", kernel_spec_manager=specs)

    return make


def _execute(name: str, work: Path, make_km) -> tuple[object, float]:
    """Run notebook ``name`` in SMALL mode; return the executed notebook and its wall time."""
    nb = _read(name)
    env = dict(os.environ, SUPERRES_SMALL="1", SUPERRES_NOTEBOOK_OUT=str(work))
    env.pop("MPLBACKEND", None)  # the kernel picks its inline backend only when none is forced (e.g. Agg in CI)
    client = nbclient.NotebookClient(
        nb,
        km=make_km(),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # the kernel's working directory
    )
    started = time.monotonic()
    client.execute(env=env)  # CellExecutionError (cell source + traceback) propagates
    return nb, time.monotonic() - started


def _check_figures(nb, name: str) -> None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not FIGURE_CALLS.search(cell.source):
            continue
        pngs = [o for o in cell.outputs if o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
        assert pngs, f"{name} cell {index} draws a figure but produced no image:\n{cell.source[:300]}"


@pytest.mark.slow
def test_exploratory_notebook_runs(tmp_path: Path, kernel_manager_factory) -> None:
    work = tmp_path / "work"
    nb, seconds = _execute("0.0-exploratory.ipynb", work, kernel_manager_factory)
    print(f"0.0-exploratory.ipynb: {seconds:.1f} s")
    _check_figures(nb, "0.0-exploratory.ipynb")
    assert (work / "stats.png").is_file()
    for file in ("hr_images.npz", "hr_lr_images.npz"):
        assert (work / "patches" / file).is_file(), f"{file} was not written"


@pytest.mark.slow
def test_modelling_notebook_runs(tmp_path: Path, kernel_manager_factory) -> None:
    work = tmp_path / "work"  # empty: the notebook must make its own patch file
    nb, seconds = _execute("0.1-modeling-and-training.ipynb", work, kernel_manager_factory)
    print(f"0.1-modeling-and-training.ipynb: {seconds:.1f} s")
    _check_figures(nb, "0.1-modeling-and-training.ipynb")
    assert (work / "patches" / "hr_lr_images.npz").is_file()
    for model in ("baseline", "enhanced", "espcn"):
        runs = sorted((work / "runs").glob(f"{model}-*"))
        assert len(runs) == 1, f"expected one {model} run folder, found {runs}"
        for file in ("model.safetensors", "metrics.csv", "config.yaml"):
            assert (runs[0] / file).is_file(), f"{runs[0]}/{file} was not written"
