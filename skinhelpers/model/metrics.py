"""The one metrics function: balanced accuracy, macro-F1, accuracy, AUCs from logits."""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F


def val_metrics(logits: torch.Tensor, labels: torch.Tensor, positive_index: int | None) -> dict:
    """Balanced accuracy, macro-F1, accuracy, macro AUC (one-vs-rest), positive-class AUC."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    y = labels.numpy()
    probs = torch.softmax(logits.float(), 1).numpy()
    pred = probs.argmax(1)
    c = probs.shape[1]
    out = {"loss": float(F.cross_entropy(logits.float(), labels).item()),
           "accuracy": float((pred == y).mean())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
        out["macro_f1"] = float(f1_score(y, pred, average="macro", labels=list(range(c)),
                                         zero_division=0))
        aucs = [roc_auc_score(y == k, probs[:, k]) for k in range(c) if 0 < (y == k).sum() < len(y)]
        out["macro_auc"] = float(np.mean(aucs)) if aucs else float("nan")
        pos = positive_index
        out["positive_auc"] = (float(roc_auc_score(y == pos, probs[:, pos]))
                               if pos is not None and 0 < (y == pos).sum() < len(y) else float("nan"))
    return out
