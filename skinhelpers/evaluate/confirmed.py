"""Results on the histopathology-confirmed test cases only (notebook 08), descriptively.

HAM10000 records how each diagnosis was confirmed (``dx_type``): histopathology
(``histo``), follow-up, expert consensus or confocal microscopy. A reader who trusts only
biopsy-proven labels asks how the model does on those. :func:`confirmed_results` scores
the test images with ``dx_type == "histo"``, with the same metrics and intervals as the
whole test set.

Descriptive only: ``dx_type`` is decided *after* the lesion is seen (suspicious lesions
are excised), so it is never a model input and this subset is not a random sample: its
class mix differs (melanomas are nearly all biopsied, most nevi are followed up instead),
and the nevi in it are the ones that looked suspicious enough to cut out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from skinhelpers.evaluate import scores, thresholds

log = logging.getLogger(__name__)

HISTO = "histo"
NOTE = (
    "Descriptive only: `dx_type` is never a model input (it is decided after the lesion is "
    "seen: suspicious lesions are excised). The confirmed cases are not a random sample of "
    "the test split: nearly every melanoma is biopsied, most nevi are followed up instead, "
    "and the nevi that were cut out looked suspicious. Read these numbers as how the model "
    "does on biopsy-proven labels, not as a cleaner estimate of its accuracy."
)


def confirmed_results(
    test_df: pd.DataFrame,
    probs,
    classes: Sequence[str],
    pos: int | None = None,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_n: int = 20,
) -> dict | None:
    """Metrics on the histopathology-confirmed test images (``dx_type == "histo"``), or
    None when the dataset records no ``dx_type``. JSON-ready: ``n_images``, ``n_lesions``,
    ``counts`` (per class: confirmed and all test images), ``result`` (headline metrics
    with a lesion bootstrap; None under ``min_n`` images), and with ``pos``: the positive
    class's ``auc`` and, with ``threshold``, sensitivity and specificity there (Wilson
    intervals counting lesions); ``note`` says why this is descriptive."""
    if "dx_type" not in test_df or test_df["dx_type"].isna().all():
        return None
    probs = np.asarray(probs, dtype=np.float64)
    m = (test_df["dx_type"].astype(str) == HISTO).to_numpy()
    y_all = test_df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    groups = test_df["group"].astype(str).to_numpy() if "group" in test_df else None
    counts = {
        c: {"histo": int(((y_all == i) & m).sum()), "all": int((y_all == i).sum())}
        for i, c in enumerate(classes)
    }
    out: dict = {
        "dx_type": HISTO,
        "n_images": int(m.sum()),
        "n_test": int(len(m)),
        "n_lesions": int(pd.Series(groups[m]).nunique()) if groups is not None else None,
        "counts": counts,
        "note": NOTE,
        "result": None,
    }
    if m.sum() < min_n:
        out["why_none"] = f"fewer than {min_n} confirmed test images"
        return out
    y, p, g = y_all[m], probs[m], None if groups is None else groups[m]
    out["result"] = scores.evaluate_predictions(y, p, classes, n_bootstrap, seed, groups=g)
    out["classes_present"] = [c for c, n in counts.items() if n["histo"]]
    if pos is not None:
        out.update(thresholds.positive_summary(y, p, pos, threshold, n_bootstrap, seed, g))
    return out


def counts_table(rec: dict) -> pd.DataFrame:
    """Test images per class: histopathology-confirmed, all, and the confirmed share."""
    t = pd.DataFrame(rec["counts"]).T.rename(columns={"histo": "confirmed (histo)"})
    t["share confirmed"] = (t["confirmed (histo)"] / t["all"].where(t["all"] > 0)).round(2)
    return t


__all__ = ["HISTO", "NOTE", "confirmed_results", "counts_table"]
