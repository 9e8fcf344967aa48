"""Run folders: where a notebook's resolved parameters and artifacts go, and seeding.

Every notebook calls ``RUN, P = start_notebook(name, globals())`` right after its
``parameters`` cell: the names that cell declares are read from the notebook itself, their
values taken from the kernel (papermill's injected ones win), and the resolved parameters
are written to ``<run_dir>/params/<notebook>.json`` so that a run can
be read, compared and resumed later (the timm habit of saving ``args.yaml`` beside a run).
"""

from __future__ import annotations

import os
import platform
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from skinhelpers.files import PROJECT_ROOT, write_json


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if importable) torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """Relative run folders are taken relative to the project root, not the notebook."""
    p = Path(run_dir)
    if not p.is_absolute():
        p = PROJECT_ROOT / p
    p.mkdir(parents=True, exist_ok=True)
    return p


def notebook_path(name: str) -> Path:
    """Where notebook ``name`` lives: ``$SKINHELPERS_NOTEBOOK_DIR`` when set, else the
    working directory when it holds ``<name>.ipynb`` (a kernel runs in its notebook's
    folder, under Jupyter and papermill alike), else ``PROJECT_ROOT/notebooks``."""
    env = os.environ.get("SKINHELPERS_NOTEBOOK_DIR")
    if env:
        return Path(env) / f"{name}.ipynb"
    here = Path.cwd() / f"{name}.ipynb"
    return here if here.exists() else PROJECT_ROOT / "notebooks" / f"{name}.ipynb"


def notebook_parameters(name: str) -> dict[str, dict]:
    """The names (and literal defaults) the ``parameters`` cell of notebook ``name`` declares,
    as ``papermill.inspect_notebook`` reads them."""
    import papermill as pm

    path = notebook_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"notebook {name}: {path} not found (the parameters cell "
            "is read from it; set SKINHELPERS_NOTEBOOK_DIR if the "
            "notebooks live elsewhere)"
        )
    declared = pm.inspect_notebook(str(path))
    if not declared:
        raise ValueError(f"notebook {path} has no cell tagged 'parameters'")
    return declared


def start_notebook(
    name: str, namespace: dict[str, Any], names: list[str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Start notebook ``name``: collect, record and return its parameters; seed everything.

    The notebook passes ``globals()`` as ``namespace``; the names its ``parameters`` cell
    declares (read with papermill from the notebook file, or ``names``) are taken from it,
    so values papermill injected win over the literal defaults. They are written to
    ``<run_dir>/params/<name>.json``; ``seed``, when declared, seeds everything.
    Returns ``(run_dir, params)``.
    """
    if names is None:
        names = list(notebook_parameters(name))
    missing = [k for k in names if k not in namespace]
    if missing:
        raise ValueError(
            f"notebook {name}: parameter(s) {missing} are declared but not "
            "defined; run the parameters cell first"
        )
    params = {k: namespace[k] for k in names}
    if "run_dir" not in params:
        raise ValueError(f"notebook {name}: parameter 'run_dir' is missing")
    run_dir = resolve_run_dir(params["run_dir"])
    if "seed" in params:
        seed_everything(int(params["seed"]))
    record = {
        "notebook": name,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "host": platform.node(),
        "params": params,
    }
    write_json(run_dir / "params" / f"{name}.json", record)
    return run_dir, params
