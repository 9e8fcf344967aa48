"""Turn a jupytext 'percent' script into a clean notebook for notebooks/.

    .venv/bin/python scripts/py2nb.py draft.py notebooks/NN_name.ipynb

Cells tagged ``tags=["parameters"]`` keep the tag (papermill needs it); outputs are empty;
the kernel is the standard ``python3`` (the environment that runs Jupyter/papermill).
Round trip: ``.venv/bin/jupytext --to py:percent notebooks/NN_name.ipynb -o draft.py``.
"""
import sys

import jupytext
import nbformat

src, dst = sys.argv[1], sys.argv[2]
nb = jupytext.read(src, fmt="py:percent")
nb.metadata = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
for cell in nb.cells:
    tags = cell.metadata.get("tags", [])
    cell.metadata = {"tags": tags} if tags else {}
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
nbformat.validate(nb)
nbformat.write(nb, dst)
print(f"wrote {dst} ({len(nb.cells)} cells)")
