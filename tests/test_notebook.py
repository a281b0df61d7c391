"""examples/image_augmentation.ipynb, the book's chapter with augrun, executed top to bottom on a real Jupyter kernel
(ipykernel, driven by nbclient) with AUGRUN_EXAMPLE_SMOKE=1, in a fresh working directory: any cell's error fails."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

# in [test]; absent where only the GPU tests run (the device machine has no Jupyter)
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).parents[1] / "examples" / "image_augmentation.ipynb"
KERNEL = "augrun-test"


@pytest.fixture
def this_python_as_kernel(tmp_path: Path, monkeypatch) -> str:
    """A kernel spec for this interpreter, found first on JUPYTER_PATH: "python3" could name another Python that a
    user installed a kernel for."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "augrun tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def outputs_of(notebook, kind: str) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
            if kind in output.get("data", {})]


def test_the_chapter_runs_top_to_bottom_in_smoke_mode(tmp_path: Path, monkeypatch, this_python_as_kernel: str):
    monkeypatch.setenv("AUGRUN_EXAMPLE_SMOKE", "1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name=this_python_as_kernel, shutdown_kernel="immediate",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # a cell that raises fails here, with the cell and its traceback

    # every picture shown inline; the comparison table; the answer, from the numbers
    assert len(outputs_of(notebook, "image/png")) == 11  # 9 grids, the curves, the comparison plot
    shown = "".join(output["data"]["text/plain"] for output in outputs_of(notebook, "text/plain"))
    assert "Comparison (mean±std over seeds)" in shown and "aug=flip_only" in shown  # rich's table, as HTML and text
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "Without augmentation: train accuracy" in printed and "With flips:" in printed
    assert (workdir / "outputs").is_dir()  # the runs went where the command line puts them: the working directory
    if importlib.util.find_spec("ipywidgets") is not None:  # rich draws the progress bar into a widget's output
        assert "epoch 1/1" in json.dumps(notebook.metadata.get("widgets", {}))  # its stats come when a redraw catches them
