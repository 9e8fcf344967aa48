"""Benchmark 6: run-to-run spread of training, the same split trained with several seeds.

Each seed gets its own run folder holding a copy of the source run's data decisions
(manifest, split, preprocessing and augmentation choices, 06's best config: small CSV and
JSON files, never images), then notebooks 07-08 run there with ``seed`` set and any ``-p``
overrides (a shorter budget than the profile's when an hour per seed is too long). The
split stays the source run's, so only training randomness (initial head, sampling,
augmentation, dropout) varies. Test metrics come from each run's ``metrics.json``.

    .venv/bin/python benchmarks/bench_seeds.py --source runs/ham-cpu-v2 --dataset ham10000 \\
        --data-dir ../shared/data --seeds 0,1,2 -p epochs 4 -p tta_views 1 -p n_bootstrap 200
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from common import ROOT, pipeline_args, save

from skinhelpers.files import read_json
from skinhelpers.run import pipeline

# what notebooks 01-06 leave in a run folder and 07-08 read
DATA_DECISIONS = (
    "manifest.csv",
    "manifest.json",
    "split.csv",
    "split.json",
    "preprocessing.json",
    "augmentation.json",
    "best_config.json",
    "validation_findings.csv",
    "near_duplicates.csv",
    "quality.csv",
    "image_info.csv",
)
METRICS = ("balanced_accuracy", "f1_macro", "roc_auc_macro_ovr")


def prepare(source: Path, dest: Path) -> None:
    if not (source / "split.csv").exists():
        raise SystemExit(f"{source} has no split.csv: run notebooks 01-05 there first")
    dest.mkdir(parents=True, exist_ok=True)
    for name in DATA_DECISIONS:
        if (source / name).exists():
            shutil.copy2(source / name, dest / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, help="a run folder where 01-06 have run")
    ap.add_argument("--dataset", default="ham10000")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", default="07-08")
    ap.add_argument("--label", default="short", help="names the run folders and the result")
    ap.add_argument("--out", default=str(ROOT / "runs"), help="where the seed runs go")
    ap.add_argument(
        "-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    a = ap.parse_args()
    source = Path(a.source).resolve()
    extra = pipeline_args(a.param)
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        dest = Path(a.out).resolve() / f"{source.name}-{a.label}-seed{seed}"
        prepare(source, dest)
        t0 = time.perf_counter()
        pipeline.run(
            a.dataset,
            a.data_dir,
            a.profile,
            str(dest),
            only=a.only,
            extra={**extra, "seed": seed},
            html=False,
        )
        row = {"seed": seed, "run_dir": str(dest), "wall_s": round(time.perf_counter() - t0, 1)}
        hist = dest / "history.csv"
        if hist.exists():
            import pandas as pd

            h = pd.read_csv(hist)
            row["epochs_run"] = int(h["epoch"].max())
            row["best_val_balanced_accuracy"] = float(h["val_balanced_accuracy"].max())
        mpath = dest / "metrics.json"
        if mpath.exists():
            m = read_json(mpath)
            primary = m["primary"]
            row["primary"] = primary
            row.update({f"test_{k}": m["models"][primary]["metrics"][k] for k in METRICS})
            pos = m.get("positive_class") or {}
            if pos.get("auc") is not None:
                row["test_positive_auc"] = (
                    pos["auc"]["value"] if isinstance(pos["auc"], dict) else pos["auc"]
                )
        rows.append(row)
        print({k: v for k, v in row.items() if k != "run_dir"}, flush=True)
    summary = {}
    for k in rows[0]:
        vals = [r[k] for r in rows if isinstance(r.get(k), float)]
        if k.startswith(("test_", "best_val")) and len(vals) == len(rows):
            summary[k] = {
                "mean": statistics.mean(vals),
                "min": min(vals),
                "max": max(vals),
                "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            }
    for k, v in summary.items():
        print(f"{k}: mean {v['mean']:.3f}, range {v['min']:.3f}-{v['max']:.3f}, sd {v['sd']:.3f}")
    save(
        f"seeds_{a.label}",
        {
            "source": str(source),
            "profile": a.profile,
            "params": extra,
            "rows": rows,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
