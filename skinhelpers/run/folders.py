"""Run folders: where a notebook's resolved parameters and artifacts go, and seeding.

Every notebook calls ``RUN, P = start_notebook(name, globals())`` right after its
``parameters`` cell: the names that cell declares are read from the notebook itself, their
values taken from the kernel (papermill's injected ones win), and the resolved parameters
are written to ``<run_dir>/params/<notebook>.json`` so that a run can
be read, compared and resumed later (the timm habit of saving ``args.yaml`` beside a run).

**A notebook run by hand takes the run's values.** In JupyterLab (no papermill), when the
run folder already holds a run (``run.json`` of ``run_all.sh``, or the params files of the
chapters before this one), every parameter still at the notebook's *shipped* default takes
the run's value, with a printed note, so that the chapters of one run agree (chapter 07
trains at the image size chapter 02 cached, 03 reads the dataset 01 loaded). A value you
edited in the parameters cell is yours and is kept (a note says when it differs from the
run). The details (:func:`run_values`, :func:`shipped_defaults`):

* the run's values are ``run.json``'s parameters (the command line and profile of
  ``run_all.sh``), overridden by what the earlier chapters of this run folder recorded as
  differing from their own defaults (``params/<NN>.json``, key ``changed``; the nearest
  earlier chapter wins); a later chapter and the notebook's own earlier record never count;
* the shipped default is the parameters cell as committed (``git show HEAD:``), else as
  saved on disk: JupyterLab's autosave does not turn your edit into "the default";
* a value of the wrong type for the notebook's default is never taken;
* papermill runs (``run_all.sh``, tests) take exactly the values they are given: nothing
  is adopted when the kernel executed papermill's injected ``# Parameters`` cell;
* ``SKINHELPERS_RUN_PARAMS=off`` (e.g. ``%env SKINHELPERS_RUN_PARAMS=off`` before the
  cell) turns it off. To use a notebook's default where the run differs, run in another
  ``run_dir``.

The params file records ``changed`` (the parameters that differ from the notebook's
shipped default, adopted or edited) and ``from_run`` (what was adopted, and from where).
:func:`start_notebook` also tells :mod:`skinhelpers.figures` the run folder, so that
``save_figure`` writes into ``<run_dir>/figures/``.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import platform
import random
import re
import subprocess
import sys
from dataclasses import MISSING, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from skinhelpers import figures
from skinhelpers.files import PROJECT_ROOT, write_json

log = logging.getLogger(__name__)

RUN_PARAMS_ENV = "SKINHELPERS_RUN_PARAMS"  # "off": a notebook run by hand adopts nothing
NEVER_ADOPTED = ("run_dir",)  # how the run is found in the first place


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, when torch is loaded.

    torch is not imported for this: chapters 01-04 never load it, and importing it would
    cost every one of their kernels a second. A chapter that uses torch has loaded it by the
    time it calls :func:`start_notebook` (its imports come first), so it is seeded."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    # (PYTHONHASHSEED acts only when an interpreter starts: the pipeline sets it for the
    # notebooks' kernels, skinhelpers.run.pipeline.run)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


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


def notebook_parameters(name: str) -> dict[str, str]:
    """``{name: default as written}`` of what the ``parameters`` cell of notebook ``name``
    declares, in order: the names ``papermill.inspect_notebook`` reads (a test holds them
    equal), read with :mod:`ast` because importing papermill in a kernel costs a second
    (nbformat's schema validator), paid by every chapter of every run."""
    path = notebook_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"notebook {name}: {path} not found (the parameters cell "
            "is read from it; set SKINHELPERS_NOTEBOOK_DIR if the "
            "notebooks live elsewhere)"
        )
    declared = parameter_cell(path.read_text(encoding="utf-8"))
    if not declared:
        raise ValueError(f"notebook {path} has no cell tagged 'parameters'")
    return {k: src for k, (src, _node) in declared.items()}


# ----------------------------------------------------------------------------- the run's values


def parameter_cell(notebook_json: str) -> dict[str, tuple[str, ast.expr]]:
    """``{name: (value as written, value node)}`` of the assignments in a notebook's
    ``parameters`` cell (``notebook_json``: the .ipynb text), in order; empty when no cell
    is tagged ``parameters``."""
    nb = json.loads(notebook_json)
    for cell in nb.get("cells", []):
        if "parameters" not in (cell.get("metadata") or {}).get("tags", []):
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        out = {}
        for node in ast.parse(src).body:
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            if isinstance(target, ast.Name) and node.value is not None:
                out[target.id] = (ast.get_source_segment(src, node.value) or "", node.value)
        return out
    return {}


def parameter_cell_defaults(notebook_json: str) -> dict[str, Any]:
    """``{name: value}`` of the literal assignments in a notebook's ``parameters`` cell
    (``notebook_json``: the .ipynb text); names whose value is not a literal are left out."""
    out = {}
    for k, (_src, node) in parameter_cell(notebook_json).items():
        try:
            out[k] = ast.literal_eval(node)
        except ValueError:
            pass
    return out


def shipped_defaults(name: str) -> dict[str, Any]:
    """The defaults notebook ``name`` ships with: its parameters cell as committed
    (``git show HEAD:<notebook>``), else as saved on disk (no git, or not committed)."""
    path = notebook_path(name)
    try:
        text = subprocess.run(
            ["git", "-C", str(path.parent), "show", f"HEAD:./{path.name}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return parameter_cell_defaults(text)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    try:
        return parameter_cell_defaults(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _number(name: str) -> int | None:
    m = re.match(r"(\d\d)_", name)
    return int(m.group(1)) if m else None


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_values(run_dir: Path, name: str) -> dict[str, tuple[Any, str]]:
    """``{parameter: (value, origin)}``: what the run in ``run_dir`` says, for notebook
    ``name`` (see the module docstring): ``run.json``'s parameters, overridden by the
    ``changed`` values of earlier chapters' params files (the nearest earlier one wins)."""
    out: dict[str, tuple[Any, str]] = {}
    for k, v in (_read(run_dir / "run.json").get("parameters") or {}).items():
        out[k] = (v, "run.json")
    me = _number(name)
    if me is None:
        return out
    earlier = [
        p for p in sorted((run_dir / "params").glob("*.json")) if (_number(p.stem) or 99) < me
    ]
    for p in earlier:
        for k, v in (_read(p).get("changed") or {}).items():
            out[k] = (v, f"params/{p.name}")
    return out


def _plain(x: Any) -> Any:
    """``x`` as it looks after a trip through JSON (tuples become lists)."""
    return json.loads(json.dumps(x, default=str))


def same_value(a: Any, b: Any) -> bool:
    """Equal after a JSON trip, with a bool never equal to a number (``True != 1``)."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _under_papermill(namespace: dict[str, Any]) -> bool:
    """Whether the kernel ran papermill's injected parameters cell (``# Parameters``)."""
    history = namespace.get("In") or namespace.get("_ih") or []
    return any(isinstance(s, str) and s.startswith("# Parameters\n") for s in history)


def _fits(value: Any, default: Any) -> bool:
    from skinhelpers.run.pipeline import type_error  # local: the runner imports much more

    return type_error("x", _plain(value), default) is None


def adopt_run_values(
    name: str, params: dict[str, Any], run_dir: Path, shipped: dict[str, Any]
) -> tuple[dict[str, tuple[Any, str, Any]], dict[str, tuple[Any, Any, str]]]:
    """Which of ``params`` take the run's value: ``(adopted, kept)``, where ``adopted`` is
    ``{name: (run value, origin, notebook default)}`` (still at the shipped default) and
    ``kept`` is ``{name: (your value, run value, origin)}`` (edited; the run differs)."""
    adopted, kept = {}, {}
    for k, (value, origin) in run_values(run_dir, name).items():
        if k in NEVER_ADOPTED or k not in params or k not in shipped:
            continue
        if same_value(params[k], value):
            continue
        if not same_value(params[k], shipped[k]):
            kept[k] = (params[k], value, origin)
        elif _fits(value, shipped[k]):
            adopted[k] = (_plain(value), origin, params[k])
    return adopted, kept


def _note(run_dir: Path, adopted: dict, kept: dict) -> str:
    lines = []
    if adopted:
        lines.append(
            f"run folder {run_dir}: {len(adopted)} parameter(s) left at this notebook's "
            "default take the run's value, so that the chapters agree (edit one in the "
            "parameters cell to choose otherwise):"
        )
        lines += [
            f"  {k} = {v!r}  (notebook default {d!r}; from {o})" for k, (v, o, d) in adopted.items()
        ]
    for k, (mine, run, origin) in kept.items():
        lines.append(f"note: {k} = {mine!r} as set above; this run has {run!r} ({origin})")
    return "\n".join(lines)


def start_notebook(
    name: str, namespace: dict[str, Any], names: list[str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Start notebook ``name``: collect, record and return its parameters; seed everything.

    The notebook passes ``globals()`` as ``namespace``; the names its ``parameters`` cell
    declares (read with papermill from the notebook file, or ``names``) are taken from it,
    so values papermill injected win over the literal defaults. Run by hand, a parameter
    still at the notebook's shipped default takes the run's value (module docstring; the
    namespace is updated too). The parameters are written to
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
    shipped = shipped_defaults(name) if notebook_path(name).exists() else {}
    adopted: dict = {}
    if os.environ.get(RUN_PARAMS_ENV, "").lower() not in {"off", "0", "false", "no"} and not (
        _under_papermill(namespace)
    ):
        adopted, kept = adopt_run_values(name, params, run_dir, shipped)
        for k, (v, _origin, _default) in adopted.items():
            params[k] = namespace[k] = v
        if adopted or kept:
            log.info(_note(run_dir, adopted, kept))
    if "seed" in params:
        seed_everything(int(params["seed"]))
    figures.set_run_dir(run_dir)
    record = {
        "notebook": name,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "host": platform.node(),
        "params": params,
        "changed": {
            k: v for k, v in params.items() if k in shipped and not same_value(v, shipped[k])
        },
        "from_run": {k: origin for k, (_v, origin, _d) in adopted.items()},
    }
    write_json(run_dir / "params" / f"{name}.json", record)
    return run_dir, params


def changed_fields(obj: Any) -> dict[str, tuple[Any, Any]]:
    """``{field: (value, default)}`` of a dataclass instance's fields that differ from the
    class defaults (what notebook 07 shows of its ``TrainConfig``); fields without a
    default are always listed."""
    if not is_dataclass(obj):
        raise TypeError(f"{type(obj).__name__} is not a dataclass instance")
    out = {}
    for f in fields(obj):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            out[f.name] = (getattr(obj, f.name), "(required)")
            continue
        value = getattr(obj, f.name)
        if not same_value(value, default):
            out[f.name] = (value, default)
    return out
