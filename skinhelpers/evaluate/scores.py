"""Evaluation on a held-out split: the metrics of one set of predictions (headline metrics
with bootstrap CIs, per class, the confusion matrix) and the per-image prediction table;
their pictures are in :mod:`skinhelpers.evaluate.score_plots`. The resampling and intervals
are in :mod:`skinhelpers.evaluate.bootstrap`, the clinical operating points in
:mod:`skinhelpers.evaluate.thresholds`, calibration in :mod:`skinhelpers.evaluate.calibration`.

Every metric comes from :mod:`sklearn.metrics`; this module only chooses and combines.
Inputs are NumPy arrays: ``y`` the true class indices ``(N,)``, ``probs`` the predicted
probabilities ``(N, C)`` (rows sum to one). Binary problems are ``C == 2`` with the positive
class given by index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skinhelpers.evaluate.bootstrap import bootstrap_ci, ci_dict
from skinhelpers.model.metrics import check_predictions, classification_metrics

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- metrics
# All metrics of a split come from the one metrics function,
# :func:`skinhelpers.model.metrics.classification_metrics` (the trainer's validation uses it
# too). Averages follow scikit-learn's default: over the classes that occur in y or in the
# predictions (a class with no test image and never predicted is left out, not scored 0).


def per_class_report(y, probs, classes: Sequence[str]) -> pd.DataFrame:
    """One row per class: precision, recall (sensitivity), F1, support, one-vs-rest
    ROC-AUC and average precision (PR-AUC), specificity. Undefined values (a class with
    no test image, or never predicted) are NaN, not 0."""
    y, probs = check_predictions(y, probs)
    pred = probs.argmax(1)
    p, r, f, s = skm.precision_recall_fscore_support(
        y, pred, labels=list(range(probs.shape[1])), zero_division=np.nan
    )
    cm = skm.confusion_matrix(y, pred, labels=list(range(probs.shape[1])))
    rows = []
    for c, name in enumerate(classes):
        pos = y == c
        both = 0 < pos.sum() < len(y)
        tn = cm.sum() - cm[c, :].sum() - cm[:, c].sum() + cm[c, c]
        fp = cm[:, c].sum() - cm[c, c]
        rows.append(
            {
                "class": name,
                "support": int(s[c]),
                "precision": float(p[c]),
                "recall": float(r[c]),
                "f1": float(f[c]),
                "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
                "roc_auc": float(skm.roc_auc_score(pos, probs[:, c])) if both else float("nan"),
                "pr_auc": float(skm.average_precision_score(pos, probs[:, c]))
                if both
                else float("nan"),
            }
        )
    return pd.DataFrame(rows).set_index("class")


def confusion(y, probs, normalize: str | None = None) -> np.ndarray:
    """Confusion matrix (rows: true, columns: predicted); ``normalize='true'`` for recall."""
    y, probs = check_predictions(y, probs)
    return skm.confusion_matrix(
        y, probs.argmax(1), labels=list(range(probs.shape[1])), normalize=normalize
    )


# ----------------------------------------------------------------------------- tables


def evaluate_predictions(
    y,
    probs,
    classes: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    desc: str | None = None,
    groups=None,
) -> dict:
    """Everything for one set of test predictions, JSON-ready: ``metrics`` (all of
    :func:`classification_metrics`), ``headline`` (:data:`HEADLINE` with bootstrap CIs,
    resampling ``groups``, the lesions; ``None``: images), ``per_class``
    (:func:`per_class_report` as a dict) and ``bootstrap`` (``bootstrap_unit``,
    ``n_units``, ``n_bootstrap``)."""
    table = bootstrap_ci(y, probs, n_bootstrap=n_bootstrap, seed=seed, desc=desc, groups=groups)
    return {
        "metrics": classification_metrics(y, probs),
        "headline": ci_dict(table),
        "per_class": per_class_report(y, probs, classes).to_dict(orient="index"),
        "bootstrap": {**table.attrs, "n_bootstrap": int(n_bootstrap)},
    }


def headline_table(results: dict[str, dict]) -> pd.DataFrame:
    """``{name: evaluate_predictions(...)}`` -> one row per name, "value (low-high)" cells."""
    rows = {}
    for name, r in results.items():
        rows[name] = {
            k: f"{v['value']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})"
            for k, v in r["headline"].items()
        }
    return pd.DataFrame(rows).T


def prediction_frame(df: pd.DataFrame, probs, classes: Sequence[str]) -> pd.DataFrame:
    """``image_id, relpath, label, p_<class>..., pred, confidence, correct`` per image, and
    ``group`` (the lesion, what the bootstrap resamples) last when ``df`` has it."""
    probs = np.asarray(probs)
    out = df[["image_id", "relpath", "label"]].reset_index(drop=True).copy()
    for i, c in enumerate(classes):
        out[f"p_{c}"] = probs[:, i]
    out["pred"] = [classes[i] for i in probs.argmax(1)]
    out["confidence"] = probs.max(1)
    out["correct"] = out["pred"] == out["label"]
    if "group" in df.columns:
        out["group"] = df["group"].astype(str).to_numpy()
    return out


def worst_errors(pred: pd.DataFrame, classes: Sequence[str], k: int = 12) -> pd.DataFrame:
    """The ``k`` wrong predictions made with the highest confidence, with the
    probability the model gave to the true class."""
    wrong = pred[~pred["correct"]].copy()
    wrong["p_true"] = [row[f"p_{row['label']}"] for _, row in wrong.iterrows()]
    return wrong.sort_values("confidence", ascending=False).head(k)


__all__ = [
    "per_class_report",
    "confusion",
    "evaluate_predictions",
    "headline_table",
    "prediction_frame",
    "worst_errors",
]
