"""Selective prediction: a model that may refer a case to a dermatologist instead of
answering it.

* :func:`risk_coverage` - keep the most confident share ``coverage`` of the cases, refer the
  rest: the balanced accuracy and the melanoma sensitivity of the kept cases at every
  coverage, and the area under the risk (error) - coverage curve, AURC (lower is better;
  Geifman & El-Yaniv 2017).
* :func:`conformal_sets` - split conformal prediction sets with a coverage guarantee
  (e.g. 90%: the true class is in the set for at least 90% of future cases drawn like the
  calibration cases), calibrated on validation with `crepes` (Bostrom et al.), the hinge
  non-conformity score ``1 - p(class)``, class-conditional (Mondrian) by default so every
  class, not just nevi, gets its coverage. :func:`conformal_report` checks it on test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from crepes import ConformalClassifier
from crepes.extras import hinge

log = logging.getLogger(__name__)


def risk_coverage(y, probs, pos: int | None = None, grid: int = 100) -> tuple[pd.DataFrame, float]:
    """The risk-coverage table (coverage 1/grid ... 1) and the AURC.

    Cases are kept in order of confidence (the top probability). Per coverage: the share
    of cases kept, their error rate (the risk), their balanced accuracy (over the classes
    among them) and, with ``pos``, the sensitivity for class ``pos`` among the kept cases
    of that class."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(y)
    order = np.argsort(-probs.max(1), kind="stable")
    pred = probs.argmax(1)[order]
    yo = y[order]
    right = (pred == yo).astype(np.float64)
    # AURC: the mean over every coverage k/n of the error of the k most confident cases
    aurc = float(np.mean(1 - np.cumsum(right) / np.arange(1, n + 1))) if n else float("nan")
    rows = []
    for k in np.unique(np.clip(np.ceil(np.linspace(1 / grid, 1, grid) * n), 1, n).astype(int)):
        yk, pk = yo[:k], pred[:k]
        rec = [(pk[yk == c] == c).mean() for c in np.unique(yk)]
        row = {
            "coverage": k / n,
            "kept": int(k),
            "risk": float(1 - right[:k].mean()),
            "balanced_accuracy": float(np.mean(rec)),
        }
        if pos is not None:
            m = yk == pos
            row["sensitivity"] = float((pk[m] == pos).mean()) if m.any() else float("nan")
            row["positives_kept"] = int(m.sum())
        rows.append(row)
    return pd.DataFrame(rows), aurc


def conformal_sets(
    probs_cal,
    y_cal,
    probs_test,
    coverage: float = 0.9,
    class_conditional: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Boolean prediction sets ``(N_test, C)`` at ``coverage``, calibrated on
    ``(probs_cal, y_cal)`` (validation) with crepes' conformal classifier."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    probs_cal = np.asarray(probs_cal, dtype=np.float64)
    probs_test = np.asarray(probs_test, dtype=np.float64)
    y_cal = np.asarray(y_cal, dtype=np.int64)
    classes = np.arange(probs_cal.shape[1])
    a_cal = hinge(probs_cal, classes, y_cal)
    a_test = hinge(probs_test)
    cc = ConformalClassifier()
    if not class_conditional:
        cc.fit(a_cal, seed=seed)
        return np.asarray(cc.predict_set(a_test, confidence=coverage, seed=seed), dtype=bool)
    missing = sorted(set(classes) - set(y_cal))
    if missing:
        raise ValueError(
            f"class-conditional sets need calibration cases of every class; none of {missing}"
        )
    cc.fit(a_cal, bins=y_cal, seed=seed)
    sets = np.zeros(probs_test.shape, dtype=bool)
    for c in classes:
        p = cc.predict_p(a_test, np.full(len(a_test), c), seed=seed)[:, c]
        sets[:, c] = p > 1 - coverage
    return sets


def conformal_report(sets, y, classes: Sequence[str]) -> pd.DataFrame:
    """Empirical coverage (the true class in the set) and average set size, overall and
    per true class, with the number of test cases."""
    sets = np.asarray(sets, dtype=bool)
    y = np.asarray(y, dtype=np.int64)
    hit = sets[np.arange(len(y)), y]
    size = sets.sum(1)
    rows = {
        "all": {
            "n": len(y),
            "coverage": float(hit.mean()),
            "mean_set_size": float(size.mean()),
            "singletons": float((size == 1).mean()),
            "empty": float((size == 0).mean()),
        }
    }
    for c, name in enumerate(classes):
        m = y == c
        if m.any():
            rows[name] = {
                "n": int(m.sum()),
                "coverage": float(hit[m].mean()),
                "mean_set_size": float(size[m].mean()),
                "singletons": float((size[m] == 1).mean()),
                "empty": float((size[m] == 0).mean()),
            }
    return pd.DataFrame(rows).T


__all__ = ["conformal_report", "conformal_sets", "risk_coverage"]
