"""Subgroup performance (notebook 08): does the model work as well for every patient?

:func:`subgroup_table` scores the test predictions within each group of each metadata
attribute (sex, age band, body site, any other metadata column), with bootstrap 95% CIs:
balanced accuracy, melanoma-vs-rest ROC-AUC, and sensitivity / specificity at the chosen
melanoma threshold. Groups smaller than ``min_n`` are shown but not ranked: their
intervals are too wide to order them. :func:`plot_forest` draws the table.

``dx_type`` (how the diagnosis was confirmed: histopathology, follow-up, consensus,
confocal) is described only (:func:`dx_type_table`), never used as a subgroup to rank nor
as a model input: it is decided *after* the lesion is seen (suspicious lesions are
excised, so ``histo`` nearly means "malignant"), so it leaks the label.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skinhelpers.evaluate import scores

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
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_pos",
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


def _metric_fns(pos: int | None, threshold: float | None) -> dict:
    fns = {"balanced_accuracy": lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1))}
    if pos is None:
        return fns

    def auc(y, p):
        yb = y == pos
        return skm.roc_auc_score(yb, p[:, pos]) if 0 < yb.sum() < len(yb) else np.nan

    fns["melanoma_auc"] = auc
    if threshold is not None:
        fns["sensitivity"] = lambda y, p: scores.operating_point(y == pos, p[:, pos], threshold)[
            "sensitivity"
        ]
        fns["specificity"] = lambda y, p: scores.operating_point(y == pos, p[:, pos], threshold)[
            "specificity"
        ]
    return fns


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
) -> pd.DataFrame:
    """Long table, one row per (attribute, group, metric): ``n``, ``value``, bootstrap
    95% CI (stratified by class within the group), ``n_pos`` (positive-class images),
    ``ranked`` (``n >= min_n``) and ``rank`` (1 = worst value among the ranked groups of
    that attribute and metric). The first rows are the whole test set (``all``).

    ``df`` holds the test images in the order of ``probs`` with their ``label`` and
    metadata; ``positive`` names the melanoma class, ``threshold`` the operating point.
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
    fns = _metric_fns(pos, threshold)
    groups = {"all": pd.Series(["all"] * len(df))}
    groups.update(attributes(df.reset_index(drop=True)) if attrs is None else attrs)
    rows = []
    for attr, values in groups.items():
        values = pd.Series(values).reset_index(drop=True)
        for g in sorted(values.unique(), key=str):
            m = (values == g).to_numpy()
            t = scores.bootstrap_ci(y[m], probs[m], fns, n_bootstrap, seed)
            for metric, r in t.iterrows():
                rows.append(
                    {
                        "attribute": attr,
                        "group": g,
                        "n": int(m.sum()),
                        "metric": metric,
                        "value": r["value"],
                        "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"],
                        "n_pos": int((y[m] == pos).sum()) if pos is not None else 0,
                    }
                )
    out = pd.DataFrame(rows, columns=COLUMNS[:-2])
    out["ranked"] = (out["n"] >= min_n) & (out["group"] != "unknown") & out["value"].notna()
    out["rank"] = (
        out[out["ranked"] & (out["attribute"] != "all")]
        .groupby(["attribute", "metric"])["value"]
        .rank(method="min")
        .astype("Int64")
    )
    return out[COLUMNS]


def dx_type_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """How each test diagnosis was confirmed (counts), for description only."""
    if "dx_type" not in df or df["dx_type"].isna().all():
        return None
    return pd.crosstab(df["label"], df["dx_type"].fillna("unknown"), margins=True)


def plot_forest(table: pd.DataFrame, metrics: Sequence[str] | None = None, title: str = ""):
    """Forest plot: one panel per metric, one row per group (value and 95% CI), the
    whole-test-set value as a dashed line; groups below ``min_n`` in grey."""
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
        lo = np.nan_to_num(v - t["ci_low"].to_numpy(float))
        hi = np.nan_to_num(t["ci_high"].to_numpy(float) - v)
        for k in range(len(t)):
            ax.errorbar(
                v[k],
                ypos[k],
                xerr=[[lo[k]], [hi[k]]],
                fmt="o",
                ms=3.5,
                color=col[k],
                ecolor=col[k],
                capsize=2,
                lw=1,
            )
        overall = t.loc[t["attribute"] == "all", "value"]
        if len(overall) and np.isfinite(overall.iloc[0]):
            ax.axvline(overall.iloc[0], color="black", ls="--", lw=0.8)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].set_yticks(ypos)
    axes[0, 0].set_yticklabels(labels, fontsize=7)
    fig.suptitle(title or "Subgroups (95% bootstrap CI; grey: too few images to rank)", fontsize=10)
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
