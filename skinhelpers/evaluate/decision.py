"""Post-hoc levers on a trained model's probabilities, each chosen on validation only.

- :func:`average` — an ensemble that costs nothing new: the mean of two checkpoints'
  probabilities (e.g. the best raw and the best EMA weights of one run).
- :func:`prior_correction` — the decision rule for balanced accuracy: ``p * prior^-delta``
  renormalised (a logit adjustment after training; ``delta`` 0 leaves the model as it is).
- :func:`late_fusion` — the image model times the metadata model:
  ``log p_img + w * log p_meta`` renormalised (a naive-Bayes product of two class-balanced
  posteriors; ``w`` 0 is the image model alone).

One number per lever is fitted on the validation split (a grid search on balanced
accuracy, smoothed over neighbouring grid points, ties to the neutral value): with 17-21
images in the smallest classes, per-class biases would overfit. :func:`lever_table`
scores each step on the test split against the one before it with a paired bootstrap
of the test lesions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from skinhelpers.evaluate import bootstrap

log = logging.getLogger(__name__)

DELTA_GRID = tuple(np.round(np.arange(-1.0, 1.01, 0.1), 2))
WEIGHT_GRID = tuple(np.round(np.arange(0.0, 1.51, 0.1), 2))
EPS = 1e-8


def _normalise_log(logp: np.ndarray) -> np.ndarray:
    logp = logp - logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def _check(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(
            f"probabilities must be a finite non-negative (n, classes) array, got {p.shape}"
        )
    return p


def average(*probs) -> np.ndarray:
    """The mean of several models' probabilities on the same images."""
    ps = [_check(p) for p in probs]
    if len({p.shape for p in ps}) != 1:
        raise ValueError(f"shapes differ: {[p.shape for p in ps]}")
    return np.mean(ps, axis=0)


def class_prior(labels, num_classes: int) -> np.ndarray:
    """Class frequencies of ``labels`` (class indices); every class at least one count."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    counts = np.maximum(counts, 1).astype(np.float64)
    return counts / counts.sum()


def prior_correction(probs, prior, delta: float) -> np.ndarray:
    """``p * prior^-delta``, renormalised: delta > 0 favours the rare classes."""
    p, prior = _check(probs), np.asarray(prior, dtype=np.float64)
    if prior.shape != (p.shape[1],):
        raise ValueError(f"prior has {prior.shape} entries for {p.shape[1]} classes")
    return _normalise_log(np.log(p + EPS) - delta * np.log(prior))


def late_fusion(probs_image, probs_meta, weight: float) -> np.ndarray:
    """``log p_image + weight * log p_meta``, renormalised."""
    a, b = _check(probs_image), _check(probs_meta)
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and metadata {b.shape} probabilities differ in shape")
    return _normalise_log(np.log(a + EPS) + weight * np.log(b + EPS))


def choose_on_validation(
    y_val, candidates, neutral: float, smooth: int = 3
) -> tuple[float, pd.DataFrame]:
    """The grid value whose validation balanced accuracy, averaged over ``smooth``
    neighbouring grid points, is highest (ties: the value nearest ``neutral``).
    ``candidates``: {value: validation probabilities}. Returns (value, table)."""
    values = sorted(candidates)
    if not values:
        raise ValueError("no candidate values to choose from")
    y_val = np.asarray(y_val)
    ba = np.array([balanced_accuracy_score(y_val, candidates[v].argmax(1)) for v in values])
    k = max(1, int(smooth))
    sm = pd.Series(ba).rolling(k, center=True, min_periods=1).mean().to_numpy()
    order = sorted(range(len(values)), key=lambda i: (-round(sm[i], 10), abs(values[i] - neutral)))
    best = values[order[0]]
    table = pd.DataFrame({"value": values, "val_balanced_accuracy": ba, "smoothed": sm})
    table["chosen"] = table["value"] == best
    return float(best), table


def fit_prior_correction(y_val, probs_val, prior, grid: Sequence[float] = DELTA_GRID):
    """(delta, table): the prior-correction exponent chosen on validation."""
    return choose_on_validation(
        y_val, {float(d): prior_correction(probs_val, prior, d) for d in grid}, neutral=0.0
    )


def fit_fusion_weight(y_val, probs_image_val, probs_meta_val, grid: Sequence[float] = WEIGHT_GRID):
    """(weight, table): the weight of the metadata model chosen on validation."""
    return choose_on_validation(
        y_val,
        {float(w): late_fusion(probs_image_val, probs_meta_val, w) for w in grid},
        neutral=0.0,
    )


def lever_table(
    y_test,
    steps: Sequence[tuple[str, np.ndarray]],
    n_bootstrap: int = 1000,
    seed: int = 0,
    metrics: dict | None = None,
    groups=None,
) -> pd.DataFrame:
    """Each step against the step before it, and the last against the first, on the same
    test images: rows (step, metric) with the value, the paired difference and its 95%
    bootstrap interval. ``steps``: [(name, test probabilities)], the first the base.
    ``groups``: the test images' lesions, the unit the bootstrap resamples (``None``:
    images); the table's ``attrs`` say which."""
    if len(steps) < 2:
        raise ValueError("need a base and at least one lever")
    metrics = metrics or {
        k: bootstrap.HEADLINE[k] for k in ("balanced_accuracy", "roc_auc_macro_ovr")
    }
    pairs = [(steps[i - 1], steps[i]) for i in range(1, len(steps))]
    if len(steps) > 2:
        pairs.append((steps[0], ("all levers", steps[-1][1])))
    rows = []
    for (name_a, pa), (name_b, pb) in pairs:
        d = bootstrap.paired_bootstrap_diff(
            y_test, pa, pb, metrics, n_bootstrap, seed, groups=groups
        )
        for metric, r in d.iterrows():
            rows.append(
                {
                    "step": name_b,
                    "against": name_a,
                    "metric": metric,
                    "before": r["a"],
                    "after": r["b"],
                    "diff": r["diff"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "p_better": r["p_better"],
                }
            )
    out = pd.DataFrame(rows)
    out.attrs.update(bootstrap.bootstrap_unit(groups, len(y_test)))
    return out


def stack_levers(
    y_val,
    val: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    primary: str,
    prior,
    meta_val: np.ndarray | None = None,
    meta_test: np.ndarray | None = None,
) -> dict:
    """Apply the levers in a fixed order, each chosen on validation, to both splits:
    1. the average of every checkpoint in ``val``/``test`` instead of ``primary`` alone
       (kept when it scores higher on validation), 2. the prior correction, 3. late fusion
       with the metadata model (when ``meta_val``/``meta_test`` are given).

    Returns ``steps`` [(name, test probabilities)] (the first is ``primary`` as it is;
    a lever whose chosen value is neutral still appears, unchanged), ``chosen`` {lever:
    value}, ``tables`` {lever: the validation grid} and the final ``val``/``test``
    probabilities."""
    if primary not in val or set(val) != set(test):
        raise ValueError(f"'{primary}' and the same checkpoints are needed in val and test")
    cur_v, cur_t = val[primary], test[primary]
    steps = [(primary, cur_t)]
    chosen, tables = {}, {}
    if len(val) > 1:
        names = sorted(val)
        avg_v, avg_t = average(*(val[k] for k in names)), average(*(test[k] for k in names))
        share, tables["average"] = choose_on_validation(
            y_val, {0.0: cur_v, 1.0: avg_v}, neutral=0.0, smooth=1
        )
        chosen["average"] = "+".join(names) if share else primary
        if share:
            cur_v, cur_t = avg_v, avg_t
        steps.append((f"average of {' + '.join(names)}" if share else "(no averaging)", cur_t))
    delta, tables["prior_correction"] = fit_prior_correction(y_val, cur_v, prior)
    chosen["prior_correction_delta"] = delta
    cur_v, cur_t = prior_correction(cur_v, prior, delta), prior_correction(cur_t, prior, delta)
    steps.append((f"prior correction (delta {delta:+.1f})", cur_t))
    if meta_val is not None and meta_test is not None:
        w, tables["metadata_fusion"] = fit_fusion_weight(y_val, cur_v, meta_val)
        chosen["metadata_weight"] = w
        cur_v, cur_t = late_fusion(cur_v, meta_val, w), late_fusion(cur_t, meta_test, w)
        steps.append((f"metadata fusion (weight {w:.1f})", cur_t))
    return {"steps": steps, "chosen": chosen, "tables": tables, "val": cur_v, "test": cur_t}


def plot_lever_table(table: pd.DataFrame, metric: str = "balanced_accuracy", title: str = ""):
    """A forest plot of each step's paired change on test, with its 95% interval."""
    import matplotlib.pyplot as plt  # local: plotting is optional for the library

    t = table[table["metric"] == metric].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(t) + 1.2))
    ys = np.arange(len(t))[::-1]
    ax.errorbar(
        t["diff"],
        ys,
        xerr=[t["diff"] - t["ci_low"], t["ci_high"] - t["diff"]],
        fmt="o",
        color="tab:blue",
        capsize=3,
    )
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(ys, [f"{s}\n(vs {a})" for s, a in zip(t["step"], t["against"])], fontsize=8)
    ax.set_xlabel(f"paired change in test {metric.replace('_', ' ')} (95% CI)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
