"""Clinical operating points: thresholds chosen on validation for a specificity or a
sensitivity target, measured on test with their intervals (one class, e.g. melanoma, against
the rest).

:func:`positive_class_analysis` is the clinical question of notebook 08: the class's AUC
with a lesion bootstrap, and at each target the threshold, sensitivity, specificity, PPV and
NPV, with Wilson intervals counting lesions (:func:`operating_point_ci`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skinhelpers.evaluate.bootstrap import (
    HEADLINE,
    bootstrap_ci,
    bootstrap_unit,
    ci_dict,
    fmt_ci,
    proportion_ci,
)

log = logging.getLogger(__name__)


def threshold_for_specificity(y_pos, score, target: float = 0.95) -> float:
    """The lowest threshold whose specificity on (``y_pos``, ``score``) is ``>= target``:
    the most sensitive operating point that still meets the specificity target.
    A case is called positive when ``score >= threshold``."""
    y_pos = np.asarray(y_pos).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if y_pos.all() or not y_pos.any():
        raise ValueError("choosing a threshold needs both positive and negative cases")
    fpr, tpr, thr = skm.roc_curve(y_pos, score, drop_intermediate=False)
    ok = np.flatnonzero(1 - fpr >= target - 1e-12)
    best = ok[np.argmax(tpr[ok])]
    return _finite(thr[best], score)


def threshold_for_sensitivity(y_pos, score, target: float = 0.95) -> float:
    """The highest threshold whose sensitivity is ``>= target`` (the most specific point
    that still finds ``target`` of the positives)."""
    y_pos = np.asarray(y_pos).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if y_pos.all() or not y_pos.any():
        raise ValueError("choosing a threshold needs both positive and negative cases")
    fpr, tpr, thr = skm.roc_curve(y_pos, score, drop_intermediate=False)
    ok = np.flatnonzero(tpr >= target - 1e-12)
    best = ok[np.argmin(fpr[ok])]
    return _finite(thr[best], score)


def _finite(thr: float, score: np.ndarray) -> float:
    """roc_curve's first threshold is +inf (call nothing positive): keep it finite (JSON)
    as the next float above the highest score, which means the same."""
    return float(thr) if np.isfinite(thr) else float(np.nextafter(score.max(), np.inf))


def operating_point(y_pos, score, threshold: float) -> dict:
    """Sensitivity, specificity, PPV, NPV and counts at ``score >= threshold``."""
    y_pos = np.asarray(y_pos).astype(bool)
    called = np.asarray(score) >= threshold
    tp = int(np.count_nonzero(called & y_pos))  # the 2x2 confusion matrix, counted
    fp = int(np.count_nonzero(called & ~y_pos))
    fn = int(np.count_nonzero(~called & y_pos))
    tn = int(len(y_pos) - tp - fp - fn)
    div = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731
    return {
        "threshold": float(threshold),
        "sensitivity": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "ppv": div(tp, tp + fp),
        "npv": div(tn, tn + fn),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def binary_auc_fns() -> dict[str, Callable]:
    """The AUC and average precision of a positive class, as bootstrapped metrics of
    ``(y in {0, 1}, probs = [1 - s, s])``; the AUC is :data:`HEADLINE`'s (vectorised), so
    every table that bootstraps it with the same resamples gives the same interval."""
    return {
        "auc": HEADLINE["roc_auc_macro_ovr"],  # two classes: class 1's AUC
        "average_precision": lambda y, p: skm.average_precision_score(y, p[:, 1]),
    }


def operating_point_ci(y_pos, score, threshold: float, groups=None, alpha: float = 0.05) -> dict:
    """Sensitivity and specificity at ``score >= threshold``, each with the Wilson interval
    of :func:`proportion_ci` (counting ``groups``, the lesions, when given): the interval
    every table of the suite gives these two numbers."""
    y_pos = np.asarray(y_pos).astype(bool)
    called = np.asarray(score) >= threshold
    g = None if groups is None else np.asarray(groups)
    return {
        "sensitivity": proportion_ci(called[y_pos], None if g is None else g[y_pos], alpha),
        "specificity": proportion_ci(~called[~y_pos], None if g is None else g[~y_pos], alpha),
    }


def positive_class_analysis(
    y_val,
    p_val,
    y_test,
    p_test,
    pos: int,
    name: str = "melanoma",
    targets: Sequence[float] = (0.95, 0.90),
    n_bootstrap: int = 1000,
    seed: int = 0,
    desc: str | None = None,
    groups=None,
) -> dict:
    """The clinical question for one class (melanoma vs rest): AUC on test with CI, and
    operating points whose thresholds are chosen on *validation* (for a specificity target
    and for a sensitivity target), then measured on test.

    ``groups``: the test images' lesions. The AUC's interval is a bootstrap of the groups
    (stratified by melanoma vs rest; ``None``: images); sensitivity and specificity get
    Wilson intervals counting the groups (:func:`operating_point_ci`).
    Returns a JSON-ready dict with ``auc``, ``average_precision``, ``operating_points``
    (list), ``sentences`` (the findings in words), ``bootstrap_unit`` and ``n_units``.
    """
    yv = np.asarray(y_val) == pos
    yt = np.asarray(y_test) == pos
    sv = np.asarray(p_val)[:, pos]
    st = np.asarray(p_test)[:, pos]
    for split_name, yy in (("validation", yv), ("test", yt)):
        if not yy.any() or yy.all():
            raise ValueError(
                f"the {split_name} split needs both {name} and other cases to "
                f"analyse {name} vs rest (it has {int(yy.sum())} of {len(yy)})"
            )
    yt_i, st2 = yt.astype(int), np.stack([1 - st, st], 1)
    table = bootstrap_ci(
        yt_i, st2, binary_auc_fns(), n_bootstrap, seed, desc=desc and f"{desc} AUC", groups=groups
    )
    unit = bootstrap_unit(groups, len(yt))
    out: dict = {
        "class": name,
        "class_index": int(pos),
        "n_test_pos": int(yt.sum()),
        "n_test_neg": int((~yt).sum()),
        "n_val_pos": int(yv.sum()),
        **ci_dict(table),
        **unit,
        "operating_points": [],
        "sentences": [],
    }
    if groups is not None:
        g = np.asarray(groups)
        out["n_test_pos_groups"] = int(pd.Series(g[yt]).nunique())
        out["n_test_neg_groups"] = int(pd.Series(g[~yt]).nunique())
    a = table.loc["auc"]
    lesions = (
        f" ({out['n_test_pos_groups']} and {out['n_test_neg_groups']} lesions)"
        if groups is not None
        else ""
    )
    out["sentences"].append(
        f"{name} vs rest: ROC-AUC {fmt_ci(a['value'], a['ci_low'], a['ci_high'], pct=False)} "
        f"on {int(yt.sum())} {name} and {int((~yt).sum())} other test images{lesions}."
    )
    for kind in ("specificity", "sensitivity"):
        for t in targets:
            pick = threshold_for_specificity if kind == "specificity" else threshold_for_sensitivity
            thr = pick(yv, sv, t)
            val = operating_point(yv, sv, thr)
            test = operating_point(yt, st, thr)
            ci = operating_point_ci(yt, st, thr, groups)
            other = "sensitivity" if kind == "specificity" else "specificity"
            o, k = ci[other], ci[kind]
            if kind == "specificity":
                text = (
                    f"At the threshold chosen on validation for {100 * t:.0f}% specificity "
                    f"(p({name}) >= {thr:.3f}), the model finds "
                    f"{fmt_ci(o['value'], o['ci_low'], o['ci_high'])} of the {name} cases "
                    f"in the test set ({test['tp']} of {test['tp'] + test['fn']}); the "
                    f"specificity reached on test is "
                    f"{fmt_ci(k['value'], k['ci_low'], k['ci_high'])}."
                )
            else:
                text = (
                    f"At the threshold chosen on validation for {100 * t:.0f}% sensitivity "
                    f"(p({name}) >= {thr:.3f}), the model finds "
                    f"{fmt_ci(k['value'], k['ci_low'], k['ci_high'])} of the {name} cases "
                    f"in the test set and clears "
                    f"{fmt_ci(o['value'], o['ci_low'], o['ci_high'])} of the other lesions "
                    f"(specificity): {test['fp']} of the {test['fp'] + test['tn']} other "
                    f"test images would be flagged as suspicious."
                )
            out["operating_points"].append(
                {
                    "target": kind,
                    "target_value": float(t),
                    "threshold": thr,
                    "validation": val,
                    "test": test,
                    "test_ci": ci,
                }
            )
            out["sentences"].append(text)
    return out


def positive_summary(
    y,
    probs,
    pos: int,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups=None,
) -> dict:
    """One class against the rest on a set of predictions (a subset, or lesions): ``n_pos``,
    ``n_neg``, and when both occur the ``auc`` (bootstrap of ``groups``) and, with
    ``threshold``, the ``operating_point`` there (:func:`operating_point_ci`). JSON-ready."""
    is_pos = np.asarray(y) == pos
    score = np.asarray(probs, dtype=np.float64)[:, pos]
    out: dict = {"n_pos": int(is_pos.sum()), "n_neg": int((~is_pos).sum())}
    if is_pos.any() and not is_pos.all():
        t = bootstrap_ci(
            is_pos.astype(int),
            np.stack([1 - score, score], 1),
            binary_auc_fns(),
            n_bootstrap,
            seed,
            groups=groups,
        )
        out["auc"] = ci_dict(t)["auc"]
        if threshold is not None:
            ci = operating_point_ci(is_pos, score, threshold, groups)
            out["operating_point"] = {"threshold": float(threshold), **ci}
    return out


def operating_points_table(analysis: dict) -> pd.DataFrame:
    """The operating points of :func:`positive_class_analysis` as one table: the target,
    the threshold chosen on validation, validation sensitivity and specificity, the test
    ones with their Wilson intervals, test PPV and NPV."""
    rows = []
    for op in analysis["operating_points"]:
        ci = {
            f"test {k} (95% CI)": f"{v['value']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})"
            for k, v in op["test_ci"].items()
        }
        rows.append(
            {
                "target": f"{op['target']} >= {op['target_value']:.0%}",
                "threshold": op["threshold"],
                "val sensitivity": op["validation"]["sensitivity"],
                "val specificity": op["validation"]["specificity"],
                **ci,
                "test PPV": op["test"]["ppv"],
                "test NPV": op["test"]["npv"],
            }
        )
    return pd.DataFrame(rows).set_index("target")


__all__ = [
    "operating_points_table",
    "positive_summary",
    "binary_auc_fns",
    "operating_point_ci",
    "threshold_for_specificity",
    "threshold_for_sensitivity",
    "operating_point",
    "positive_class_analysis",
]
