"""The notebooks in notebooks/: generated from scripts/build_notebooks.py, committed with a full run, and they run.

* Committed with one full run: the outputs of ``python scripts/build_notebooks.py --execute full``
  (``SUPERRES_SMALL=0`` on ../shared/data), executed top to bottom once (execution counts 1, 2, ...),
  no error output, every figure cell with its PNG, PNGs and the file kept small, no metadata beyond
  the kernelspec and cell tags. Exactly one code cell is tagged ``parameters`` (papermill), and it
  is the first code cell.
* In sync: each committed notebook's cells (ids, kinds, sources, tags) are the ones in
  ``scripts/build_notebooks.py``, so the readable cell sources there are the notebooks' true source
  and the outputs belong to that source.
* True text: a dB figure written in a Markdown cell is one the outputs show; the modelling
  notebook's run shows ``enhanced`` clearly above ``baseline`` and bicubic, and its computed summary
  quotes the table's figures.
* Executed (slow): each notebook, built from its sources, runs top to bottom in a fresh Jupyter
  kernel of *this* interpreter (a kernelspec written to a temporary folder, so neither the PATH nor
  an installed ``python3`` kernelspec can pick another Python), with ``SUPERRES_SMALL=1``, the
  working directory ``notebooks/`` (as Jupyter would have it) and the work folder in ``tmp_path``.
  A cell that raises fails the test with nbclient's ``CellExecutionError``, whose message holds the
  cell's source and the traceback. Each notebook is run on its own (0.1 does not rely on 0.0's
  output). After the run, the files each notebook is meant to write must be there, and every cell
  that draws a figure must have produced a PNG (a figure that silently failed to render is a
  failure too).
"""

from __future__ import annotations

import base64
import importlib.util
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


# --------------------------------------------------------------------------- the committed run
def _outputs_text(cell) -> str:
    """Everything a reader sees of a code cell's outputs as text (streams, plain text, Markdown)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        for kind in ("text/plain", "text/markdown"):
            if kind in output.get("data", {}):
                parts.append(output["data"][kind])
    return "".join(parts)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_holds_one_clean_full_run(name: str) -> None:
    """Outputs of one top-to-bottom full run, no error, small figures, no metadata beyond the kernel and tags."""
    builder = _builder()
    nb = _read(name)
    nbformat.validate(nb)
    size = (NOTEBOOK_DIR / name).stat().st_size
    assert size <= builder.MAX_NOTEBOOK_BYTES, f"{name}: {size} bytes"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"{name}: extra notebook metadata {sorted(nb.metadata)}"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for index, cell in enumerate(nb.cells):
        where = f"{name} cell {index}"
        assert set(cell.metadata) <= {"tags"}, f"{where}: metadata {dict(cell.metadata)}"
        assert "attachments" not in cell, f"{where}: has attachments"
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{where}: the committed run raised {output.get('ename')}"
            assert "transient" not in output, f"{where}: transient output data"
            png = output.get("data", {}).get("image/png")
            if png is not None:
                assert len(base64.b64decode(png)) <= builder.MAX_PNG_BYTES, f"{where}: a PNG of {len(png)} base64 bytes"
    # Executed once, top to bottom, in one kernel: execution counts 1, 2, 3 ...
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1)), f"{name}: not one top-to-bottom run"
    tagged = [c for c in code_cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code_cells[0], f"{name}: the first code cell must be the only 'parameters' cell"
    assert "SUPERRES_SMALL" in tagged[0].source
    assert any("mode: full; data: ../shared/data" in _outputs_text(c) for c in code_cells), f"{name}: not a full run on the shared data"
    _check_figures(nb, name)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_build_script(name: str) -> None:
    problems = _builder().source_differences(name, _read(name))
    assert not problems, (
        f"notebooks/{name} differs from scripts/build_notebooks.py ({'; '.join(problems)}): edit the cells there, "
        "run `python scripts/build_notebooks.py --execute full` and commit the notebook"
    )


DB_FIGURE = re.compile(r"[-+]?\d+\.\d+ dB")


@pytest.mark.parametrize("name", NAMES)
def test_figures_in_the_text_are_in_the_outputs(name: str) -> None:
    """A dB figure written in a Markdown cell must be one the committed run printed (no stale numbers in the prose)."""
    nb = _read(name)
    printed = "".join(_outputs_text(c) for c in nb.cells if c.cell_type == "code")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for figure in DB_FIGURE.findall(cell.source):
                assert figure.lstrip("+") in printed, f"{name} cell {index} says {figure!r}, which no output shows"


def _table_row(text: str, label: str) -> float:
    """The first PSNR-Y of ``label``'s row in the shipped-models table of notebook 0.1."""
    match = re.search(rf"^{re.escape(label)}\s+(\d+\.\d+)\s", text, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{text}"
    return float(match.group(1))


def test_modelling_notebook_full_run_shows_enhanced_ahead() -> None:
    """The committed full run: enhanced clearly above baseline and bicubic, and near the shipped enhanced-x4."""
    nb = _read("0.1-modeling-and-training.ipynb")
    text = next(t for t in map(_outputs_text, nb.cells) if "enhanced-x4 (shipped)" in t and "bicubic" in t)
    enhanced, baseline, bicubic = (_table_row(text, label) for label in ("enhanced (this run)", "baseline (this run)", "bicubic"))
    shipped = _table_row(text, "enhanced-x4 (shipped)")
    assert enhanced >= bicubic + 2.0, (enhanced, bicubic)
    assert enhanced >= baseline + 0.5, (enhanced, baseline)
    assert abs(enhanced - shipped) <= 0.5, (enhanced, shipped)
    summary = "".join(c.outputs[0]["data"].get("text/markdown", "") for c in nb.cells
                      if c.cell_type == "code" and c.outputs and "data" in c.outputs[0])
    assert f"`enhanced` {enhanced:.2f} dB" in summary and f"bicubic {bicubic:.2f} dB" in summary, summary


# --------------------------------------------------------------------------- execution
def test_the_notebooks_run_on_this_interpreter(tmp_path: Path) -> None:
    specs = _builder().kernel_specs(tmp_path)
    assert specs.get_kernel_spec(_builder().KERNEL_NAME).argv[0] == sys.executable


def _execute(name: str, work: Path) -> tuple[object, float]:
    """Run notebook ``name`` (built from its sources: a copy, not the committed file) in SMALL mode,
    as ``scripts/build_notebooks.py --execute small`` does; return it and its wall time."""
    pytest.importorskip("ipykernel")
    started = time.monotonic()
    nb = _builder().execute(name, small=True, work=work, timeout=CELL_TIMEOUT_S)
    return nb, time.monotonic() - started


def _check_figures(nb, name: str) -> None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not FIGURE_CALLS.search(cell.source):
            continue
        pngs = [o for o in cell.outputs if o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
        assert pngs, f"{name} cell {index} draws a figure but produced no image:\n{cell.source[:300]}"


@pytest.mark.slow
def test_exploratory_notebook_runs(tmp_path: Path) -> None:
    work = tmp_path / "work"
    nb, seconds = _execute("0.0-exploratory.ipynb", work)
    print(f"0.0-exploratory.ipynb: {seconds:.1f} s")
    _check_figures(nb, "0.0-exploratory.ipynb")
    assert (work / "stats.png").is_file()
    for file in ("hr_images.npz", "hr_lr_images.npz"):
        assert (work / "patches" / file).is_file(), f"{file} was not written"


@pytest.mark.slow
def test_modelling_notebook_runs(tmp_path: Path) -> None:
    work = tmp_path / "work"  # empty: the notebook must make its own patch file
    nb, seconds = _execute("0.1-modeling-and-training.ipynb", work)
    print(f"0.1-modeling-and-training.ipynb: {seconds:.1f} s")
    _check_figures(nb, "0.1-modeling-and-training.ipynb")
    assert (work / "patches" / "hr_lr_images.npz").is_file()
    for model in ("baseline", "enhanced", "espcn"):
        runs = sorted((work / "runs").glob(f"{model}-*"))
        assert len(runs) == 1, f"expected one {model} run folder, found {runs}"
        for file in ("model.safetensors", "metrics.csv", "config.yaml"):
            assert (runs[0] / file).is_file(), f"{runs[0]}/{file} was not written"
