"""The one metrics function, :func:`classification_metrics`, used by the trainer's
validation pass (through :func:`val_metrics`, which only names its columns) and by the
evaluation of notebook 08 (:mod:`skinhelpers.evaluate.scores`).

Every metric comes from :mod:`sklearn.metrics`. Conventions, the same for every caller:

* averages (macro/weighted precision, recall, F1) follow scikit-learn's default: over the
  classes that occur in ``y`` or in the predictions (a class with no image and never
  predicted is left out, not scored 0);
* the macro ROC-AUC is the mean one-vs-rest AUC over the classes present in ``y`` (NaN if
  fewer than two are present); for two classes the AUC of class 1;
* ``positive_auc`` (with ``positive_index``) is the AUC of that class against the rest,
  NaN unless ``y`` has both;
* ``loss`` (with ``logits``) is the cross-entropy of the logits (float32, as the
  training loss), ``log_loss`` the negative log-likelihood of the probabilities.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

log = logging.getLogger(__name__)

#: the trainer's validation columns (``val_<name>`` in history.csv, checkpoint ``metrics``)
#: -> the key of :func:`classification_metrics` they hold, in history column order
VAL_COLUMNS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "macro_f1": "f1_macro",
    "macro_auc": "roc_auc_macro_ovr",
    "positive_auc": "positive_auc",
}


def check_predictions(y, probs) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as int64 ``(N,)`` and ``probs`` as float64 ``(N, C)``; clear errors otherwise."""
    y = np.asarray(y).astype(np.int64).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {probs.shape}")
    if len(y) != len(probs):
        raise ValueError(f"y has {len(y)} rows but probs has {len(probs)}")
    if len(y) and (y.min() < 0 or y.max() >= probs.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {probs.shape[1] - 1}], got [{y.min()}, {y.max()}]"
        )
    return y, probs


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest ROC-AUC over the classes present in ``y`` (NaN if < 2 present);
    for two classes the AUC of class 1 (scikit-learn's binary AUC)."""
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(y, probs[:, 1]))
    return float(np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in present]))


def _pr_auc_macro(y: np.ndarray, probs: np.ndarray) -> float:
    present = np.unique(y)
    if probs.shape[1] == 2:
        return (
            float(skm.average_precision_score(y == 1, probs[:, 1]))
            if len(present) == 2
            else float("nan")
        )
    return float(np.mean([skm.average_precision_score(y == c, probs[:, c]) for c in present]))


def classification_metrics(y, probs, positive_index: int | None = None, logits=None) -> dict:
    """Accuracy, balanced accuracy, macro and weighted precision/recall/F1, macro ROC-AUC
    (one-vs-rest over the classes present) and macro PR-AUC (average precision), NLL
    (``log_loss``); with ``positive_index`` also ``positive_auc``, with ``logits`` also
    ``loss`` (their cross-entropy). ``y``: class indices ``(N,)``; ``probs``: ``(N, C)``."""
    y, probs = check_predictions(y, probs)
    pred = probs.argmax(1)
    with warnings.catch_warnings():  # absent classes: explained where they occur
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        out = {
            "n": int(len(y)),
            "accuracy": float(skm.accuracy_score(y, pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        }
        for avg in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
            out.update(
                {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
            )
        out["roc_auc_macro_ovr"] = macro_auc(y, probs)
        out["pr_auc_macro"] = _pr_auc_macro(y, probs)
        out["log_loss"] = float(
            skm.log_loss(y, np.clip(probs, 1e-12, 1), labels=list(range(probs.shape[1])))
        )
    if positive_index is not None:
        pos = y == positive_index
        out["positive_auc"] = (
            float(skm.roc_auc_score(pos, probs[:, positive_index]))
            if 0 < pos.sum() < len(y)
            else float("nan")
        )
    if logits is not None:
        out["loss"] = float(
            F.cross_entropy(torch.as_tensor(logits).float(), torch.as_tensor(y)).item()
        )
    return out


def val_metrics(logits: torch.Tensor, labels: torch.Tensor, positive_index: int | None) -> dict:
    """The trainer's validation columns (:data:`VAL_COLUMNS`) of
    :func:`classification_metrics` on ``softmax(logits)`` (float32, as in training)."""
    logits = torch.as_tensor(logits).float()
    probs = torch.softmax(logits, 1).numpy()
    with warnings.catch_warnings():  # a validation split is small: no per-epoch warnings
        warnings.simplefilter("ignore")
        m = classification_metrics(torch.as_tensor(labels).numpy(), probs, positive_index, logits)
    m.setdefault("positive_auc", float("nan"))
    return {col: m[key] for col, key in VAL_COLUMNS.items()}


__all__ = ["VAL_COLUMNS", "check_predictions", "macro_auc", "classification_metrics", "val_metrics"]
