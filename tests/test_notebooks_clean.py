"""The committed notebooks carry no outputs (an nbstripout-style check): running them locally
must not end up in the repository, and the quickstart shows a clean page to a new user."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_to_check() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_committed_notebook_has_no_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts; clear them before "
        "committing (Edit > Clear Outputs of All Cells, or `jupyter nbconvert --clear-output "
        "--inplace`)"
    )
    assert "widgets" not in notebook.metadata, f"{path.name}: widget state is saved"
