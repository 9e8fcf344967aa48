"""Benchmark 13: what averaging the test predictions of whole runs gives.

Each run folder's notebook 08 writes ``predictions_test.csv`` (the reported model's
probabilities with 8-view TTA). This averages the probabilities of several runs on the
same test images (an ensemble of independently trained models: N times the training
time) and scores the mean against the first run alone with a paired bootstrap, or
against another run given with ``--against`` (e.g. one model trained as long as the
ensemble's members together). The runs must share the test split image for image (same
dataset, split seed and classes). The bootstrap resamples the test lesions (the reference
run's ``group`` column, or its ``split.csv``); with neither, images, and it says so.

    .venv/bin/python benchmarks/bench_run_ensemble.py runs/ham-cpu-square runs/ham-cpu-native
    .venv/bin/python benchmarks/bench_run_ensemble.py runs/half-seed0 runs/half-seed1 \
        --against runs/ham-cpu-square --label half
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from common import save, unit_note
from sklearn.metrics import balanced_accuracy_score

from skinhelpers.evaluate import bootstrap
from skinhelpers.evaluate.compare import prediction_groups


def read_predictions(run: Path) -> pd.DataFrame:
    path = run / "predictions_test.csv"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run notebook 08 in {run} first")
    return pd.read_csv(path).set_index("image_id")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="two or more run folders")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--against", type=Path, help="score against this run (default: the first)")
    ap.add_argument("--label", default="", help="save as results/run_ensemble_LABEL.json")
    a = ap.parse_args()
    if len(a.runs) < 2:
        raise SystemExit("give at least two run folders")
    frames = [read_predictions(r) for r in a.runs]
    against = a.against or a.runs[0]
    ref = read_predictions(against) if a.against else frames[0]
    cols = [c for c in ref.columns if c.startswith("p_")]
    for run, f in zip(a.runs, frames):
        if set(f.index) != set(ref.index):
            raise SystemExit(f"{run}: its test images differ from {against}'s")
        if [c for c in f.columns if c.startswith("p_")] != cols:
            raise SystemExit(f"{run}: its classes differ from {against}'s")
        if not (f.loc[ref.index, "label"] == ref["label"]).all():
            raise SystemExit(f"{run}: its labels differ from {against}'s")
    classes = [c[2:] for c in cols]
    y = ref["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    probs = [f.loc[ref.index, cols].to_numpy(dtype=np.float64) for f in frames]
    mean = np.mean(probs, axis=0)
    p_ref = ref[cols].to_numpy(dtype=np.float64)
    members = {
        str(r): float(balanced_accuracy_score(y, p.argmax(1))) for r, p in zip(a.runs, probs)
    }
    for r, v in members.items():
        print(f"{r}: test balanced accuracy {v:.4f}")
    groups, source = (None, "none")
    if "group" in ref.columns or "relpath" in ref.columns:
        g, source = prediction_groups(ref.reset_index(), against)
        groups = None if g is None else g.to_numpy()
    print(unit_note(groups, source))
    d = bootstrap.paired_bootstrap_diff(
        y, p_ref, mean, n_bootstrap=a.n_bootstrap, desc=None, groups=groups
    )
    print(f"mean of {len(probs)} runs minus {against}, paired ({len(y)} test images):")
    print(d.round(4).to_string())
    save(
        f"run_ensemble_{a.label}" if a.label else "run_ensemble",
        {
            "runs": [str(r) for r in a.runs],
            "against": str(against),
            "n_test": len(y),
            **d.attrs,
            "members_balanced_accuracy": members,
            "paired_mean_minus_against": {
                k: {c: float(v) for c, v in row.items()} for k, row in d.to_dict("index").items()
            },
        },
    )


if __name__ == "__main__":
    main()
