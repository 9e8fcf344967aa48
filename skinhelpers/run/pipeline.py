"""Run the numbered notebooks in order with papermill (what ``run_all.sh`` calls).

Each notebook gets the parameters its ``parameters`` cell declares, drawn from the
profile and the command line. Before anything runs, every ``-p`` value is checked
against the type of the default the notebooks declare. The executed copies go to the
run folder, each notebook's output streams live to the terminal and to
``<run_dir>/logs/<notebook>.log``, and ``<run_dir>/run.json`` records the parameters, the
environment (versions, GPUs, git commit), and how each notebook ended. The first
notebook that fails, dies (e.g. out of memory), passes ``--timeout`` or is interrupted
stops the chain with a message naming the notebook and the cell; the report is rendered
all the same. ``--resume`` continues such a run from the first unfinished notebook.

A notebook that declares ``external_dataset`` is skipped, with a note, while that
parameter is empty (see ``SKIP_WHEN_EMPTY``).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from skinhelpers import logs
from skinhelpers.data import sources
from skinhelpers.files import PROJECT_ROOT, write_json
from skinhelpers.run import execute, profiles, provenance
from skinhelpers.run.report import render_report

# run with `python -m` this module is "__main__": its spec keeps its name under skinhelpers
log = logging.getLogger(__spec__.name if __spec__ else __name__)

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
        raise ValueError(
            f"--only: no notebook numbered {missing} among {[p.name for p in notebooks]}"
        )
    return chosen


def parse_value(text: str):
    """Command-line values: Python literals where they parse (3, 0.5, True, [1, 2]), else str."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


#: notebook parameters renamed: old name -> new name (a -p of the old name says so)
RENAMED_PARAMS = {"compile": "torch_compile"}
SKIP_WHEN_EMPTY = ("external_dataset",)  # a notebook declaring one of these runs only when set
#: what a machine other than node 0 runs of a run over several machines (--node-rank > 0):
#: the data chapters and 07's training; the trials and the evaluation are node 0's
WORKER_NODE_NOTEBOOKS = ("01", "02", "03", "04", "05", "07")
OK = "ok"


def declared_parameters(nb_path: Path) -> dict:
    """papermill's ``inspect_notebook``: ``{name: {"default", "help", ...}}``."""
    import papermill as pm

    return pm.inspect_notebook(str(nb_path))


_NO_DEFAULT = object()


def default_value(info: dict):
    """The Python value of a declared default, or ``_NO_DEFAULT`` if it is not a literal."""
    try:
        return ast.literal_eval(str(info.get("default")))
    except (ValueError, SyntaxError):
        return _NO_DEFAULT


def type_error(name: str, value, default) -> str | None:
    """Why ``value`` does not fit a parameter whose default is ``default`` (None: it fits).

    The default's type is the expected one (int, float, bool, str, list, dict); an int
    is fine for a float, a bool is not an int; a default of None accepts anything.
    """
    if default is None or default is _NO_DEFAULT:
        return None
    expected = type(default)
    if type(value) is expected or (expected is float and type(value) is int):
        return None
    hint = ""
    if expected is list:
        hint = f'; write a list, e.g. -p {name} "{[value] if value is not None else []!r}"'
    elif expected is str:
        hint = f"; quote it as a string, e.g. -p {name} \"'{value}'\""
    elif expected is bool:
        hint = "; write True or False"
    return (
        f"parameter {name}={value!r} is a {type(value).__name__}, "
        f"expected {expected.__name__} (default {default!r}){hint}"
    )


def check_parameters(plan: list[dict], values: dict, origin: dict) -> list[str]:
    """Every value checked against each selected notebook that declares it."""
    errors = []
    for step in plan:
        for name, info in step["declared"].items():
            if name not in values:
                continue
            problem = type_error(name, values[name], default_value(info))
            if problem:
                errors.append(f"{step['nb'].name}: {problem} (from {origin.get(name, '?')})")
    return sorted(set(errors), key=errors.index)


def skip_reason(declared: dict, params: dict) -> str | None:
    """A note when a notebook must be skipped because a SKIP_WHEN_EMPTY parameter is empty."""
    for name in SKIP_WHEN_EMPTY:
        if name in declared:
            value = params.get(name, default_value(declared[name]))
            if not value or value is _NO_DEFAULT:
                return f"{name} is empty (run it with -p {name} NAME)"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_dir(run_name: str) -> Path:
    return Path(run_name) if Path(run_name).is_absolute() else PROJECT_ROOT / "runs" / run_name


def make_plan(notebooks: list[Path], common: dict) -> list[dict]:
    """One step per notebook: its path, declared parameters and the values it gets."""
    plan = []
    for nb in notebooks:
        declared = declared_parameters(nb)
        plan.append(
            {
                "nb": nb,
                "declared": declared,
                "params": {k: v for k, v in common.items() if k in declared},
            }
        )
    return plan


def resume_point(plan: list[dict], previous: dict, run_dir: Path) -> int:
    """Index of the first step to run again: the first that did not finish, or whose
    parameters changed, or whose executed copy is gone (all later ones run too)."""
    results = previous.get("results") or {}
    for i, step in enumerate(plan):
        name = step["nb"].name
        done = results.get(name) or {}
        if done.get("status") == "skipped" and skip_reason(step["declared"], step["params"]):
            continue
        if (
            done.get("status") != OK
            or done.get("parameters") != _jsonable(step["params"])
            or not (run_dir / name).exists()
        ):
            return i
    return len(plan)


def _jsonable(d: dict) -> dict:
    """What ``d`` looks like after a trip through run.json (tuples become lists)."""

    return json.loads(json.dumps(d, default=str))


def _failure_message(name: str, res: dict, out: Path) -> str:
    cell = res.get("cell")
    where = (
        f"cell {cell if cell is not None else '?'} (cell index {res['cell_index']})"
        if "cell_index" in res
        else "before any cell ran"
    )
    src = f"\n  the cell starts: {res['cell_source']}" if res.get("cell_source") else ""
    kind = {
        "failed": "FAILED",
        "kernel_died": "KERNEL DIED",
        "timeout": "TIMED OUT",
        "kernel_missing": "KERNEL DID NOT START",
        "interrupted": "INTERRUPTED",
    }
    return (
        f"\n{kind.get(res['status'], 'FAILED')}: notebook {name}, {where}{src}"
        f"\n  {res.get('error', '')}\n  executed copy: {out}"
        f"\n  log: {res.get('log', '')}\n"
    )


def _render(run_dir: Path) -> None:
    try:
        log.info(f"report: {render_report(run_dir)}")
    except Exception as e:  # noqa: BLE001 - a report problem must not hide the run's result
        log.error(f"report could not be rendered: {type(e).__name__}: {e}")


def command_line() -> str:
    """The command the user typed: run_all.sh passes its own command line in
    ``SKINHELPERS_COMMAND``; a direct ``python -m skinhelpers.run.pipeline`` call is shown
    as such (not as the path of pipeline.py)."""
    typed = os.environ.get("SKINHELPERS_COMMAND")
    if typed:
        return typed
    return shlex.join([Path(sys.executable).name, "-m", "skinhelpers.run.pipeline", *sys.argv[1:]])


def run(
    dataset: str,
    data_dir: str | None,
    profile: str,
    run_name: str | None,
    only: str | None = None,
    extra: dict | None = None,
    html: bool = True,
    notebook_dir: str | os.PathLike | None = None,
    resume: bool = False,
    timeout_s: float | None = None,
) -> Path:
    """Execute the selected notebooks into the run folder; ``SystemExit`` on failure
    (code 1; 130 after Ctrl-C). ``run_name`` is a folder name under ``runs/`` or an
    absolute path; ``resume`` continues it (see :func:`resume_point`)."""
    extra = dict(extra or {})
    # how much the library says, in this process and in every notebook's kernel (the run's
    # parameter, not a notebook's: skinhelpers.logs reads it from the environment)
    level = extra.pop("log_level", None)
    if level is not None:
        logs.parse_level(level)  # a bad level fails before anything runs
        os.environ[logs.ENV] = str(level).upper()
        logs.configure(level)
    params = profiles.resolve(profile, extra)
    run_name = run_name or f"{dataset}-{profile}"
    run_dir = _run_dir(run_name)
    if data_dir:  # relative to where run_all.sh was called from
        data_dir = str(Path(data_dir).expanduser().resolve())
    common = {"dataset": dataset, "data_dir": data_dir or "", "run_dir": str(run_dir), **params}
    record_params = {**common, **({"log_level": str(level).upper()} if level is not None else {})}
    nb_dir = Path(notebook_dir or os.environ.get("SKINHELPERS_NOTEBOOK_DIR") or NOTEBOOK_DIR)
    notebooks = select(numbered_notebooks(nb_dir), only)
    if not notebooks:
        raise SystemExit(f"no numbered notebooks found in {nb_dir}")
    plan = make_plan(notebooks, common)
    declared_all = set().union(*(s["declared"] for s in plan))
    unknown = sorted(set(extra) - declared_all)
    if unknown:
        renamed = [f"'{k}' is now '{RENAMED_PARAMS[k]}'" for k in unknown if k in RENAMED_PARAMS]
        raise SystemExit(
            f"parameter(s) {unknown} are not declared by any selected notebook"
            + (f" ({'; '.join(renamed)})" if renamed else "")
            + f"; known: {sorted(declared_all)}"
        )
    origin = {k: (f"-p {k}" if k in extra else f"profile {profile}") for k in common}
    errors = check_parameters(plan, common, origin)
    try:  # dataset names, label space and data_dirs: refused before anything runs
        sources.check_request(
            dataset,
            common.get("label_space", "first"),
            common.get("unmapped_classes", "drop"),
            common.get("data_dirs") or None,
        )
    except ValueError as e:
        errors.append(str(e))
    if errors:
        raise SystemExit("run_all.sh: wrong parameter, nothing was run:\n  " + "\n  ".join(errors))

    previous = {}
    if resume:
        try:
            previous = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            raise SystemExit(
                f"--resume: no readable {run_dir / 'run.json'}; nothing to resume "
                f"(start the run without --resume)"
            ) from None
    start = resume_point(plan, previous, run_dir) if resume else 0
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "started": previous.get("started", _now()),
        "dataset": dataset,
        "data_dir": data_dir,
        "profile": profile,
        "run_name": run_name,
        "notebooks": [s["nb"].name for s in plan],
        "parameters": record_params,
        "command": command_line(),
        "timeout_s": timeout_s,
        "environment": provenance.environment(),
        "results": {},
        "timings_s": {},
    }
    if resume:
        record["resumed"] = [*previous.get("resumed", []), _now()]
    for step in plan[:start]:
        name = step["nb"].name
        record["results"][name] = previous["results"][name]
        if "seconds" in previous["results"][name]:
            record["timings_s"][name] = previous["results"][name]["seconds"]
    if resume:
        done = [s["nb"].name[:2] for s in plan[:start]]
        log.info(
            f"resume: {len(done)} notebook(s) already finished with the same parameters"
            + (f" ({', '.join(done)}) are kept" if done else "")
            + (
                f"; continuing with {plan[start]['nb'].name}"
                if start < len(plan)
                else "; nothing left to run"
            ),
        )
    write_json(run_dir / "run.json", record)
    os.environ.setdefault("SKINHELPERS_PROGRESS", "plain")
    # the kernels are new processes: hash randomisation is set when an interpreter starts,
    # so the run's seed reaches them only through their environment
    os.environ["PYTHONHASHSEED"] = str(common.get("seed", 0))
    for step in plan[start:]:
        nb, nb_params = step["nb"], step["params"]
        name, out = nb.name, run_dir / nb.name
        reason = skip_reason(step["declared"], nb_params)
        if common.get("node_rank") and name[:2] not in WORKER_NODE_NOTEBOOKS:
            reason = f"node {common['node_rank']} trains with node 0, which runs this chapter"
        if reason:
            log.info(f"\n=== {name} skipped: {reason}")
            record["results"][name] = {"status": "skipped", "reason": reason}
            write_json(run_dir / "run.json", record)
            continue
        nb_log = run_dir / "logs" / f"{nb.stem}.log"
        log.info(
            f"\n=== {name}  ({', '.join(f'{k}={v!r}' for k, v in nb_params.items())})"
            f"\n=== log: {nb_log}",
        )
        record["results"][name] = {
            "status": "running",
            "started": _now(),
            "parameters": nb_params,
            "log": str(nb_log),
        }
        write_json(run_dir / "run.json", record)
        t0 = time.perf_counter()
        try:
            res = execute.execute(nb, out, nb_params, nb_log, timeout_s=timeout_s)
        except KeyboardInterrupt as e:  # Ctrl-C inside execute carries its result; outside not
            res = (
                e.args[0]
                if e.args and isinstance(e.args[0], dict)
                else {"status": "interrupted", "error": "interrupted (Ctrl-C)"}
            )
        res.setdefault("seconds", round(time.perf_counter() - t0, 1))
        res = {**record["results"][name], **res, "log": str(nb_log)}
        record["results"][name] = res
        record["timings_s"][name] = res["seconds"]
        if res["status"] != OK:
            record["failed"] = name
            record["failure"] = {
                "notebook": name,
                **{
                    k: res[k]
                    for k in ("status", "cell", "cell_index", "cell_source", "error")
                    if k in res
                },
            }
            write_json(run_dir / "run.json", record)
            sys.stderr.write(_failure_message(name, res, out))
            sys.stderr.write(
                f"  continue with: ./run_all.sh --run {run_name} --resume (plus the same options)\n"
            )
            if html:
                _render(run_dir)
            raise SystemExit(130 if res["status"] == "interrupted" else 1)
        log.info(f"=== {name} done in {res['seconds']} s")
        write_json(run_dir / "run.json", record)
    record.pop("failed", None)
    record.pop("failure", None)
    record["finished"] = _now()
    write_json(run_dir / "run.json", record)
    if html:
        _render(run_dir)
    log.info(f"\nrun folder: {run_dir}")
    return run_dir


def list_params(notebooks: list[Path], profile: str | None = None) -> str:
    """Every declared parameter with its default, its help comment and the profile's value."""
    prof = profiles.resolve(profile) if profile else {}
    lines = []
    for nb in notebooks:
        lines.append(nb.name)
        declared = declared_parameters(nb)
        width = min(40, max((len(f"{n} = {i['default']}") for n, i in declared.items()), default=0))
        for n, info in declared.items():
            left = f"{n} = {info['default']}".ljust(width)
            help_ = f"  # {info['help']}" if info.get("help") else ""
            p = ""
            if n in prof and prof[n] != default_value(info):
                p = f"  [profile {profile}: {prof[n]!r}]"
            lines.append(f"  {left}{help_}{p}".rstrip())
        lines.append("")
    return "\n".join(lines)


def parse_duration(text: str) -> float:
    """``"900"``, ``"90s"``, ``"15m"``, ``"2h"`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ValueError(f"--timeout: '{text}' is not a duration like 900, 15m or 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="run_all.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--dataset",
        default="demo",
        help="ham10000 | isic9 | melanoma10k | folder | demo (default: demo); several joined "
        "with +, e.g. ham10000+isic9 (one model on all of them)",
    )
    ap.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the dataset (Kaggle layout); default data/raw/<dataset>",
    )
    ap.add_argument("--profile", default="smoke", choices=sorted(profiles.PROFILES))
    ap.add_argument(
        "--run",
        dest="run_name",
        default=None,
        help="run name: outputs go to runs/<name>/ (default <dataset>-<profile>)",
    )
    ap.add_argument("--only", default=None, help="subset of notebooks, e.g. 01,03-05")
    ap.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="any other notebook parameter; VALUE is a Python literal "
        "(3, 0.5, True, \"['a', 'b']\") or else a string",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue the run --run NAME from its first unfinished notebook",
    )
    ap.add_argument(
        "--timeout",
        default=None,
        metavar="DURATION",
        help="per-notebook limit, e.g. 3600, 90m or 2h (default: none)",
    )
    ap.add_argument(
        "--list-params",
        nargs="?",
        const="",
        default=None,
        metavar="NOTEBOOK",
        help="print the parameters of every notebook (or of one, e.g. 07) "
        "with defaults and help, then exit",
    )
    ap.add_argument(
        "--nnodes",
        type=int,
        default=1,
        help="machines that train notebook 07's model together (torchrun, c10d rendezvous): "
        "the same command on each, with its own --node-rank",
    )
    ap.add_argument(
        "--node-rank",
        type=int,
        default=0,
        help="this machine, 0..nnodes-1; node 0 hosts the rendezvous and writes the results, "
        "the others run 01-05 and 07's training only",
    )
    ap.add_argument(
        "--rdzv-endpoint",
        default="",
        metavar="HOST:PORT",
        help="node 0's address and a free port, reachable from every machine",
    )
    ap.add_argument("--no-html", action="store_true", help="skip the HTML report")
    talk = ap.add_mutually_exclusive_group()
    talk.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only (-p log_level WARNING)"
    )
    talk.add_argument("--verbose", action="store_true", help="debug messages too (log_level DEBUG)")
    args = ap.parse_args(argv)
    extra = {k: parse_value(v) for k, v in args.param}
    if args.quiet or args.verbose:
        extra["log_level"] = "WARNING" if args.quiet else "DEBUG"
    if args.nnodes != 1 or args.node_rank or args.rdzv_endpoint:  # notebook 07's launch
        if not 0 <= args.node_rank < args.nnodes or (
            args.nnodes > 1 and not re.fullmatch(r"[^:\s]+:\d+", args.rdzv_endpoint)
        ):
            print(
                "run_all.sh: error: --nnodes N needs --node-rank 0..N-1 and --rdzv-endpoint "
                f"HOST:PORT (got {args.nnodes}, {args.node_rank}, {args.rdzv_endpoint!r})",
                file=sys.stderr,
            )
            return 2
        extra.update(nnodes=args.nnodes, node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint)
    try:
        nb_dir = Path(os.environ.get("SKINHELPERS_NOTEBOOK_DIR") or NOTEBOOK_DIR)
        if args.list_params is not None:
            only = args.list_params.strip()
            if only and not re.fullmatch(r"[\d,\- ]+", only):
                only = only[:2]  # a notebook name such as 07_final_retrain.ipynb
            print(list_params(select(numbered_notebooks(nb_dir), only or args.only), args.profile))
            return 0
        timeout_s = parse_duration(args.timeout) if args.timeout else None
        run(
            args.dataset,
            args.data_dir,
            args.profile,
            args.run_name,
            args.only,
            extra,
            html=not args.no_html,
            resume=args.resume,
            timeout_s=timeout_s,
        )
    except ValueError as e:  # bad options: say which, no traceback
        print(f"run_all.sh: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
