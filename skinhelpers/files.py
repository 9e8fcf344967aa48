"""Run folders, resolved parameters and atomic artifact writes.

Every notebook calls :func:`start_notebook` right after its ``parameters`` cell; the
resolved parameters are written to ``<run_dir>/params/<notebook>.json`` so that a run can
be read, compared and resumed later (the timm habit of saving ``args.yaml`` beside a run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: the workplace's real datasets, read-only, beside the project (tests and benchmarks)
DEFAULT_SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_data_dir() -> Path:
    """Where the tests and benchmarks find the real data: ``$SKINLAB_SHARED_DATA``, else
    ``../shared/data`` beside the project (the one place this is decided)."""
    return Path(os.environ.get("SKINLAB_SHARED_DATA", DEFAULT_SHARED_DATA))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Readers never see a half-written artifact: either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give them the usual mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def _strict(obj: Any) -> Any:
    """NaN and infinities become ``null``: strict JSON that browsers and jq can read."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as pretty, strict JSON (NaN -> null), atomically."""
    text = json.dumps(
        _strict(json.loads(json.dumps(obj, default=_jsonable))), indent=2, allow_nan=False
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. It is written by an earlier notebook of the chain; "
            "run the notebooks in order (run_all.sh does) with the same run_dir."
        )
    return json.loads(path.read_text())


def write_csv(path: str | os.PathLike, df) -> Path:
    """Write a DataFrame as CSV, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved: links and ``..`` followed)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())
