"""Benchmark 4: wall time of ``run_all.sh``, whole and per notebook.

Runs ``run_all.sh`` with the arguments after ``--`` (each repeat in a fresh run folder),
then reads the per-notebook seconds the pipeline records in ``<run>/run.json``.

    .venv/bin/python benchmarks/bench_wall.py --label demo                    # demo, smoke
    .venv/bin/python benchmarks/bench_wall.py --label ham-smoke -- --dataset ham10000 \\
        --data-dir ../shared/data --profile smoke
    .venv/bin/python benchmarks/bench_wall.py --label ham-cpu -- --dataset ham10000 \\
        --data-dir ../shared/data --profile cpu
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from common import ROOT, save, spread

from skinhelpers.files import read_json


def main() -> None:
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", required=True, help="names the run folders and the result")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    a = ap.parse_args(argv)
    if "--run" in rest:
        raise SystemExit("bench_wall.py names the run folders itself; drop --run")
    walls, per_nb = [], []
    for r in range(a.repeats):
        name = f"bench-{a.label}-{r}"
        run_dir = ROOT / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = ["bash", str(ROOT / "run_all.sh"), *rest, "--run", name]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        walls.append(time.perf_counter() - t0)
        if rc != 0:
            raise SystemExit(f"run_all.sh failed (exit {rc}); see {run_dir}")
        per_nb.append(read_json(run_dir / "run.json")["timings_s"])
        print(f"repeat {r + 1}: {walls[-1]:.0f} s", flush=True)
        if not a.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    notebooks = {nb: spread([t[nb] for t in per_nb]) for nb in per_nb[0]}
    save(f"wall_{a.label}", {"args": rest, "wall_s": spread(walls), "notebooks_s": notebooks})


if __name__ == "__main__":
    main()
