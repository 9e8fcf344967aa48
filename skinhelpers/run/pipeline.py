"""Run the numbered notebooks in order with papermill (what ``run_all.sh`` calls).

Each notebook gets the parameters its ``parameters`` cell declares, drawn from the
profile and the command line; the executed copies go to the run folder, the resolved
parameters of the whole run to ``<run_dir>/run.json``. The first failing notebook stops
the chain with a message naming the notebook and the cell.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from skinhelpers.files import PROJECT_ROOT, write_json
from skinhelpers.run import profiles

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"


def numbered_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def select(notebooks: list[Path], only: str | None) -> list[Path]:
    """``only``: comma-separated numbers or ranges, e.g. ``"01,03-05"``."""
    if not only:
        return notebooks
    wanted: set[int] = set()
    for part in only.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"--only: '{part}' is not a number or a range like 03-05")
        a = int(m.group(1))
        b = int(m.group(2) or a)
        wanted.update(range(a, b + 1))
    chosen = [p for p in notebooks if int(p.name[:2]) in wanted]
    missing = sorted(wanted - {int(p.name[:2]) for p in notebooks})
    if missing:
        raise ValueError(f"--only: no notebook numbered {missing} among "
                         f"{[p.name for p in notebooks]}")
    return chosen


def parse_value(text: str):
    """Command-line values: Python literals where they parse (3, 0.5, True, [1, 2]), else str."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def declared_parameters(nb_path: Path) -> dict:
    import papermill as pm

    return pm.inspect_notebook(str(nb_path))


def run(dataset: str, data_dir: str | None, profile: str, run_name: str | None,
        only: str | None = None, extra: dict | None = None, kernel: str | None = None,
        html: bool = True, notebook_dir: str | os.PathLike | None = None) -> Path:
    """Execute the selected notebooks into the run folder; ``SystemExit(1)`` on failure.

    ``run_name`` is a folder name under ``runs/`` or an absolute path.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    params = profiles.resolve(profile, extra)
    run_name = run_name or f"{dataset}-{profile}"
    run_dir = Path(run_name) if Path(run_name).is_absolute() else PROJECT_ROOT / "runs" / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    if data_dir:  # relative to where run_all.sh was called from
        data_dir = str(Path(data_dir).expanduser().resolve())
    common = {"dataset": dataset, "data_dir": data_dir or "", "run_dir": str(run_dir),
              **params}
    nb_dir = Path(notebook_dir or os.environ.get("SKINHELPERS_NOTEBOOK_DIR") or NOTEBOOK_DIR)
    notebooks = select(numbered_notebooks(nb_dir), only)
    if not notebooks:
        raise SystemExit(f"no numbered notebooks found in {nb_dir}")
    declared_all: set[str] = set()
    plan = []
    for nb in notebooks:
        declared = declared_parameters(nb)
        declared_all |= set(declared)
        plan.append((nb, {k: v for k, v in common.items() if k in declared}))
    unknown = sorted(set(extra or {}) - declared_all)
    if unknown:
        raise SystemExit(f"parameter(s) {unknown} are not declared by any selected notebook; "
                         f"known: {sorted(declared_all)}")
    record = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "dataset": dataset, "data_dir": data_dir, "profile": profile,
              "run_name": run_name, "notebooks": [p.name for p, _ in plan],
              "parameters": common, "command": " ".join(sys.argv)}
    write_json(run_dir / "run.json", record)
    os.environ.setdefault("SKINHELPERS_PROGRESS", "plain")
    timings = {}
    for nb, nb_params in plan:
        out = run_dir / nb.name
        print(f"\n=== {nb.name}  ({', '.join(f'{k}={v!r}' for k, v in nb_params.items())})",
              flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=nb_params, kernel_name=kernel,
                                cwd=str(nb.parent), log_output=True, progress_bar=False,
                                stdout_file=None)
        except PapermillExecutionError as e:
            timings[nb.name] = round(time.perf_counter() - t0, 1)
            record.update({"failed": nb.name, "timings_s": timings})
            write_json(run_dir / "run.json", record)
            sys.stderr.write(
                f"\nFAILED: notebook {nb.name}, cell {e.exec_count} (cell index {e.cell_index})"
                f"\n  {e.ename}: {e.evalue}\n  executed copy with the traceback: {out}\n")
            raise SystemExit(1) from None
        timings[nb.name] = round(time.perf_counter() - t0, 1)
        print(f"=== {nb.name} done in {timings[nb.name]} s", flush=True)
    record.update({"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "timings_s": timings})
    write_json(run_dir / "run.json", record)
    if html:
        try:
            from skinhelpers.run.report import render_report
        except ImportError:
            render_report = None
        if render_report is not None:
            index = render_report(run_dir)
            print(f"report: {index}")
    print(f"\nrun folder: {run_dir}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="demo",
                    help="ham10000 | isic9 | melanoma10k | folder | demo (default: demo)")
    ap.add_argument("--data-dir", default=None,
                    help="folder holding the dataset (Kaggle layout); default data/raw/<dataset>")
    ap.add_argument("--profile", default="smoke", choices=sorted(profiles.PROFILES))
    ap.add_argument("--run", dest="run_name", default=None,
                    help="run name: outputs go to runs/<name>/ (default <dataset>-<profile>)")
    ap.add_argument("--only", default=None, help="subset of notebooks, e.g. 01,03-05")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[],
                    metavar=("NAME", "VALUE"), help="any other notebook parameter")
    ap.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    ap.add_argument("--no-html", action="store_true", help="skip the HTML report")
    args = ap.parse_args(argv)
    extra = {k: parse_value(v) for k, v in args.param}
    try:
        run(args.dataset, args.data_dir, args.profile, args.run_name, args.only, extra,
            args.kernel, html=not args.no_html)
    except ValueError as e:  # bad options: say which, no traceback
        print(f"run_all.sh: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
