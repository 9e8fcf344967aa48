"""Progress bars that stay readable in a terminal, in JupyterLab and under papermill.

Interactive notebooks get tqdm's widget; batch runs (``SKINHELPERS_PROGRESS=plain``,
set by ``run_all.sh``, or no TTY) get plain text lines printed at most every 10 s, so an
executed notebook shows a short log instead of thousands of redrawn bars.
"""
from __future__ import annotations

import os
import sys


def _mode() -> str:
    mode = os.environ.get("SKINHELPERS_PROGRESS", "").lower()
    if mode in {"plain", "off", "auto"}:
        return mode
    return "auto"


def progress(iterable=None, **kwargs):
    """``tqdm`` with defaults that suit the environment (pass any tqdm keyword)."""
    mode = _mode()
    if mode == "off":
        kwargs["disable"] = True
    if mode == "plain":
        from tqdm import tqdm

        kwargs.setdefault("mininterval", 10.0)
        kwargs.setdefault("maxinterval", 60.0)
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
