"""Results per lesion beside results per image (notebook 08).

A dermatologist judges a lesion, not a photograph: HAM10000's test split has 1,430 images
of 1,066 lesions, and a lesion photographed three times counts three times per image.
:func:`lesion_predictions` averages the probabilities of each lesion's images (the
balanced scores, as everywhere in the metrics) and gives the lesion its label;
:func:`per_lesion` scores them with the same headline metrics, a bootstrap of the lesions
(each lesion now one unit, stratified by class), the melanoma AUC and the operating point
chosen on validation; :func:`image_vs_lesion_table` puts the two side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from skinhelpers.evaluate import scores, thresholds

log = logging.getLogger(__name__)


def lesion_predictions(groups, y, probs) -> pd.DataFrame:
    """One row per lesion (``group``): ``n_images``, ``y`` (the lesion's class: its images'
    most common label), ``conflict`` (its images disagree), and ``p0..p{C-1}``, the mean of
    its images' probabilities. Rows in order of first appearance."""
    probs = np.asarray(probs, dtype=np.float64)
    g = pd.Series(np.asarray(groups).astype(str))
    y = np.asarray(y)
    frame = pd.DataFrame(probs, columns=[f"p{i}" for i in range(probs.shape[1])])
    frame["group"], frame["y"] = g.to_numpy(), y
    order = pd.unique(g)
    mean = frame.groupby("group", sort=False)[list(frame.columns[: probs.shape[1]])].mean()
    labels = frame.groupby("group", sort=False)["y"]
    out = pd.DataFrame(
        {
            "group": order,
            "n_images": labels.size().reindex(order).to_numpy(),
            "y": labels.agg(lambda s: s.value_counts().index[0]).reindex(order).to_numpy(),
            "conflict": (labels.nunique() > 1).reindex(order).to_numpy(),
        }
    )
    return pd.concat([out, mean.reindex(order).reset_index(drop=True)], axis=1)


def per_lesion(
    groups,
    y,
    probs,
    classes: Sequence[str],
    pos: int | None = None,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """The headline metrics on lesions (their images' probabilities averaged), JSON-ready:
    ``n_lesions``, ``n_images``, ``label_conflicts``, ``result`` (as
    :func:`skinhelpers.evaluate.scores.evaluate_predictions`, resampling lesions), and with
    ``pos`` the positive class's ``auc`` (lesion bootstrap) and, with ``threshold`` (chosen
    on validation, per image), ``operating_point`` (sensitivity and specificity counting
    lesions, Wilson intervals)."""
    les = lesion_predictions(groups, y, probs)
    p = les[[f"p{i}" for i in range(len(classes))]].to_numpy()
    yl = les["y"].to_numpy().astype(int)
    ids = les["group"].to_numpy()
    out: dict = {
        "n_lesions": int(len(les)),
        "n_images": int(les["n_images"].sum()),
        "images_per_lesion": float(les["n_images"].mean()) if len(les) else float("nan"),
        "label_conflicts": int(les["conflict"].sum()),
        "result": scores.evaluate_predictions(yl, p, classes, n_bootstrap, seed, groups=ids),
    }
    if pos is not None:
        # one image per lesion now: the Wilson intervals count lesions without a design effect
        out.update(thresholds.positive_summary(yl, p, pos, threshold, n_bootstrap, seed, ids))
    return out


def image_vs_lesion_table(image_result: dict, lesion: dict, image_op: dict | None = None):
    """Headline metrics per image and per lesion side by side, "value (low-high)" cells,
    with the melanoma AUC and the operating point's sensitivity and specificity when
    ``lesion`` has them (``image_op``: the image-level ``test_ci`` of that point)."""

    def cell(v):
        if not isinstance(v, dict) or not np.isfinite(v.get("value", np.nan)):
            return "–"
        return f"{v['value']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})"

    rows = {
        k: {"per image": cell(image_result["headline"].get(k)), "per lesion": cell(v)}
        for k, v in lesion["result"]["headline"].items()
    }
    if "auc" in lesion and image_op is not None and "auc" in image_op:
        rows["melanoma AUC"] = {
            "per image": cell(image_op["auc"]),
            "per lesion": cell(lesion["auc"]),
        }
    op = lesion.get("operating_point")
    if op and image_op is not None:
        for k in ("sensitivity", "specificity"):
            rows[f"{k} at the threshold"] = {
                "per image": cell(image_op.get(k)),
                "per lesion": cell(op[k]),
            }
    n = {"per image": str(lesion["n_images"]), "per lesion": str(lesion["n_lesions"])}
    return pd.DataFrame({"n": n, **rows}).T


__all__ = ["image_vs_lesion_table", "lesion_predictions", "per_lesion"]
