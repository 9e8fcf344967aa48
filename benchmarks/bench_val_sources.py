"""Benchmark 23b: validation per source, for choosing a several-source run's settings.

A run of several datasets validates on one pooled split, where the largest source sets the
number (HAM10000 is 1,430 of the 1,526 validation images of ``ham10000+isic9``): a setting
that serves the small source better can lose there. This scores each run's checkpoint on
its own validation images (1 view, the raw balanced scores) and reports, per source, the
balanced accuracy over the classes the source holds at least ``--min-class`` validation
images of and the melanoma AUC, then their means over the sources (each source weighs the
same). Validation only: no test image is read. Saved as ``results/val_sources[_LABEL].json``.

    .venv/bin/python benchmarks/bench_val_sources.py runs/multi-b2 runs/multi-sbp0 --label sbp
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from bench_sources import metric_fns
from common import save

from skinhelpers.evaluate import by_source
from skinhelpers.evaluate.predict import predict_images


def validation_by_source(run: Path, checkpoint: str, min_class: int, positive: str) -> dict:
    man = pd.read_csv(run / "manifest.csv", usecols=["relpath", "path", "source"])
    split = pd.read_csv(run / "split.csv")
    val = split[split["split"] == "val"].merge(man, on="relpath", how="left")
    if val["path"].isna().any():
        raise SystemExit(f"{run}: validation images missing from manifest.csv")
    # prior "equal": the raw balanced scores, whose argmax is the model's decision (as 08's
    # predictions_test.csv and bench_sources.py read them)
    ckpt = run / "checkpoints" / checkpoint
    pred = predict_images(ckpt, list(val["path"]), prior="equal", show_progress=True)
    if len(pred) != len(val):
        raise SystemExit(f"{run}: {len(val) - len(pred)} validation images could not be read")
    classes = [c[2:] for c in pred.columns if c.startswith("p_")]
    y_all = val["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    probs_all = pred[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    out: dict = {"checkpoint": checkpoint, "sources": {}}
    for source in sorted(val["source"].unique()):
        m = (val["source"] == source).to_numpy()
        y, p = y_all[m], probs_all[m]
        # the two numbers bench_sources.py pairs: melanoma AUC, balanced accuracy over the
        # classes with at least min_class images here
        auc_fn, bal_fn = metric_fns(y, classes, min_class, positive).values()
        out["sources"][source] = {
            "n": int(m.sum()),
            "classes": [classes[k] for k in by_source.large_classes(y, len(classes), min_class)],
            "balanced_accuracy": bal_fn(y, p),
            f"{positive}_auc": auc_fn(y, p),
        }
    rows = out["sources"].values()
    out["mean_over_sources"] = {
        "balanced_accuracy": float(np.nanmean([r["balanced_accuracy"] for r in rows])),
        f"{positive}_auc": float(np.nanmean([r[f"{positive}_auc"] for r in rows])),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="several-source run folders (07 done)")
    ap.add_argument("--checkpoint", default="best_ema.pt")
    ap.add_argument("--positive", default="mel")
    ap.add_argument("--min-class", type=int, default=20)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    record = {"runs": {}}
    for run in a.runs:
        res = validation_by_source(run, a.checkpoint, a.min_class, a.positive)
        record["runs"][str(run)] = res
        table = pd.DataFrame(res["sources"]).T.drop(columns="classes")
        table.loc["mean over sources"] = pd.Series(res["mean_over_sources"])
        print(f"\n{run} ({a.checkpoint}), validation:")
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    save(f"val_sources{'_' + a.label if a.label else ''}", record)


if __name__ == "__main__":
    main()
