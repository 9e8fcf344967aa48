"""Resampling and intervals: the lesion (group) bootstrap of any metric, its vectorised
headline metrics (:data:`HEADLINE`), paired differences, and the Wilson interval of a
proportion (sensitivity, specificity) counting lesions.

Every interval of the suite comes from here: :func:`bootstrap_ci` (percentile bootstrap,
whole groups drawn class by class), :func:`paired_bootstrap_diff` (two sets of predictions
on the same resamples) and :func:`proportion_ci` (Wilson, effective number of images).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import sklearn
from sklearn import metrics as skm

from skinhelpers.model.metrics import check_predictions, macro_auc
from skinhelpers.progress import progress

log = logging.getLogger(__name__)

_AVG = {"zero_division": 0}

#: the headline metrics: name -> f(y, probs); each gets a bootstrap CI
HEADLINE: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: skm.accuracy_score(y, p.argmax(1)),
    "balanced_accuracy": lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1)),
    "f1_macro": lambda y, p: skm.f1_score(y, p.argmax(1), average="macro", **_AVG),
    "roc_auc_macro_ovr": macro_auc,
}


# ----------------------------------------------------------------------------- bootstrap
# The resampling unit is the split's *group* (a lesion; ``group`` in split.csv): HAM10000's
# test split holds 1,430 images of 1,066 lesions, and images of one lesion are not
# independent, so resampling them one by one makes every interval too narrow. A resample
# draws, class by class, as many groups as the class has (with replacement) and takes every
# image of each drawn group as often as the group was drawn: it is a vector of integer
# multiplicities over the images (its size varies). ``groups=None`` makes every image its
# own group: the image bootstrap, for callers that have no groups (the result says so:
# ``bootstrap_unit`` "image").


def group_codes(groups, n: int) -> np.ndarray:
    """Integer codes ``0..G-1`` of ``groups`` (``None``: every image its own group)."""
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups).ravel()
    if len(g) != n:
        raise ValueError(f"{len(g)} groups for {n} images")
    if pd.isna(pd.Series(g)).any():
        raise ValueError("groups must not be missing: name every image's lesion (group)")
    return pd.factorize(g, sort=True)[0].astype(np.int64)


def bootstrap_unit(groups, n: int) -> dict:
    """``{"bootstrap_unit": "group" | "image", "n_units": ...}``: what a bootstrap with
    these ``groups`` resamples, for the records (metrics.json, tables)."""
    if groups is None:
        return {"bootstrap_unit": "image", "n_units": int(n)}
    return {"bootstrap_unit": "group", "n_units": int(group_codes(groups, n).max() + 1) if n else 0}


def _group_class(y: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's class for stratification: its most common label (ties: the lowest
    class index; HAM10000's lesions have one label)."""
    k = int(y.max()) + 1 if len(y) else 1
    counts = np.bincount(codes * k + y, minlength=n_groups * k).reshape(n_groups, k)
    return counts.argmax(1)


def _multiplicities(draws: np.ndarray, size: int) -> np.ndarray:
    """``(B, k)`` drawn indices -> ``(B, size)`` counts of each index per row."""
    b = len(draws)
    flat = (np.arange(b, dtype=np.int64)[:, None] * size + draws).ravel()
    return np.bincount(flat, minlength=b * size).reshape(b, size).astype(np.int32)


def _group_draws(y, codes, n_bootstrap: int, seed: int, stratified: bool) -> np.ndarray:
    """``(n_bootstrap, G)``: how often each group is drawn in each resample; stratified by
    the groups' classes (each class keeps its number of groups)."""
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    if not stratified:
        return _multiplicities(rng.integers(0, n_groups, size=(n_bootstrap, n_groups)), n_groups)
    gcls = _group_class(y, codes, n_groups)
    out = np.zeros((n_bootstrap, n_groups), dtype=np.int32)
    for c in np.unique(gcls):
        members = np.flatnonzero(gcls == c)
        draws = members[rng.integers(0, len(members), size=(n_bootstrap, len(members)))]
        out += _multiplicities(draws, n_groups)
    return out


def bootstrap_weights(
    y, n_bootstrap: int, seed: int = 0, stratified: bool = True, groups=None
) -> np.ndarray:
    """``(n_bootstrap, N)`` integer multiplicities of the images in each resample.

    With ``groups`` (one per image: the lesion) whole groups are drawn, so the images of a
    group always have the same multiplicity; stratified (default) by each group's class
    (its most common label), so every resample keeps each class's number of groups.
    ``groups=None`` resamples images (stratified by ``y``: class counts kept)."""
    y = np.asarray(y).ravel().astype(np.int64)
    codes = group_codes(groups, len(y))
    return _group_draws(y, codes, n_bootstrap, seed, stratified)[:, codes]


def indices_from_weights(weights: np.ndarray) -> list[np.ndarray]:
    """Multiplicities ``(B, N)`` -> the index array of each resample (image ``i`` repeated
    ``weights[b, i]`` times)."""
    weights = np.asarray(weights)
    rows = np.arange(weights.shape[1])
    return [np.repeat(rows, w) for w in weights]


def bootstrap_indices(y, n_bootstrap: int, seed: int = 0, stratified: bool = True, groups=None):
    """The resamples of :func:`bootstrap_weights` as index arrays: ``(n_bootstrap, N)``
    without groups (images, stratified by ``y`` by default); with ``groups`` a list of
    ``n_bootstrap`` index arrays, whose lengths vary with the groups drawn."""
    idx = indices_from_weights(bootstrap_weights(y, n_bootstrap, seed, stratified, groups))
    if groups is None:
        return np.stack(idx) if idx else np.empty((0, len(np.asarray(y))), dtype=np.int64)
    return idx


#: resamples scored at once by the vectorised headline metrics (memory ~ chunk x N x C)
BOOT_CHUNK = 100


def _weights_of(idx, n: int) -> np.ndarray:
    """Index arrays (``(B, k)`` or a list) -> ``(B, n)`` multiplicities."""
    return np.stack([np.bincount(np.asarray(i, dtype=np.int64), minlength=n) for i in idx])


def headline_weighted(y: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:data:`HEADLINE` on every resample at once, a resample given as integer multiplicities
    ``weights[b]`` over the images: a ``(B, 4)`` array, equal to calling each metric on the
    resample written out (tested against scikit-learn to 1e-9).

    Confusion counts are a weighted count of each image's (true, predicted) cell; the AUC
    of a class is the weighted Mann-Whitney U: its scores sorted once, the cumulative
    weights of the negatives read off below (and, ties counted half, at) each positive.
    Same definitions as scikit-learn's: balanced accuracy averages recall over the classes
    with true images; macro F1 averages over the classes that are true or predicted (0 for
    an empty one); the macro AUC averages the one-vs-rest AUCs of the classes present
    (NaN with fewer than two; with two classes, class 1's AUC)."""
    w = np.asarray(weights, dtype=np.float64)
    n_boot, c = len(w), probs.shape[1]
    out = np.full((n_boot, len(HEADLINE)), np.nan)
    if n_boot == 0:
        return out
    y = np.asarray(y, dtype=np.int64)
    cell = np.zeros((len(y), c * c))
    cell[np.arange(len(y)), y * c + probs.argmax(1)] = 1.0
    cm = (w @ cell).reshape(n_boot, c, c)  # exact: integer weights, sums far below 2**53
    n = w.sum(1)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_n, pred_n = cm.sum(2), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as intended
        recall = np.where(true_n > 0, tp / true_n, np.nan)
        f1_den = true_n + pred_n
        f1 = np.where(f1_den > 0, 2 * tp / f1_den, np.nan)
        out[:, 0] = np.where(n > 0, tp.sum(1) / n, np.nan)
        out[:, 1] = np.nanmean(recall, axis=1)
        out[:, 2] = np.nanmean(f1, axis=1)
        aucs = np.full((n_boot, c), np.nan)
        for k in [1] if c == 2 else range(c):
            pos = y == k
            if not pos.any() or pos.all():
                continue
            neg = np.flatnonzero(~pos)
            order = np.argsort(probs[neg, k], kind="stable")
            s_neg = probs[neg, k][order]
            cum = np.zeros((n_boot, len(neg) + 1))
            np.cumsum(w[:, neg[order]], axis=1, out=cum[:, 1:])
            s_pos = probs[pos, k]
            below = np.searchsorted(s_neg, s_pos, side="left")
            upto = np.searchsorted(s_neg, s_pos, side="right")
            w_pos = w[:, pos]
            # per positive: negatives below it, plus half those tied with it
            u = 0.5 * (w_pos * (cum[:, below] + cum[:, upto])).sum(1)
            n_pos, n_neg = w_pos.sum(1), cum[:, -1]
            aucs[:, k] = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
        present = (true_n > 0).sum(1)
        auc = aucs[:, 1] if c == 2 else np.nanmean(aucs, axis=1)
        out[:, 3] = np.where(present >= 2, auc, np.nan)
    return out


def headline_resampled(y: np.ndarray, probs: np.ndarray, idx) -> np.ndarray:
    """:func:`headline_weighted` on resamples given as index arrays (``(B, N)`` or a list
    of arrays of any lengths)."""
    return headline_weighted(y, probs, _weights_of(idx, len(y)))


def _resampled(y, probs, draws, codes, fns, desc) -> np.ndarray:
    """``(B, len(fns))``: each metric on each resample (``draws``: the groups' multiplicities,
    ``codes``: each image's group). Metrics of :data:`HEADLINE` are vectorised in chunks
    of :data:`BOOT_CHUNK`; other metrics see each resample written out, one at a time."""
    names, funcs = list(fns), list(fns.values())
    heads = list(HEADLINE.values())
    fast = {
        j: next(i for i, h in enumerate(heads) if h is f)
        for j, f in enumerate(funcs)
        if any(h is f for h in heads)
    }
    slow = [j for j in range(len(names)) if j not in fast]
    out = np.full((len(draws), len(names)), np.nan)
    bar = None if desc is None else progress(total=len(draws), desc=desc, unit="resample")
    rows = np.arange(len(y))
    for start in range(0, len(draws), BOOT_CHUNK):
        w = draws[start : start + BOOT_CHUNK][:, codes]
        if fast:
            h = headline_weighted(y, probs, w)
            for j, col in fast.items():
                out[start : start + len(w), j] = h[:, col]
        for b, wb in enumerate(w if slow else ()):
            i = np.repeat(rows, wb)
            for j in slow:
                out[start + b, j] = funcs[j](y[i], probs[i])
        if bar is not None:
            bar.update(len(w))
    if bar is not None:
        bar.close()
    return out


def _draws(y, n_bootstrap: int, seed: int, stratified: bool, groups):
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    codes = group_codes(groups, len(y))
    return _group_draws(y, codes, n_bootstrap, seed, stratified), codes


@contextlib.contextmanager
def _fast_metrics():
    """Warnings off and scikit-learn's input validation skipped (the inputs were checked
    once by the caller): that validation dominates the cost of small metrics."""
    with (
        warnings.catch_warnings(),
        sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
    ):
        warnings.simplefilter("ignore")
        yield


def bootstrap_ci(
    y,
    probs,
    fns: dict[str, Callable] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
    desc: str | None = None,
    groups=None,
) -> pd.DataFrame:
    """Point estimate and percentile bootstrap ``1 - alpha`` interval of each metric.

    ``fns`` maps a name to ``f(y, probs) -> float`` (default :data:`HEADLINE`).
    ``groups`` (one per image, e.g. the split's lesion ``group``) makes whole groups the
    resampling unit, stratified by each group's class; ``None`` resamples images (for
    callers without groups: ``attrs["bootstrap_unit"]`` says "image"). Resamples where a
    metric is undefined (NaN) are left out of that metric's interval. ``desc`` shows a
    progress bar.
    Returns a frame indexed by metric with ``value, ci_low, ci_high, n_boot``; its
    ``attrs`` hold ``bootstrap_unit`` and ``n_units``.
    """
    y, probs = check_predictions(y, probs)
    fns = HEADLINE if fns is None else fns
    draws, codes = _draws(y, n_bootstrap, seed, stratified, groups)
    rows = []
    # inputs checked once above; the resamples skip the validation (_fast_metrics)
    with _fast_metrics():
        arr = _resampled(y, probs, draws, codes, fns, desc)
        values = {k: float(f(y, probs)) for k, f in fns.items()}
    for j, k in enumerate(fns):
        b = arr[:, j][np.isfinite(arr[:, j])]
        lo, hi = np.quantile(b, [alpha / 2, 1 - alpha / 2]) if len(b) else (np.nan, np.nan)
        rows.append(
            {
                "metric": k,
                "value": values[k],
                "ci_low": float(lo),
                "ci_high": float(hi),
                "n_boot": int(len(b)),
            }
        )
    out = pd.DataFrame(rows).set_index("metric")
    out.attrs.update(bootstrap_unit(groups, len(y)))
    return out


def paired_bootstrap_diff(
    y,
    probs_a,
    probs_b,
    fns: dict[str, Callable] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    desc: str | None = None,
    groups=None,
) -> pd.DataFrame:
    """``metric(b) - metric(a)`` on the same images, with a paired bootstrap interval
    (both scored on each resample) and the share of resamples where ``b`` is better.
    The way to say whether a change (TTA, EMA, calibration) helps beyond noise.
    ``groups`` as in :func:`bootstrap_ci` (``None``: images are resampled)."""
    y, probs_a = check_predictions(y, probs_a)
    _, probs_b = check_predictions(y, probs_b)
    fns = HEADLINE if fns is None else fns
    draws, codes = _draws(y, n_bootstrap, seed, True, groups)
    rows = []
    with _fast_metrics():
        diffs = _resampled(y, probs_b, draws, codes, fns, desc) - _resampled(
            y, probs_a, draws, codes, fns, None
        )
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
    out = pd.DataFrame(rows).set_index("metric")
    out.attrs.update(bootstrap_unit(groups, len(y)))
    return out


# ----------------------------------------------------------------------------- proportions


def wilson_interval(k: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``n`` may be an effective, non-integer
    count); ``(nan, nan)`` for ``n == 0``. Never of width zero: 7 of 7 gives 0.646-1."""
    if not n > 0:
        return float("nan"), float("nan")
    from scipy.stats import norm  # local: scipy.stats is slow to import

    z = float(norm.ppf(1 - alpha / 2))
    p, z2 = k / n, z * z
    den = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / den
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_ci(hits, groups=None, alpha: float = 0.05) -> dict:
    """A proportion (sensitivity: hits among the positives; specificity: hits among the
    negatives) with its Wilson ``1 - alpha`` interval, the one interval every table gives
    sensitivity and specificity.

    With ``groups`` (the lesion of each image) the interval counts lesions, not images,
    as far as they repeat each other: it uses the effective number of images ``n / deff``,
    the design effect ``deff`` of the clustered proportion (the between-group variance of
    the ratio estimator over the binomial one, at least 1: a lesion's images that agree
    carry less than independent images). When every image agrees (0 or 100%) ``deff``
    cannot be estimated and the number of groups is used. Without groups (or with one
    image per group) it is the plain Wilson interval.
    Returns ``value, ci_low, ci_high, k, n, n_effective, ci_method`` (JSON-ready).
    """
    h = np.asarray(hits, dtype=bool).ravel()
    n, k = len(h), int(h.sum())
    if n == 0:
        nan = float("nan")
        return {
            "value": nan,
            "ci_low": nan,
            "ci_high": nan,
            "k": 0,
            "n": 0,
            "n_effective": 0.0,
            "ci_method": "wilson",
        }
    p = k / n
    deff = 1.0
    if groups is not None:
        codes = group_codes(groups, n)
        n_groups = int(codes.max()) + 1
        if 0 < k < n:
            kg = np.bincount(codes, weights=h, minlength=n_groups)
            ng = np.bincount(codes, minlength=n_groups)
            deff = max(1.0, float(((kg - p * ng) ** 2).sum() / (n * p * (1 - p))))
        else:
            deff = n / n_groups
    n_eff = n / deff
    lo, hi = wilson_interval(p * n_eff, n_eff, alpha)
    return {
        "value": float(p),
        "ci_low": lo,
        "ci_high": hi,
        "k": k,
        "n": n,
        "n_effective": float(n_eff),
        "ci_method": "wilson" if groups is None else "wilson, effective n (groups)",
    }


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


__all__ = [
    "HEADLINE",
    "bootstrap_indices",
    "bootstrap_unit",
    "bootstrap_weights",
    "bootstrap_ci",
    "group_codes",
    "headline_weighted",
    "indices_from_weights",
    "proportion_ci",
    "wilson_interval",
    "paired_bootstrap_diff",
    "ci_dict",
    "fmt_ci",
]
