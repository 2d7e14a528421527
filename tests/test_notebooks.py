"""Execute every notebook in notebooks/ top to bottom (fast mode) and fail on any cell error.

Each notebook runs in a fresh ``python3`` kernel of this interpreter, in the
notebooks/ folder (its relative paths: ../fixtures, ../../shared/reference),
with ``CONVPRICER_FAST`` from the environment (default "1": coarse steps, few
paths). The notebooks assert their own financial checks (payouts add up to the
assets, accretion iff mNAV > 1, ...) in their cells; here each must also show
at least one plot and end with its printed conclusion.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT, reference_dir

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.notebooks

NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Notebooks that read the shared reference data (reported fair values, daily closes).
NEEDS_REFERENCE = {"02_reported_fair_values"}
#: Render figures as PNG outputs without a display (matplotlib-inline, Agg renderer).
INLINE = "module://matplotlib_inline.backend_inline"


def test_notebooks_are_committed_without_outputs() -> None:
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        with_outputs = [i for i, c in enumerate(nb.cells)
                        if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not with_outputs, f"{path.name}: cells {with_outputs} carry outputs; clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if path.stem in NEEDS_REFERENCE and reference_dir() is None \
            and not os.environ.get("CONVPRICER_REFERENCE"):
        pytest.skip(f"{path.name} needs the reference data in shared/reference beside the "
                    "checkout (or CONVPRICER_REFERENCE); not found")
    monkeypatch.setenv("CONVPRICER_FAST", os.environ.get("CONVPRICER_FAST", "1"))
    monkeypatch.setenv("MPLBACKEND", INLINE)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
    last = next(c for c in reversed(nb.cells) if c.cell_type == "code")
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    assert text.strip(), f"{path.name}: the last code cell prints no conclusion"
