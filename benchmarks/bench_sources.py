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

Run B may also be a second one-source run (a lever of number a, or number c: trained on
HAM10000 only, scoring every non-copy in its notebook 09): then the two are paired on
HAM10000's test split and on every non-copy, and B alone is scored like A. When both runs
trained on several sources (a lever of number b, e.g. ``source_balance_power``, on the same
split), they are paired per source on the test images both scored in chapter 08.

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

from skinhelpers.evaluate import bootstrap, by_source


def _probs(df: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return df[[f"p_{c}" for c in classes]].to_numpy(dtype=float)


def _non_copies(df: pd.DataFrame) -> pd.DataFrame:
    """The external images that are not copies of the training source's (never scored)."""
    return df[~df["overlap"].astype(bool)]


def _several_sources(run: Path) -> bool:
    """Whether ``run`` trained on several sources (its manifest has a 'source' column with
    more than one value)."""
    if not (run / "manifest.csv").exists():  # predictions alone: scored as one source
        return False
    man = pd.read_csv(run / "manifest.csv", usecols=lambda c: c == "source")
    return "source" in man.columns and man["source"].nunique() > 1


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
    t = bootstrap.paired_bootstrap_diff(
        y, pa, pb, fns, n_bootstrap=n_bootstrap, seed=seed, groups=groups
    )
    return t.assign(n_images=len(y), n_lesions=len(set(groups)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path, help="one source, with 09's external predictions")
    ap.add_argument("run_b", type=Path, help="several sources, or one with 09's predictions")
    ap.add_argument("--external", default="isic9", help="the second source's name")
    ap.add_argument("--positive", default="mel")
    ap.add_argument("--min-class", type=int, default=20)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    ext = a.external
    pa_ham = pd.read_csv(a.run_a / "predictions_test.csv")
    pb = pd.read_csv(a.run_b / "predictions_test.csv")
    both_several = _several_sources(a.run_a)
    if both_several and not _several_sources(a.run_b):
        raise SystemExit("run A trained on several sources: give it as run B, or both so")
    pa_ext = (
        None
        if both_several
        else _non_copies(pd.read_csv(a.run_a / f"predictions_external_{ext}.csv"))
    )
    classes = [c[2:] for c in pb.columns if c.startswith("p_")]
    if [c[2:] for c in pa_ham.columns if c.startswith("p_")] != classes:
        raise SystemExit("the two runs' classes differ: nothing to pair")
    several = _several_sources(a.run_b)
    rows, record = [], {"run_a": str(a.run_a), "run_b": str(a.run_b), "sources": {}}
    record["b_sources"] = "several" if several else "one"
    record["a_sources"] = "several" if both_several else "one"
    first = pb["relpath"].str.split("/", n=1).str[0]  # a several-source relpath's source
    if both_several:  # the same split: pair chapter 08's test predictions per source
        pairs = [
            (source, pa_ham, pb[first == source].assign(key=lambda d: d["relpath"]), n)
            for source, n in first.value_counts(sort=False).items()
        ]
    elif several:  # B's relpaths carry their source; A's HAM10000 relpaths are bare
        pairs = []
        for source, a_frame in (("ham10000", pa_ham), (ext, pa_ext)):
            b_part = pb[first == source].copy()
            b_part["key"] = b_part["relpath"].str.split("/", n=1).str[1]
            pairs.append((source, a_frame, b_part, int((first == source).sum())))
    else:  # a lever of (a): both trained on one source, both scored every non-copy (09)
        pb_ext = _non_copies(pd.read_csv(a.run_b / f"predictions_external_{ext}.csv"))
        pairs = [
            (source, a_frame, b_frame.assign(key=b_frame["relpath"]), len(b_frame))
            for source, a_frame, b_frame in (("ham10000", pa_ham, pb), (ext, pa_ext, pb_ext))
        ]
    for source, a_frame, b_part, n_b in pairs:
        both = b_part.merge(a_frame, left_on="key", right_on="relpath", suffixes=("_b", "_a"))
        if not len(both):
            raise SystemExit(f"no {source} test image of {a.run_b} was scored by {a.run_a}")
        y = both["label_b"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        pa = both[[f"p_{c}_a" for c in classes]].to_numpy(dtype=float)
        pbb = both[[f"p_{c}_b" for c in classes]].to_numpy(dtype=float)
        groups = both["group_b"].astype(str).to_numpy()
        t = paired(y, pa, pbb, groups, classes, a.min_class, a.positive, a.n_bootstrap, a.seed)
        print(f"\n{source}: {len(both):,} test images of B that A scored ({n_b:,} B scored)")
        print(t.round(4).to_string())
        record["sources"][source] = {
            "n_b_test": n_b,
            "classes": {c: int((y == i).sum()) for i, c in enumerate(classes) if (y == i).any()},
            "paired": t.reset_index().to_dict(orient="records"),
            "bootstrap_unit": t.attrs.get("bootstrap_unit"),
        }
        rows.append(t.assign(source=source))
    # each one-source model alone over every external non-copy (its chapter 09), with the
    # group bootstrap: A always, B when it too trained on one source (leave-one-source-out)
    alone_runs = [] if both_several else [("a", a.run_a, pa_ext)]
    alone_runs += [] if several else [("b", a.run_b, pb_ext)]
    for key, run, frame in alone_runs:
        y = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        fns = metric_fns(y, classes, a.min_class, a.positive)
        alone = bootstrap.bootstrap_ci(
            y, _probs(frame, classes), fns, a.n_bootstrap, a.seed, groups=frame["group"].astype(str)
        )
        print(f"\n{key.upper()} ({run}) on every {ext} non-copy ({len(frame):,} images):")
        print(alone.round(4).to_string())
        record[f"{key}_on_all_external"] = {
            "n": len(frame),
            "classes": {c: int((y == i).sum()) for i, c in enumerate(classes) if (y == i).any()},
            "metrics": alone.reset_index().to_dict(orient="records"),
        }
    save(f"sources{'_' + a.label if a.label else ''}", record)


if __name__ == "__main__":
    main()
