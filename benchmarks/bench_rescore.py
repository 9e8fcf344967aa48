"""Benchmark 14: re-score finished runs with the group (lesion) bootstrap, beside the image
bootstrap their intervals were first written with.

Until the bootstrap resampled lesions, every interval of notebook 08 (and of
``benchmarks/RESULTS.md``) resampled test *images*: HAM10000's test split holds 1,430
images of 1,066 lesions, so those intervals counted a lesion's images as independent and
came out too narrow. This reads each run's ``predictions_test.csv`` (its lesions from the
CSV's ``group`` column or, for a run evaluated before it had one, the run's
``split.csv``), bootstraps the headline metrics (and melanoma vs rest AUC when the run has
a ``mel`` class) both ways with the same number of resamples, and prints the two
intervals side by side with the ratio of their widths; saved as
``results/rescore[_LABEL].json``. Nothing is retrained or re-predicted.

    .venv/bin/python benchmarks/bench_rescore.py runs/ham-cpu-seed0 runs/ham-cpu-seed1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from common import save, test_predictions, unit_note

from skinhelpers.evaluate import bootstrap, thresholds


def rescore(run: Path, n_bootstrap: int, seed: int, positive: str) -> tuple[pd.DataFrame, dict]:
    """One run: ``(table, record)``, the table one row per metric with the value, the image
    and the group interval and the width ratio (group / image)."""
    _, y, probs, classes, groups, source = test_predictions(run)
    if groups is None:
        raise SystemExit(f"{run}: {unit_note(None, source)}: nothing to re-score by lesion")
    tables = {
        unit: bootstrap.bootstrap_ci(y, probs, n_bootstrap=n_bootstrap, seed=seed, groups=g)
        for unit, g in (("image", None), ("group", groups))
    }
    if positive in classes:
        k = classes.index(positive)
        yb, p2 = (y == k).astype(int), np.stack([1 - probs[:, k], probs[:, k]], 1)
        auc = {"auc": thresholds.binary_auc_fns()["auc"]}
        for unit, g in (("image", None), ("group", groups)):
            t = bootstrap.bootstrap_ci(yb, p2, auc, n_bootstrap, seed, groups=g)
            tables[unit] = pd.concat([tables[unit], t.rename(index={"auc": f"{positive}_auc"})])
    img, grp = tables["image"], tables["group"]
    table = pd.DataFrame(
        {
            "value": grp["value"],
            "image_ci_low": img["ci_low"],
            "image_ci_high": img["ci_high"],
            "group_ci_low": grp["ci_low"],
            "group_ci_high": grp["ci_high"],
        }
    )
    table["width_ratio"] = (table["group_ci_high"] - table["group_ci_low"]) / (
        table["image_ci_high"] - table["image_ci_low"]
    )
    record = {
        "run": str(run),
        "images": int(len(y)),
        "groups": int(len(set(groups))),
        "groups_from": source,
        "metrics": {k: {c: float(v) for c, v in r.items()} for k, r in table.iterrows()},
    }
    return table, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders where notebook 08 has run")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--positive", default="mel", help="class for the 'vs rest' AUC")
    ap.add_argument("--label", default="", help="save as results/rescore_LABEL.json")
    a = ap.parse_args()
    records = []
    for run in a.runs:
        table, rec = rescore(run, a.n_bootstrap, a.seed, a.positive)
        print(
            f"\n{run}: {rec['images']:,} test images of {rec['groups']:,} lesions (groups from "
            f"{rec['groups_from']}); {a.n_bootstrap} resamples, 95% intervals:"
        )
        with pd.option_context("display.width", 160):
            print(table.round(4).to_string())
        records.append(rec)
    save(
        f"rescore_{a.label}" if a.label else "rescore",
        {"n_bootstrap": a.n_bootstrap, "seed": a.seed, "runs": records},
    )


if __name__ == "__main__":
    main()
