"""Subgroup performance (notebook 08): does the model work as well for every patient?

:func:`subgroup_table` scores the test predictions within each group of each metadata
attribute (sex, age band, body site, any other metadata column): balanced accuracy,
melanoma-vs-rest ROC-AUC, and sensitivity / specificity at the chosen melanoma threshold,
each with its number of images, melanomas (``n_pos``) and other lesions (``n_neg``).

Small groups are treated honestly. One kind of interval per number, the same as in every
other table: sensitivity and specificity get Wilson intervals that count lesions
(:func:`skinhelpers.evaluate.bootstrap.proportion_ci`, never of width zero); balanced accuracy
and the AUC a bootstrap of the lesions. Below ``min_n`` images a group's balanced accuracy
has no bootstrap interval; below ``min_pos`` melanomas or other lesions its AUC is not
reported (NaN, with the reason in ``note``). Groups under a minimum are shown but never
ranked (nor named best or worst): their numbers are too uncertain to order.
:func:`plot_forest` draws the table.

``dx_type`` (how the diagnosis was confirmed: histopathology, follow-up, consensus,
confocal) is described only (:func:`dx_type_table`), never used as a subgroup to rank nor
as a model input: it is decided *after* the lesion is seen (suspicious lesions are
excised, so ``histo`` nearly means "malignant"), so it leaks the label.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skinhelpers.evaluate import bootstrap, thresholds

#: age bands of the subgroup table (years)
AGE_BANDS = [
    (0, 30, "<30"),
    (30, 45, "30-44"),
    (45, 60, "45-59"),
    (60, 75, "60-74"),
    (75, 200, "75+"),
]
#: columns that are identifiers, labels or files, never subgroups
NOT_ATTRIBUTES = {
    "image_id",
    "relpath",
    "path",
    "label",
    "label_idx",
    "group",
    "lesion_id",
    "sha1",
    "mask_path",
    "split",
    "source_split",
    "source_label",  # a source's own class name: the label itself
    "copy_of",
    "copy_distance",
    "patient_id",  # an identifier (the split's group where the data have patients)
    "manifest_group",
    "fold",
    "pred",
    "age",
    "dx_type",
    "correct",
    "confidence",
}
COLUMNS = [
    "attribute",
    "group",
    "n",
    "n_lesions",
    "n_pos",
    "n_neg",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "ci_method",
    "note",
    "ranked",
    "rank",
]
METRICS = ("balanced_accuracy", "melanoma_auc", "sensitivity", "specificity")
DX_TYPE_NOTE = (
    "dx_type says how the diagnosis was confirmed (histo: histopathology, "
    "follow_up, consensus, confocal). It is chosen after a clinician has seen "
    "the lesion (suspicious ones are excised and go to histopathology), so it "
    "carries the label: shown here to describe the test set, never a model "
    "input nor a subgroup to rank."
)

log = logging.getLogger(__name__)


def age_band(age) -> pd.Series:
    """Ages in years -> ``<30, 30-44, 45-59, 60-74, 75+``; missing -> ``unknown``."""
    a = pd.to_numeric(pd.Series(age), errors="coerce")
    out = pd.Series("unknown", index=a.index, dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(a >= lo) & (a < hi)] = name
    return out


def attributes(df: pd.DataFrame, max_levels: int = 30) -> dict[str, pd.Series]:
    """The subgroup attributes a frame has: ``sex``, ``age_band`` (from ``age``),
    ``localization`` (body site) and every other metadata column with 2 to
    ``max_levels`` values (identifiers, labels and ``dx_type`` excluded)."""
    out = {}
    if "sex" in df:
        out["sex"] = df["sex"]
    if "age" in df and pd.to_numeric(df["age"], errors="coerce").notna().any():
        out["age_band"] = age_band(df["age"].to_numpy())
    if "localization" in df:
        out["localization"] = df["localization"]
    for c in df.columns:
        if c in out or c in NOT_ATTRIBUTES or c.startswith("p_"):
            continue
        v = df[c]
        if v.notna().any() and 2 <= v.nunique(dropna=True) <= max_levels:
            out[c] = v
    res = {}
    for k, v in out.items():
        v = pd.Series(v).reset_index(drop=True)
        if v.notna().any():
            res[k] = v.where(v.notna(), "unknown").astype(str)
    return res


def _bootstrapped(y, probs, fns, n_bootstrap, seed, groups) -> dict:
    """``{metric: (value, ci_low, ci_high)}`` of a group bootstrap (``groups`` None: images)."""
    t = bootstrap.bootstrap_ci(y, probs, fns, n_bootstrap, seed, groups=groups)
    return {k: (r["value"], r["ci_low"], r["ci_high"]) for k, r in t.iterrows()}


def _group_rows(y, probs, groups, pos, threshold, n_bootstrap, seed, min_n, min_pos) -> list:
    """The metric rows of one subgroup (images ``y, probs``, lesions ``groups``)."""
    n = len(y)
    n_pos = int((y == pos).sum()) if pos is not None else None
    n_neg = n - n_pos if pos is not None else None
    unit = "group bootstrap" if groups is not None else "image bootstrap"
    rows = []

    def add(metric, value, lo=np.nan, hi=np.nan, method="", note="", eligible=True):
        if np.isfinite(lo) and lo == hi:  # every resample gave the same value
            lo, hi, method = np.nan, np.nan, ""
            note = note or "every resample gave the same value: no interval"
            eligible = False
        rows.append(
            {
                "metric": metric,
                "value": float(value),
                "ci_low": float(lo),
                "ci_high": float(hi),
                "ci_method": method if np.isfinite(lo) else "",
                "note": note,
                "eligible": bool(eligible),
            }
        )

    ba = bootstrap.HEADLINE["balanced_accuracy"]
    if n >= min_n:
        v, lo, hi = _bootstrapped(y, probs, {"b": ba}, n_bootstrap, seed, groups)["b"]
        add("balanced_accuracy", v, lo, hi, unit)
    else:
        with warnings.catch_warnings():  # a tiny group may lack a predicted class
            warnings.simplefilter("ignore")
            value = ba(y, probs)
        add("balanced_accuracy", value, note=f"n={n} < {min_n}: no interval", eligible=False)
    if pos is None:
        return rows
    yb = (y == pos).astype(int)
    if n_pos >= min_pos and n_neg >= min_pos:
        s = probs[:, pos]
        auc = thresholds.binary_auc_fns()["auc"]
        v, lo, hi = _bootstrapped(
            yb, np.stack([1 - s, s], 1), {"auc": auc}, n_bootstrap, seed, groups
        )["auc"]
        add("melanoma_auc", v, lo, hi, unit, eligible=n >= min_n)
    else:
        add(
            "melanoma_auc",
            np.nan,
            note=f"{n_pos} positive and {n_neg} other images "
            f"(fewer than {min_pos}): AUC not reported",
            eligible=False,
        )
    if threshold is not None:
        ci = thresholds.operating_point_ci(yb.astype(bool), probs[:, pos], threshold, groups)
        for metric, count, what in (
            ("sensitivity", n_pos, "positive"),
            ("specificity", n_neg, "other"),
        ):
            c = ci[metric]
            note = "" if count >= min_pos else f"{count} {what} images (< {min_pos}): not ranked"
            if n < min_n:
                note = f"n={n} < {min_n}: not ranked"
            if count == 0:
                note = f"no {what} image"
            add(
                metric,
                c["value"],
                c["ci_low"],
                c["ci_high"],
                c["ci_method"],
                note,
                count >= min_pos and n >= min_n,
            )
    return rows


def subgroup_table(
    df: pd.DataFrame,
    probs,
    classes: Sequence[str],
    positive: str | None = None,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    min_n: int = 30,
    attrs: dict[str, pd.Series] | None = None,
    min_pos: int = 10,
    groups="group",
) -> pd.DataFrame:
    """Long table, one row per (attribute, group, metric): ``n`` images, ``n_lesions``,
    ``n_pos`` (positive-class images) and ``n_neg`` (the others), ``value``, its 95%
    interval (``ci_low``, ``ci_high``, ``ci_method``; NaN where none is meaningful, with
    the reason in ``note``), ``ranked`` and ``rank`` (1 = worst value among the ranked
    groups of that attribute and metric). The first rows are the whole test set (``all``),
    with the intervals the rest of the evaluation gives the same numbers.

    ``df`` holds the test images in the order of ``probs`` with their ``label`` and
    metadata; ``positive`` names the melanoma class, ``threshold`` the operating point.
    ``groups``: the lesion of each image, as a column name of ``df`` (default ``group``,
    the split's) or an array; the bootstrap resamples lesions (stratified by class) and
    the Wilson intervals count them. ``None``, or a column ``df`` lacks: images (the
    ``ci_method`` says "image bootstrap").

    Minimums: a group of fewer than ``min_n`` images is never ranked, and its balanced
    accuracy gets no interval; the AUC is reported from ``min_pos`` positive and
    ``min_pos`` other images; sensitivity and specificity (Wilson, shown at any size) are
    ranked from ``min_pos`` positive / other images. A group below a metric's minimum, an
    ``unknown`` group, or one whose interval is missing is never ranked.
    """
    classes = list(classes)
    probs = np.asarray(probs, dtype=np.float64)
    if len(df) != len(probs):
        raise ValueError(f"{len(df)} rows but {len(probs)} predictions")
    unknown = sorted(set(df["label"]) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}")
    y = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    pos = classes.index(positive) if positive in classes else None
    if isinstance(groups, str):
        groups = df[groups].astype(str).to_numpy() if groups in df.columns else None
    elif groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(df):
            raise ValueError(f"{len(groups)} groups for {len(df)} rows")
    parts = {"all": pd.Series(["all"] * len(df))}
    parts.update(attributes(df.reset_index(drop=True)) if attrs is None else attrs)
    rows = []
    for attr, values in parts.items():
        values = pd.Series(values).reset_index(drop=True)
        for g in sorted(values.unique(), key=str):
            m = (values == g).to_numpy()
            gm = None if groups is None else groups[m]
            head = {
                "attribute": attr,
                "group": g,
                "n": int(m.sum()),
                "n_lesions": int(pd.Series(gm).nunique()) if gm is not None else int(m.sum()),
                "n_pos": int((y[m] == pos).sum()) if pos is not None else pd.NA,
                "n_neg": int((y[m] != pos).sum()) if pos is not None else pd.NA,
            }
            for r in _group_rows(
                y[m], probs[m], gm, pos, threshold, n_bootstrap, seed, min_n, min_pos
            ):
                rows.append({**head, **r})
    out = pd.DataFrame(rows)
    out["ranked"] = (
        out.pop("eligible")
        & (out["attribute"] != "all")
        & (out["group"] != "unknown")
        & out["value"].notna()
        & out["ci_low"].notna()
    )
    out["rank"] = (
        out[out["ranked"]]
        .groupby(["attribute", "metric"])["value"]
        .rank(method="min")
        .astype("Int64")
    )
    for c in ("n_pos", "n_neg"):
        out[c] = out[c].astype("Int64")
    return out[COLUMNS]


def dx_type_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """How each test diagnosis was confirmed (counts), for description only."""
    if "dx_type" not in df or df["dx_type"].isna().all():
        return None
    return pd.crosstab(df["label"], df["dx_type"].fillna("unknown"), margins=True)


def plot_forest(table: pd.DataFrame, metrics: Sequence[str] | None = None, title: str = ""):
    """Forest plot: one panel per metric, one row per group (value and 95% CI; a value
    without an interval as a bare point, an unreported one left out), the whole-test-set
    value as a dashed line; groups not ranked (below a minimum) in grey."""
    metrics = [m for m in (metrics or METRICS) if m in set(table["metric"])]
    t0 = table[table["metric"] == metrics[0]]
    labels = [
        f"{a}: {g} (n={n})" if a != "all" else f"all (n={n})"
        for a, g, n in zip(t0["attribute"], t0["group"], t0["n"])
    ]
    ypos = np.arange(len(labels))[::-1]
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(3.2 * len(metrics) + 2.5, 0.28 * len(labels) + 1.3),
        sharey=True,
        squeeze=False,
    )
    for ax, metric in zip(axes[0], metrics):
        t = table[table["metric"] == metric].reset_index(drop=True)
        col = np.where(
            t["attribute"] == "all", "black", np.where(t["ranked"], "#4c72b0", "#aaaaaa")
        )
        v = t["value"].to_numpy(float)
        lo, hi = t["ci_low"].to_numpy(float), t["ci_high"].to_numpy(float)
        for k in range(len(t)):
            # the interval as a line from its ends (a percentile bootstrap interval need
            # not contain the estimate), the value as a point; no interval: the point alone
            if np.isfinite(lo[k]) and np.isfinite(hi[k]):
                ax.plot([lo[k], hi[k]], [ypos[k]] * 2, color=col[k], lw=1)
            if np.isfinite(v[k]):
                ax.plot(v[k], ypos[k], "o", ms=3.5, color=col[k])
        overall = t.loc[t["attribute"] == "all", "value"]
        if len(overall) and np.isfinite(overall.iloc[0]):
            ax.axvline(overall.iloc[0], color="black", ls="--", lw=0.8)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].set_yticks(ypos)
    axes[0, 0].set_yticklabels(labels, fontsize=7)
    fig.suptitle(title or "Subgroups (95% CI; grey: too few to rank)", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = [
    "AGE_BANDS",
    "DX_TYPE_NOTE",
    "METRICS",
    "age_band",
    "attributes",
    "dx_type_table",
    "plot_forest",
    "subgroup_table",
]
