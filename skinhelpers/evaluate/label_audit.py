"""Label audit: which images' labels are likely wrong?

Public dermoscopy sets carry label errors (SelfClean found 0.1-1.2% expert-confirmed
errors in PH2, Derm7pt, PAD-UFES-20 and DDI). `cleanlab` (confident learning, Northcutt et
al. 2021) finds the suspects from **out-of-fold** predicted probabilities: every image is
scored by a model that never saw it. On a CPU budget that model is cheap: the frozen
ImageNet features of the backbone and a class-balanced logistic regression, fitted in
lesion-grouped folds (a lesion's other images must not vouch for its label); with K fold
models (the gpu profile) their out-of-fold predictions serve directly.

:func:`audit_labels` returns one row per image: the given label, the label the model
suggests, cleanlab's label-quality score (low: suspect) and whether cleanlab flags it.
Suspects may leave **training** (``drop_label_issues``), never the test split, whose labels
stay as given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skinhelpers.evaluate.ood import features_and_logits
from skinhelpers.model.factory import build_model

log = logging.getLogger(__name__)

COLUMNS = ["image_id", "relpath", "label", "suggested", "quality", "is_issue", "split"]


def frozen_features(
    images: torch.Tensor, arch: str = "efficientnet_lite0", batch_size: int = 64
) -> np.ndarray:
    """Penultimate features of the ImageNet-pretrained ``arch`` (no fine-tuning) for a
    uint8 batch ``(N, 3, H, W)``."""
    model = build_model(arch, 2, pretrained=True)
    f, _ = features_and_logits(model, images, model.mean, model.std, batch_size)
    return f


def out_of_fold_probs(
    features, labels, groups, n_classes: int, n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold class probabilities of a class-balanced logistic regression on
    ``features``, folds grouped by ``groups`` (lesions) and stratified by label."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    out = np.zeros((len(y), n_classes))
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for tr, te in cv.split(x, y, np.asarray(groups)):
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5),
        )
        model.fit(x[tr], y[tr])
        out[np.ix_(te, model[-1].classes_)] = model.predict_proba(x[te])
    return out / np.clip(out.sum(1, keepdims=True), 1e-12, None)


def audit_labels(
    df: pd.DataFrame, probs, classes: Sequence[str], filter_by: str = "both"
) -> pd.DataFrame:
    """One row per image of ``df`` (aligned with ``probs``): given and suggested label,
    cleanlab's label quality (self-confidence; low is suspect) and its flag; most
    suspect first. ``filter_by="both"``: flagged by both of cleanlab's rules (prune by
    noise rate and by class), the fewer, surer suspects a cheap model can give."""
    y = df["label_idx"].to_numpy(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    issue = find_label_issues(y, probs, filter_by=filter_by)
    quality = get_label_quality_scores(y, probs)
    out = pd.DataFrame(
        {
            "image_id": df["image_id"].to_numpy(),
            "relpath": df["relpath"].to_numpy(),
            "label": [classes[i] for i in y],
            "suggested": [classes[i] for i in probs.argmax(1)],
            "quality": quality,
            "is_issue": issue,
            "split": df["split"].to_numpy() if "split" in df else "",
        }
    )
    return out.sort_values(["is_issue", "quality"], ascending=[False, True]).reset_index(drop=True)


def issue_counts(audit: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Suspects per given class, with the class size and the share."""
    n = audit["label"].value_counts().reindex(classes, fill_value=0)
    k = audit.loc[audit["is_issue"], "label"].value_counts().reindex(classes, fill_value=0)
    return pd.DataFrame({"images": n, "suspects": k, "share": k / n.clip(lower=1)})


__all__ = ["COLUMNS", "audit_labels", "frozen_features", "issue_counts", "out_of_fold_probs"]
