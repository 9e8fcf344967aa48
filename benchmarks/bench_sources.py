"""Benchmark 23: a model of one source against a model of several, on the same test images.

Issue 23's numbers (a) and (b). Run A trained on HAM10000 alone and scored the ISIC 9-class
images that are not HAM10000 copies in notebook 09 (``predictions_external_isic9.csv``);
run B trained on ``ham10000+isic9`` and holds a share of those ISIC images in its test
split. This pairs them on the images both scored, nothing retrained or re-predicted:

* per source of B's test split (HAM10000's own test split, which B keeps as A had it; the
  ISIC share): melanoma-vs-rest AUC and the balanced accuracy over the classes with at
  least ``--min-class`` (20) images there, for A and B, with B - A and a paired bootstrap
  interval that resamples the lesions (stratified by class);
* for A alone, the same two numbers over every ISIC non-copy (its notebook 09).

The scores are the balanced scores both notebooks save (the raw softmax). Saved as
``results/sources[_LABEL].json``.

    .venv/bin/python benchmarks/bench_sources.py runs/ham-a runs/multi-b --label ab
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from common import save

from skinhelpers.evaluate import by_source, scores


def _probs(df: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return df[[f"p_{c}" for c in classes]].to_numpy(dtype=float)


def metric_fns(y: np.ndarray, classes: list[str], min_class: int, positive: str) -> dict:
    """Melanoma-vs-rest AUC and the balanced accuracy over the classes ``y`` holds at least
    ``min_class`` images of (a class of two images says nothing and is not averaged)."""
    big = by_source.large_classes(y, len(classes), min_class)
    pos = classes.index(positive)
    bal = by_source.balanced_accuracy_over(big)

    def auc(yy, pp):
        from sklearn.metrics import roc_auc_score

        t = yy == pos
        return float(roc_auc_score(t, pp[:, pos])) if 0 < t.sum() < len(t) else float("nan")

    name = "balanced_accuracy_" + "_".join(classes[k] for k in big)
    return {f"{positive}_auc": auc, name: bal}


def paired(y, pa, pb, groups, classes, min_class, positive, n_bootstrap, seed) -> pd.DataFrame:
    fns = metric_fns(y, classes, min_class, positive)
    t = scores.paired_bootstrap_diff(
        y, pa, pb, fns, n_bootstrap=n_bootstrap, seed=seed, groups=groups
    )
    return t.assign(n_images=len(y), n_lesions=len(set(groups)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path, help="one source, with 09's external predictions")
    ap.add_argument("run_b", type=Path, help="several sources")
    ap.add_argument("--external", default="isic9", help="the second source's name")
    ap.add_argument("--positive", default="mel")
    ap.add_argument("--min-class", type=int, default=20)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    ext = a.external
    pa_ham = pd.read_csv(a.run_a / "predictions_test.csv")
    pa_ext = pd.read_csv(a.run_a / f"predictions_external_{ext}.csv")
    pa_ext = pa_ext[~pa_ext["overlap"].astype(bool)]  # copies of HAM10000 images: never scored
    pb = pd.read_csv(a.run_b / "predictions_test.csv")
    classes = [c[2:] for c in pb.columns if c.startswith("p_")]
    if [c[2:] for c in pa_ham.columns if c.startswith("p_")] != classes:
        raise SystemExit("the two runs' classes differ: nothing to pair")
    first = pb["relpath"].str.split("/", n=1).str[0]
    rows, record = [], {"run_a": str(a.run_a), "run_b": str(a.run_b), "sources": {}}
    # A's own names: HAM10000 relpaths bare, the external set's under its own folder
    for source, a_frame in (("ham10000", pa_ham), (ext, pa_ext)):
        b_part = pb[first == source].copy()
        b_part["key"] = b_part["relpath"].str.split("/", n=1).str[1]
        both = b_part.merge(a_frame, left_on="key", right_on="relpath", suffixes=("_b", "_a"))
        if not len(both):
            raise SystemExit(f"no {source} test image of {a.run_b} was scored by {a.run_a}")
        y = both["label_b"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        pa = both[[f"p_{c}_a" for c in classes]].to_numpy(dtype=float)
        pbb = both[[f"p_{c}_b" for c in classes]].to_numpy(dtype=float)
        groups = both["group_b"].astype(str).to_numpy()
        t = paired(y, pa, pbb, groups, classes, a.min_class, a.positive, a.n_bootstrap, a.seed)
        print(f"\n{source}: {len(both):,} test images of B that A scored "
              f"({int((first == source).sum()):,} in B's test split)")  # fmt: skip
        print(t.round(4).to_string())
        record["sources"][source] = {
            "n_b_test": int((first == source).sum()),
            "classes": {c: int((y == i).sum()) for i, c in enumerate(classes) if (y == i).any()},
            "paired": t.reset_index().to_dict(orient="records"),
            "bootstrap_unit": t.attrs.get("bootstrap_unit"),
        }
        rows.append(t.assign(source=source))
    # A alone over every external non-copy (its chapter 09), with the group bootstrap
    y = pa_ext["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    fns = metric_fns(y, classes, a.min_class, a.positive)
    alone = scores.bootstrap_ci(
        y, _probs(pa_ext, classes), fns, a.n_bootstrap, a.seed, groups=pa_ext["group"].astype(str)
    )
    print(f"\nA on every {ext} non-copy ({len(pa_ext):,} images):")
    print(alone.round(4).to_string())
    record["a_on_all_external"] = {
        "n": len(pa_ext),
        "classes": {c: int((y == i).sum()) for i, c in enumerate(classes) if (y == i).any()},
        "metrics": alone.reset_index().to_dict(orient="records"),
    }
    save(f"sources{'_' + a.label if a.label else ''}", record)


if __name__ == "__main__":
    main()
