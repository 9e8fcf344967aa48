"""Results per source (notebook 08, and notebook 09's external set): a model trained on
several datasets is judged on each, since a good average can hide a poor source.

For each source of the test split: images and lesions, the **balanced accuracy over the
classes the source holds at least** ``min_class_n`` **test images of** (a class of two
images says nothing: it is shown with its recall, not averaged), the recall of every class,
the melanoma (positive class) ROC-AUC, and sensitivity / specificity at the operating
points chosen on validation. Intervals as everywhere in the suite: the bootstrap resamples
lesions (the split's groups) for the balanced accuracy and the AUC, and Wilson intervals
(counting lesions) give sensitivity and specificity
(:func:`skinhelpers.evaluate.thresholds.operating_point_ci`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skinhelpers.evaluate import bootstrap
from skinhelpers.evaluate.thresholds import operating_point_ci

log = logging.getLogger(__name__)

#: a class needs this many test images of a source to enter that source's balanced accuracy
MIN_CLASS_N = 20


def large_classes(y: np.ndarray, n_classes: int, min_class_n: int = MIN_CLASS_N) -> list[int]:
    """The class indices with at least ``min_class_n`` images in ``y``."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)
    return [int(c) for c in np.flatnonzero(counts >= min_class_n)]


def balanced_accuracy_over(classes: Sequence[int]):
    """``f(y, probs)``: the mean recall over ``classes`` (those present in ``y``)."""
    keep = list(classes)

    def f(y, p):
        pred = p.argmax(1)
        rec = [(pred[y == c] == c).mean() for c in keep if (y == c).any()]
        return float(np.mean(rec)) if rec else float("nan")

    return f


def source_results(
    y,
    probs,
    classes: Sequence[str],
    groups=None,
    pos: int | None = None,
    thresholds: Sequence[tuple[str, float]] = (),
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_class_n: int = MIN_CLASS_N,
) -> dict:
    """The numbers of one source's test images (JSON-ready); see the module docstring."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    big = large_classes(y, len(classes), min_class_n)
    counts = np.bincount(y, minlength=len(classes))
    pred = probs.argmax(1)
    out: dict = {
        "n_images": int(len(y)),
        "n_lesions": int(len(set(groups))) if groups is not None else int(len(y)),
        "classes_averaged": [classes[c] for c in big],
        "class_counts": {classes[c]: int(n) for c, n in enumerate(counts) if n},
        "recall": {
            classes[c]: float((pred[y == c] == c).mean()) for c in range(len(classes)) if counts[c]
        },
    }
    fns = {}
    if big:
        fns["balanced_accuracy"] = balanced_accuracy_over(big)
    if pos is not None and 0 < (y == pos).sum() < len(y):
        fns["melanoma_auc"] = lambda yy, p: skm.roc_auc_score(yy == pos, p[:, pos])
    if fns:
        t = bootstrap.bootstrap_ci(y, probs, fns, n_bootstrap, seed, groups=groups)
        out.update(bootstrap.ci_dict(t))
    if pos is not None and 0 < (y == pos).sum() < len(y):
        ops = []
        for name, thr in thresholds:
            ci = operating_point_ci(y == pos, probs[:, pos], thr, groups)
            ops.append({"name": name, "threshold": float(thr), **ci})
        out["operating_points"] = ops
        out["n_pos"], out["n_neg"] = int((y == pos).sum()), int((y != pos).sum())
    return out


def per_source(
    test_df: pd.DataFrame,
    probs,
    classes: Sequence[str],
    pos: int | None = None,
    thresholds: Sequence[tuple[str, float]] = (),
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_class_n: int = MIN_CLASS_N,
    source_col: str = "source",
) -> dict[str, dict]:
    """:func:`source_results` for every source of ``test_df`` (rows aligned with ``probs``;
    ``label_idx`` and ``group`` columns), in run order."""
    probs = np.asarray(probs)
    out = {}
    for name in dict.fromkeys(test_df[source_col]):
        m = (test_df[source_col] == name).to_numpy()
        sub = test_df[m]
        out[str(name)] = source_results(
            sub["label_idx"].to_numpy(),
            probs[m],
            classes,
            sub["group"].astype(str).to_numpy() if "group" in sub else None,
            pos,
            thresholds,
            n_bootstrap,
            seed,
            min_class_n,
        )
    return out


def source_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per source: counts, balanced accuracy (classes averaged), melanoma AUC and
    each operating point's sensitivity / specificity, as ``value (low-high)`` strings."""

    def fmt(d):
        return f"{d['value']:.3f} ({d['ci_low']:.3f}-{d['ci_high']:.3f})"

    rows = {}
    for name, r in results.items():
        row = {
            "images": r["n_images"],
            "lesions": r["n_lesions"],
            "classes averaged": ", ".join(r["classes_averaged"]) or "none (all < min)",
            "balanced accuracy": fmt(r["balanced_accuracy"]) if "balanced_accuracy" in r else "–",
            "melanoma AUC": fmt(r["melanoma_auc"]) if "melanoma_auc" in r else "–",
        }
        for op in r.get("operating_points", []):
            row[f"sensitivity @ {op['name']}"] = fmt(op["sensitivity"])
            row[f"specificity @ {op['name']}"] = fmt(op["specificity"])
        rows[name] = row
    return pd.DataFrame(rows).T


def recall_table(results: dict[str, dict]) -> pd.DataFrame:
    """Recall of every class per source, with the class's test images: ``0.57 (n=54)``."""
    rows = {}
    for name, r in results.items():
        rows[name] = {c: f"{r['recall'][c]:.2f} (n={n})" for c, n in r["class_counts"].items()}
    return pd.DataFrame(rows).T.fillna("–")


__all__ = [
    "MIN_CLASS_N",
    "balanced_accuracy_over",
    "large_classes",
    "per_source",
    "recall_table",
    "source_results",
    "source_table",
]
