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

COLUMNS = ["image_id", "relpath", "label", "suggested", "quality", "is_issue", "drop", "split"]
#: expert-confirmed label errors of public dermoscopy sets (SelfClean): 0.1-1.2%; a share of
#: suspects far above it says more about the cheap model than about the labels
PLAUSIBLE_ERROR_SHARE = 0.012
#: at most this share of the images leaves training with ``drop_label_issues`` (the most
#: suspect first): the default of notebook 03's ``audit_max_drop``
MAX_DROP_SHARE = 0.02


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
            "drop": False,  # mark_drops chooses
            "split": df["split"].to_numpy() if "split" in df else "",
        }
    )
    return out.sort_values(["is_issue", "quality"], ascending=[False, True]).reset_index(drop=True)


def mark_drops(audit: pd.DataFrame, max_share: float = MAX_DROP_SHARE) -> pd.DataFrame:
    """``audit`` with a ``drop`` column: the flagged images of lowest label quality, at most
    ``max_share`` of all images (0: none; 1: every suspect). What leaves training when
    ``drop_label_issues`` is on: a weak auditing model flags far more images than carry
    wrong labels, and its surest suspects are the likeliest errors."""
    if not 0 <= max_share <= 1:
        raise ValueError(f"audit_max_drop must be a share in [0, 1], got {max_share}")
    out = audit.copy()
    flagged = out.index[out["is_issue"].astype(bool)]
    worst = out.loc[flagged, "quality"].sort_values(kind="stable").index
    keep_n = min(len(worst), int(np.floor(max_share * len(out))))
    out["drop"] = out.index.isin(worst[:keep_n])
    return out[[c for c in COLUMNS if c in out.columns]]


def audit_sentence(audit: pd.DataFrame, oof_accuracy: float) -> str:
    """What the number of suspects says, in words (Markdown)."""
    n, k, d = len(audit), int(audit["is_issue"].sum()), int(audit.get("drop", pd.Series()).sum())
    share = k / max(n, 1)
    out = (
        f"**{k:,} suspects of {n:,} images ({share:.1%})**; the auditing model's own "
        f"out-of-fold accuracy is {oof_accuracy:.2f}. "
    )
    if share > 4 * PLAUSIBLE_ERROR_SHARE:
        out += (
            f"That is far above the 0.1-{PLAUSIBLE_ERROR_SHARE:.1%} of labels experts found "
            "wrong in public dermoscopy sets: most suspects are the cheap model's own "
            "errors, not label errors. Read the list from the top as candidates to review. "
        )
    return out + (
        f"With `drop_label_issues`, the {d:,} most suspect (at most `audit_max_drop` of the "
        "images) leave training."
    )


def issue_counts(audit: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Suspects per given class, with the class size and the share."""
    n = audit["label"].value_counts().reindex(classes, fill_value=0)
    k = audit.loc[audit["is_issue"], "label"].value_counts().reindex(classes, fill_value=0)
    return pd.DataFrame({"images": n, "suspects": k, "share": k / n.clip(lower=1)})


__all__ = [
    "COLUMNS",
    "MAX_DROP_SHARE",
    "PLAUSIBLE_ERROR_SHARE",
    "audit_labels",
    "audit_sentence",
    "frozen_features",
    "issue_counts",
    "mark_drops",
    "out_of_fold_probs",
]
