"""docs/notebook.ipynb runs top to bottom on the default model (nbclient), and every figure cell shows a figure."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.mark.default_model
def test_notebook_executes():
    nb = nbformat.read(ROOT / "docs" / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plots) == 8
    text = "".join(o.get("text", "") for o in outputs)
    assert "sum of direct effects" in text and "batched passes" in text
