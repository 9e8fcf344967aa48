"""Evaluation on a held-out split: metrics with bootstrap CIs, clinical operating points,
calibration (ECE, reliability, temperature scaling) and the plots that go with them.

Every metric comes from :mod:`sklearn.metrics`; this module only chooses, combines,
resamples and draws. Inputs are NumPy arrays: ``y`` the true class indices ``(N,)``,
``probs`` the predicted probabilities ``(N, C)`` (rows sum to one), ``logits`` the raw
scores ``(N, C)``. Binary problems are ``C == 2`` with the positive class given by index.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import sklearn
import torch
from sklearn import metrics as skm

from skinhelpers.figures import synthetic_title
from skinhelpers.model.metrics import (
    check_predictions,
    classification_metrics,
    macro_auc,
)
from skinhelpers.progress import progress

# ----------------------------------------------------------------------------- metrics
# All metrics of a split come from the one metrics function,
# :func:`skinhelpers.model.metrics.classification_metrics` (the trainer's validation uses it
# too). Averages follow scikit-learn's default: over the classes that occur in y or in the
# predictions (a class with no test image and never predicted is left out, not scored 0).
_AVG = {"zero_division": 0}


#: the headline metrics: name -> f(y, probs); each gets a bootstrap CI
HEADLINE: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: skm.accuracy_score(y, p.argmax(1)),
    "balanced_accuracy": lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1)),
    "f1_macro": lambda y, p: skm.f1_score(y, p.argmax(1), average="macro", **_AVG),
    "roc_auc_macro_ovr": macro_auc,
}


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


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_indices(y, n_bootstrap: int, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """``(n_bootstrap, N)`` resampling indices; stratified by ``y`` (class counts kept)
    by default, so that every resample contains every class of the test set."""
    y = np.asarray(y).ravel()
    rng = np.random.default_rng(seed)
    n = len(y)
    if not stratified:
        return rng.integers(0, n, size=(n_bootstrap, n))
    out = np.empty((n_bootstrap, n), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out[:, start : start + len(idx)] = idx[
            rng.integers(0, len(idx), size=(n_bootstrap, len(idx)))
        ]
        start += len(idx)
    return out


#: resamples scored at once by the vectorised headline metrics (memory ~ chunk x N x C)
BOOT_CHUNK = 100


def headline_resampled(y: np.ndarray, probs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """:data:`HEADLINE` on every resample ``y[idx[b]], probs[idx[b]]`` at once: a
    ``(len(idx), 4)`` array, equal to calling each metric on each resample (the loop it
    replaces cost 15 s per 1,000 resamples of 1,430 images; tested to agree to 1e-9).

    Same definitions as scikit-learn's: balanced accuracy averages recall over the classes
    with true images; macro F1 averages over the classes that are true or predicted (0 for
    an empty one); the macro AUC averages the one-vs-rest AUCs of the classes present
    (NaN with fewer than two; with two classes, class 1's AUC), ties counted half."""
    from scipy.stats import rankdata  # local: only the bootstrap needs it

    n_boot, c = len(idx), probs.shape[1]
    out = np.full((n_boot, len(HEADLINE)), np.nan)
    if n_boot == 0:
        return out
    yb, pb = y[idx], probs.argmax(1)[idx]  # (B, N)
    n = yb.shape[1]
    flat = (np.arange(n_boot)[:, None] * c * c + yb * c + pb).ravel()
    cm = np.bincount(flat, minlength=n_boot * c * c).reshape(n_boot, c, c)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    true_n, pred_n = cm.sum(2), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as intended
        recall = np.where(true_n > 0, tp / true_n, np.nan)
        f1_den = true_n + pred_n
        f1 = np.where(f1_den > 0, 2 * tp / f1_den, np.nan)
        out[:, 0] = tp.sum(1) / n
        out[:, 1] = np.nanmean(recall, axis=1)
        out[:, 2] = np.nanmean(f1, axis=1)
        classes = [1] if c == 2 else range(c)
        aucs = np.full((n_boot, c), np.nan)
        for k in classes:
            pos = yb == k
            n_pos = pos.sum(1)
            n_neg = n - n_pos
            ranks = rankdata(probs[:, k][idx], axis=1)  # average ranks: ties count half
            u = (ranks * pos).sum(1) - n_pos * (n_pos + 1) / 2
            aucs[:, k] = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
        present = (true_n > 0).sum(1)
        auc = aucs[:, 1] if c == 2 else np.nanmean(aucs, axis=1)
        out[:, 3] = np.where(present >= 2, auc, np.nan)
    return out


def _resampled(y, probs, idx, fns, desc) -> np.ndarray:
    """``(len(idx), len(fns))``: each metric on each resample; :data:`HEADLINE` vectorised
    in chunks of :data:`BOOT_CHUNK`, other metrics one resample at a time."""
    if fns is not HEADLINE:
        vals = [[f(y[i], probs[i]) for f in fns.values()] for i in _progress(idx, desc)]
        return np.array(vals, dtype=np.float64).reshape(len(idx), len(fns))
    chunks = [idx[i : i + BOOT_CHUNK] for i in range(0, len(idx), BOOT_CHUNK)]
    bar = None if desc is None else progress(total=len(idx), desc=desc, unit="resample")
    parts = []
    for part in chunks:
        parts.append(headline_resampled(y, probs, part))
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return np.concatenate(parts) if parts else np.empty((0, len(fns)))


def bootstrap_ci(
    y,
    probs,
    fns: dict[str, Callable] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
    desc: str | None = None,
) -> pd.DataFrame:
    """Point estimate and percentile bootstrap ``1 - alpha`` interval of each metric.

    ``fns`` maps a name to ``f(y, probs) -> float`` (default :data:`HEADLINE`). Resamples
    where a metric is undefined (NaN) are left out of that metric's interval. ``desc``
    shows a progress bar.
    Returns a frame indexed by metric with ``value, ci_low, ci_high, n_boot``.
    """
    y, probs = check_predictions(y, probs)
    fns = HEADLINE if fns is None else fns
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    idx = bootstrap_indices(y, n_bootstrap, seed, stratified)
    rows = []
    # sklearn's input validation dominates the cost of small metrics: checked once above
    with (
        warnings.catch_warnings(),
        sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
    ):
        warnings.simplefilter("ignore")
        arr = _resampled(y, probs, idx, fns, desc)
        values = {k: float(f(y, probs)) for k, f in fns.items()}
    boots = {k: arr[:, j] for j, k in enumerate(fns)}
    for k in fns:
        value = values[k]
        b = boots[k][np.isfinite(boots[k])]
        lo, hi = np.quantile(b, [alpha / 2, 1 - alpha / 2]) if len(b) else (np.nan, np.nan)
        rows.append(
            {
                "metric": k,
                "value": value,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "n_boot": int(len(b)),
            }
        )
    return pd.DataFrame(rows).set_index("metric")


def paired_bootstrap_diff(
    y,
    probs_a,
    probs_b,
    fns: dict[str, Callable] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    desc: str | None = None,
) -> pd.DataFrame:
    """``metric(b) - metric(a)`` on the same images, with a paired bootstrap interval
    (both scored on each resample) and the share of resamples where ``b`` is better.
    The way to say whether a change (TTA, EMA, calibration) helps beyond noise."""
    y, probs_a = check_predictions(y, probs_a)
    _, probs_b = check_predictions(y, probs_b)
    fns = HEADLINE if fns is None else fns
    idx = bootstrap_indices(y, n_bootstrap, seed)
    rows = []
    with (
        warnings.catch_warnings(),
        sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
    ):
        warnings.simplefilter("ignore")
        diffs = _resampled(y, probs_b, idx, fns, desc) - _resampled(y, probs_a, idx, fns, None)
        for j, (k, f) in enumerate(fns.items()):
            a, b = float(f(y, probs_a)), float(f(y, probs_b))
            d = diffs[:, j]
            d = d[np.isfinite(d)]
            lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2]) if len(d) else (np.nan, np.nan)
            rows.append(
                {
                    "metric": k,
                    "a": a,
                    "b": b,
                    "diff": b - a,
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "p_better": float(np.mean(d > 0)) if len(d) else float("nan"),
                }
            )
    return pd.DataFrame(rows).set_index("metric")


def _progress(it, desc: str | None):
    if desc is None:
        return it

    return progress(it, desc=desc, unit="resample")


def ci_dict(table: pd.DataFrame) -> dict:
    """A bootstrap table as JSON-ready ``{metric: {value, ci_low, ci_high}}``."""
    return {
        k: {"value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
        for k, r in table.iterrows()
    }


def fmt_ci(value: float, lo: float, hi: float, pct: bool = True) -> str:
    if pct:
        return f"{100 * value:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"
    return f"{value:.3f} (95% CI {lo:.3f}-{hi:.3f})"


# ----------------------------------------------------------------------------- clinical


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
) -> dict:
    """The clinical question for one class (melanoma vs rest): AUC on test with CI, and
    operating points whose thresholds are chosen on *validation* (for a specificity target
    and for a sensitivity target), then measured on test with bootstrap CIs.

    Returns a JSON-ready dict with ``auc``, ``average_precision``, ``operating_points``
    (list) and ``sentences`` (the findings in words).
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
    fns = {
        "auc": lambda y, p: skm.roc_auc_score(y, p[:, 1]),
        "average_precision": lambda y, p: skm.average_precision_score(y, p[:, 1]),
    }
    table = bootstrap_ci(yt_i, st2, fns, n_bootstrap, seed, desc=desc and f"{desc} AUC")
    out: dict = {
        "class": name,
        "class_index": int(pos),
        "n_test_pos": int(yt.sum()),
        "n_test_neg": int((~yt).sum()),
        "n_val_pos": int(yv.sum()),
        **ci_dict(table),
        "operating_points": [],
        "sentences": [],
    }
    a = table.loc["auc"]
    out["sentences"].append(
        f"{name} vs rest: ROC-AUC {fmt_ci(a['value'], a['ci_low'], a['ci_high'], pct=False)} "
        f"on {int(yt.sum())} {name} and {int((~yt).sum())} other test images."
    )
    for kind in ("specificity", "sensitivity"):
        for t in targets:
            pick = threshold_for_specificity if kind == "specificity" else threshold_for_sensitivity
            thr = pick(yv, sv, t)
            val = operating_point(yv, sv, thr)
            test = operating_point(yt, st, thr)
            ci = bootstrap_ci(
                yt_i,
                st2,
                {
                    "sensitivity": lambda y, p: operating_point(y, p[:, 1], thr)["sensitivity"],
                    "specificity": lambda y, p: operating_point(y, p[:, 1], thr)["specificity"],
                },
                n_bootstrap,
                seed,
                desc=desc and f"{desc} {kind} {t:.0%}",
            )
            other = "sensitivity" if kind == "specificity" else "specificity"
            o, k = ci.loc[other], ci.loc[kind]
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
                    "test_ci": ci_dict(ci),
                }
            )
            out["sentences"].append(text)
    return out


# ----------------------------------------------------------------------------- calibration


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reliability_table(y, probs, n_bins: int = 15) -> pd.DataFrame:
    """Top-label reliability: confidence bins of equal width with their count, mean
    confidence and accuracy (the data of a reliability diagram)."""
    y, probs = check_predictions(y, probs)
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for i in range(n_bins):
        m = b == i
        rows.append(
            {
                "bin_low": edges[i],
                "bin_high": edges[i + 1],
                "count": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(y, probs, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins of
    ``|accuracy - confidence| * share of samples``, for the top-label prediction."""
    t = reliability_table(y, probs, n_bins)
    t = t[t["count"] > 0]
    return float(
        (t["count"] * (t["accuracy"] - t["confidence"]).abs()).sum() / max(1, t["count"].sum())
    )


def fit_temperature(logits, y, max_iter: int = 200) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` minimising the NLL of
    ``softmax(logits / T)`` on (validation) data, found by L-BFGS on ``log T``."""

    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    t = torch.as_tensor(np.asarray(y).astype(np.int64))
    if z.ndim != 2 or len(z) != len(t):
        raise ValueError(f"logits {tuple(z.shape)} and y ({len(t)}) do not match")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    temp = float(log_t.exp().item())
    if not math.isfinite(temp) or temp <= 0:
        raise RuntimeError(f"temperature scaling diverged (T={temp})")
    return temp


def apply_temperature(logits, temperature: float) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature))


def calibration_summary(y_val, logits_val, y_test, logits_test, n_bins: int = 15) -> dict:
    """Fit ``T`` on validation; ECE, NLL and Brier score on test before and after."""
    temp = fit_temperature(logits_val, y_val)
    out = {"temperature": temp, "n_bins": n_bins}
    for key, p in (
        ("before", softmax(logits_test)),
        ("after", apply_temperature(logits_test, temp)),
    ):
        y, p = check_predictions(y_test, p)
        onehot = np.eye(p.shape[1])[y]
        out[key] = {
            "ece": expected_calibration_error(y, p, n_bins),
            "nll": float(skm.log_loss(y, np.clip(p, 1e-12, 1), labels=list(range(p.shape[1])))),
            "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        }
    return out


# ----------------------------------------------------------------------------- tables


def neg_log_loss(y, probs) -> float:
    """Minus the log loss (higher is better, like the other bootstrapped metrics)."""
    probs = np.asarray(probs)
    return -float(skm.log_loss(y, np.clip(probs, 1e-12, 1), labels=list(range(probs.shape[1]))))


def evaluate_predictions(
    y,
    probs,
    classes: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    desc: str | None = None,
) -> dict:
    """Everything for one set of test predictions, JSON-ready: ``metrics`` (all of
    :func:`classification_metrics`), ``headline`` (:data:`HEADLINE` with bootstrap CIs),
    ``per_class`` (:func:`per_class_report` as a dict)."""
    return {
        "metrics": classification_metrics(y, probs),
        "headline": ci_dict(bootstrap_ci(y, probs, n_bootstrap=n_bootstrap, seed=seed, desc=desc)),
        "per_class": per_class_report(y, probs, classes).to_dict(orient="index"),
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
    """``image_id, relpath, label, p_<class>..., pred, confidence, correct`` per image."""
    probs = np.asarray(probs)
    out = df[["image_id", "relpath", "label"]].reset_index(drop=True).copy()
    for i, c in enumerate(classes):
        out[f"p_{c}"] = probs[:, i]
    out["pred"] = [classes[i] for i in probs.argmax(1)]
    out["confidence"] = probs.max(1)
    out["correct"] = out["pred"] == out["label"]
    return out


def worst_errors(pred: pd.DataFrame, classes: Sequence[str], k: int = 12) -> pd.DataFrame:
    """The ``k`` wrong predictions made with the highest confidence, with the
    probability the model gave to the true class."""
    wrong = pred[~pred["correct"]].copy()
    wrong["p_true"] = [row[f"p_{row['label']}"] for _, row in wrong.iterrows()]
    return wrong.sort_values("confidence", ascending=False).head(k)


# ----------------------------------------------------------------------------- plots


def _title(fig, title: str, synthetic: bool):
    fig.suptitle(synthetic_title(title, synthetic))


def plot_confusion_matrices(
    y, probs, classes: Sequence[str], title: str = "", synthetic: bool = False
):
    """Counts and row-normalised (recall) confusion matrices side by side."""
    import matplotlib.pyplot as plt

    n = len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.6 * n + 2.8), 0.6 * n + 2.2))
    for ax, norm in zip(axes, (None, "true")):
        cm = confusion(y, probs, normalize=norm)
        im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if norm else max(1, cm.max()))
        for i in range(n):
            for j in range(n):
                v = cm[i, j]
                txt = f"{v:.2f}" if norm else f"{int(v)}"
                hi = v > (0.5 if norm else cm.max() / 2)
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if hi else "black",
                )
        ax.set_xticks(range(n), classes, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("normalised by true class (recall)" if norm else "counts", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _title(fig, title or "Confusion matrices", synthetic)
    fig.tight_layout()
    return fig


def _binary_curves(classes):
    return len(classes) == 2


def plot_roc_pr_curves(
    y,
    probs,
    classes: Sequence[str],
    title: str = "",
    synthetic: bool = False,
    positive: int | None = None,
):
    """One-vs-rest ROC and precision-recall curves per class (the positive class only for
    binary problems), with AUC / average precision in the legend."""
    import matplotlib.pyplot as plt

    y, probs = check_predictions(y, probs)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    which = (
        [positive if positive is not None else 1]
        if _binary_curves(classes)
        else range(len(classes))
    )
    cmap = plt.get_cmap("tab10")
    for c in which:
        pos = y == c
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = skm.roc_curve(pos, probs[:, c])
        prec, rec, _ = skm.precision_recall_curve(pos, probs[:, c])
        auc = skm.roc_auc_score(pos, probs[:, c])
        ap = skm.average_precision_score(pos, probs[:, c])
        col = cmap(c % 10)
        a1.plot(fpr, tpr, color=col, lw=1.5, label=f"{classes[c]} (AUC {auc:.3f})")
        a2.plot(
            rec,
            prec,
            color=col,
            lw=1.5,
            label=f"{classes[c]} (AP {ap:.3f}, prev. {pos.mean():.2f})",
        )
    a1.plot([0, 1], [0, 1], ls=":", color="grey")
    a1.set(
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        title="ROC, one vs rest",
    )
    a2.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall, one vs rest",
        ylim=(0, 1.02),
    )
    for a in (a1, a2):
        a.legend(fontsize=7.5, loc="lower right" if a is a1 else "lower left")
        a.grid(alpha=0.3)
        a.spines[["top", "right"]].set_visible(False)
    _title(fig, title or "ROC and precision-recall curves", synthetic)
    fig.tight_layout()
    return fig


def plot_reliability(
    y, curves: dict[str, np.ndarray], n_bins: int = 15, title: str = "", synthetic: bool = False
):
    """Reliability diagram: accuracy against confidence per bin, one line per entry of
    ``curves`` (name -> probs), ECE in the legend, and a histogram of confidences."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(
        2, 1, figsize=(5.6, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    a1.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    cmap = plt.get_cmap("tab10")
    for i, (name, p) in enumerate(curves.items()):
        t = reliability_table(y, p, n_bins)
        t = t[t["count"] > 0]
        ece = expected_calibration_error(y, p, n_bins)
        a1.plot(
            t["confidence"], t["accuracy"], color=cmap(i), lw=1.2, label=f"{name} (ECE {ece:.3f})"
        )
        a1.scatter(
            t["confidence"],
            t["accuracy"],
            s=12 + 120 * t["count"] / t["count"].max(),
            color=cmap(i),
            alpha=0.8,
            zorder=3,
        )
        a2.hist(
            np.asarray(p).max(1),
            bins=np.linspace(0, 1, n_bins + 1),
            alpha=0.45,
            color=cmap(i),
            label=name,
        )
    a1.set(ylabel="accuracy (marker size: images in the bin)", xlim=(0, 1), ylim=(0, 1.02))
    a1.legend(fontsize=8, loc="upper left")
    a1.grid(alpha=0.3)
    a2.set(xlabel="confidence (top-class probability)", ylabel="images")
    _title(fig, title or "Reliability diagram", synthetic)
    fig.tight_layout()
    return fig


__all__ = [
    "HEADLINE",
    "per_class_report",
    "confusion",
    "bootstrap_indices",
    "bootstrap_ci",
    "paired_bootstrap_diff",
    "ci_dict",
    "fmt_ci",
    "threshold_for_specificity",
    "threshold_for_sensitivity",
    "operating_point",
    "positive_class_analysis",
    "softmax",
    "reliability_table",
    "expected_calibration_error",
    "fit_temperature",
    "apply_temperature",
    "calibration_summary",
    "neg_log_loss",
    "evaluate_predictions",
    "headline_table",
    "prediction_frame",
    "worst_errors",
    "plot_confusion_matrices",
    "plot_roc_pr_curves",
    "plot_reliability",
]
