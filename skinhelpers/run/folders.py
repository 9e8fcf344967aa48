"""Run folders: where a notebook's resolved parameters and artifacts go, and seeding.

Every notebook calls :func:`start_notebook` right after its ``parameters`` cell; the
resolved parameters are written to ``<run_dir>/params/<notebook>.json`` so that a run can
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


def start_notebook(name: str, params: dict[str, Any]) -> Path:
    """Record a notebook's resolved parameters in its run folder, seed everything.

    ``params`` must contain ``run_dir``; if it contains ``seed`` everything is seeded.
    Returns the resolved run folder.
    """
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
    return run_dir
