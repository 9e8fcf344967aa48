"""A repository notebook executed by papermill in the batch runs' kernel.

``run_all.sh`` runs each chapter in :class:`skinhelpers.run.execute.RunKernelManager`'s
kernel (this Python, a clean and prompt shutdown) through :mod:`skinhelpers.run.engine`;
tests that execute single chapters use the same, so they test what a run executes.
tests/test_notebooks_04_05.py keeps papermill's own defaults (the ``python3`` kernelspec,
its own engine): the notebooks must run under plain ``papermill`` too.
"""

from __future__ import annotations

from pathlib import Path


def run_notebook(nb: Path, out: Path, parameters: dict) -> None:
    import papermill as pm

    from skinhelpers.run import execute

    pm.execute_notebook(
        str(nb),
        str(out),
        cwd=str(nb.parent),
        parameters=parameters,
        progress_bar=False,
        **execute.batch_kernel(),
    )
