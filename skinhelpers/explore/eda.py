"""Exploratory summaries for notebook 01: classes, metadata by diagnosis, image sizes.

Metadata columns (``age``, ``sex``, ``localization``, ``dx_type``) exist only where a
dataset ships them (HAM10000 and the demo set); every function here copes with their
absence: :func:`available_metadata` says which are there, and the notebook skips the rest.
Categorical values ``unknown`` / empty count as missing.
"""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from skinhelpers.figures import synthetic_title

log = logging.getLogger(__name__)

METADATA_COLUMNS = ("age", "sex", "localization", "dx_type")
MISSING_VALUES = {"unknown", "", "nan", "none", "null"}
DX_TYPE_MEANING = {
    "histo": "histopathology",
    "follow_up": "follow-up examination (unchanged over time)",
    "consensus": "expert consensus",
    "confocal": "in-vivo confocal microscopy",
}


def _classes(df: pd.DataFrame) -> list[str]:
    classes = df.attrs.get("classes") or sorted(df["label"].unique())
    return [c for c in classes if (df["label"] == c).any()]


def clean_category(s: pd.Series) -> pd.Series:
    """Strings stripped; ``unknown``, empty and NaN become ``NaN`` (missing)."""
    out = s.astype("object").where(s.notna(), None)
    out = out.map(
        lambda v: None if v is None or str(v).strip().lower() in MISSING_VALUES else str(v).strip()
    )
    return out.astype("object")


def available_metadata(df: pd.DataFrame, columns=METADATA_COLUMNS) -> list[str]:
    """The metadata columns that hold at least one known value."""
    out = []
    for c in columns:
        if c not in df.columns:
            continue
        known = (
            pd.to_numeric(df[c], errors="coerce").notna()
            if c == "age"
            else clean_category(df[c]).notna()
        )
        if known.any():
            out.append(c)
    return out


# ----------------------------------------------------------------------------- tables


def imbalance_ratio(df: pd.DataFrame) -> float:
    """Images in the largest class / images in the smallest non-empty class."""
    counts = df["label"].value_counts()
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else float("nan")


def class_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per class: images, share, groups (lesions), images per group; a total row."""
    classes = df.attrs.get("classes") or sorted(df["label"].unique())
    g = df.groupby("label")
    t = pd.DataFrame({"images": g.size(), "groups": g["group"].nunique()}).reindex(
        classes, fill_value=0
    )
    t["share"] = t["images"] / max(1, t["images"].sum())
    t["images_per_group"] = t["images"] / t["groups"].replace(0, np.nan)
    total = pd.DataFrame(
        {
            "images": [len(df)],
            "groups": [df["group"].nunique()],
            "share": [1.0],
            "images_per_group": [len(df) / max(1, df["group"].nunique())],
        },
        index=["total"],
    )
    out = pd.concat([t, total])[["images", "share", "groups", "images_per_group"]]
    out.index.name = "class"
    return out


def metadata_overview(df: pd.DataFrame, columns=METADATA_COLUMNS) -> pd.DataFrame:
    """Per metadata column: known values, missing share, distinct values, the commonest."""
    rows = []
    for c in columns:
        if c not in df.columns:
            rows.append(
                {
                    "column": c,
                    "known": 0,
                    "missing_share": 1.0,
                    "distinct": 0,
                    "most_common": "(not in this dataset)",
                }
            )
            continue
        if c == "age":
            v = pd.to_numeric(df[c], errors="coerce")
            known = v.dropna()
            common = (
                (
                    f"median {known.median():.0f} (IQR {known.quantile(0.25):.0f}-"
                    f"{known.quantile(0.75):.0f})"
                )
                if len(known)
                else "-"
            )
        else:
            known = clean_category(df[c]).dropna()
            vc = known.value_counts()
            common = ", ".join(f"{k} ({n})" for k, n in vc.head(3).items()) or "-"
        rows.append(
            {
                "column": c,
                "known": int(len(known)),
                "missing_share": 1 - len(known) / max(1, len(df)),
                "distinct": int(known.nunique()),
                "most_common": common,
            }
        )
    return pd.DataFrame(rows)


def category_share(df: pd.DataFrame, column: str, top: int | None = None) -> pd.DataFrame:
    """Rows: classes; columns: values of ``column`` (``unknown`` last); cells: row shares.

    ``top``: keep the ``top`` commonest values, the rest become ``other``.
    """
    v = clean_category(df[column]).fillna("unknown")
    if top is not None:
        common = [x for x in v[v != "unknown"].value_counts().index[:top]]
        v = v.where(v.isin(common) | (v == "unknown"), "other")
    ct = pd.crosstab(df["label"], v, normalize="index").reindex(_classes(df))
    order = [c for c in v.value_counts().index if c not in ("other", "unknown")]
    order += [c for c in ("other", "unknown") if c in ct.columns]
    return ct[order]


def age_by_class(df: pd.DataFrame) -> pd.DataFrame:
    """Per class: count, mean, median, quartiles, missing ages."""
    age = pd.to_numeric(df["age"], errors="coerce")
    g = age.groupby(df["label"])
    out = pd.DataFrame(
        {
            "n": g.count(),
            "missing": g.apply(lambda s: int(s.isna().sum())),
            "mean": g.mean(),
            "median": g.median(),
            "q25": g.quantile(0.25),
            "q75": g.quantile(0.75),
        }
    ).reindex(_classes(df))
    out.index.name = "class"
    return out


def image_size_stats(info: pd.DataFrame) -> pd.DataFrame:
    """Width, height, aspect (w/h) and megapixels of the readable images: describe()."""
    ok = info[info["ok"].astype(bool)] if "ok" in info else info
    ok = ok.dropna(subset=["width", "height"])
    s = pd.DataFrame({"width": ok["width"].astype(float), "height": ok["height"].astype(float)})
    s["aspect"] = s["width"] / s["height"]
    s["megapixels"] = s["width"] * s["height"] / 1e6
    return s.describe().T


def size_counts(info: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The commonest image sizes (width x height) with counts and shares."""
    ok = info[info["ok"].astype(bool)] if "ok" in info else info
    ok = ok.dropna(subset=["width", "height"])
    size = ok["width"].astype(int).astype(str) + " x " + ok["height"].astype(int).astype(str)
    vc = size.value_counts()
    out = pd.DataFrame({"images": vc, "share": vc / max(1, len(ok))}).head(top)
    out.index.name = "width x height"
    return out


# ----------------------------------------------------------------------------- plots


def plot_age_by_class(df: pd.DataFrame):
    """Box plots of age per class with the points themselves (n per class in the labels)
    and the overall histogram (seaborn)."""
    classes = _classes(df)
    data = pd.DataFrame(
        {"class": df["label"].astype(str), "age": pd.to_numeric(df["age"], errors="coerce")}
    )
    known = data.dropna(subset=["age"])
    n = known["class"].value_counts().reindex(classes, fill_value=0)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[3, 1.3])
    sns.boxplot(
        data=known,
        x="class",
        y="age",
        order=classes,
        showfliers=False,
        width=0.6,
        color="#dde6f0",
        medianprops={"color": "crimson"},
        ax=ax,
    )
    points = known.sample(frac=1, random_state=0).groupby("class").head(400)  # lightly
    sns.stripplot(
        data=points,
        x="class",
        y="age",
        order=classes,
        size=2,
        alpha=0.3,
        jitter=0.18,
        color="#4c72b0",
        ax=ax,
    )
    ax.set_xticks(range(len(classes)), [f"{c}\n(n={n[c]})" for c in classes], fontsize=8)
    ax.set(xlabel="", ylabel="age (years)", title="Age by diagnosis")
    sns.histplot(known["age"], bins=np.arange(0, 95, 5), color="#8c564b", ax=ax2)
    ax2.set(xlabel="age (years)", title=f"All images (missing: {int(data['age'].isna().sum())})")
    sns.despine(fig)
    fig.suptitle(synthetic_title("Age", df), fontsize=11)
    fig.tight_layout()
    return fig


def plot_category_by_class(df: pd.DataFrame, column: str, top: int = 12):
    """Share of each value of ``column`` within each class.

    Few values: stacked horizontal bars; many (> 6): an annotated heatmap.
    """
    ct = category_share(df, column, top=top)
    n_per_class = df["label"].value_counts().reindex(ct.index)
    ylabels = [f"{c} (n={n})" for c, n in zip(ct.index, n_per_class)]
    if ct.shape[1] <= 6:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(ct) + 1.6))
        left = np.zeros(len(ct))
        colors = plt.get_cmap("tab10")(np.arange(ct.shape[1]))
        for j, col in enumerate(ct.columns):
            vals = ct[col].to_numpy()
            color = "#bbbbbb" if col == "unknown" else colors[j]
            bars = ax.barh(range(len(ct)), vals, left=left, color=color, label=col)
            ax.bar_label(
                bars,
                labels=[f"{v:.0%}" if v >= 0.07 else "" for v in vals],
                label_type="center",
                fontsize=7,
                color="white",
            )
            left += vals
        ax.set_yticks(range(len(ct)), ylabels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the class's images")
        ax.legend(
            ncol=min(6, ct.shape[1]),
            fontsize=8,
            frameon=False,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
        )
        ax.spines[["top", "right"]].set_visible(False)
        fig.suptitle(synthetic_title(f"{column} by diagnosis", df), fontsize=11, y=1.02)
    else:
        fig, ax = plt.subplots(figsize=(0.62 * ct.shape[1] + 2.5, 0.45 * len(ct) + 1.8))
        labels = ct.map(lambda v: f"{v:.0%}" if v >= 0.01 else "")
        sns.heatmap(
            ct.set_axis(ylabels),
            annot=labels.to_numpy(),
            fmt="",
            cmap="Blues",
            vmin=0,
            annot_kws={"fontsize": 7},
            linewidths=0.3,
            ax=ax,
            cbar_kws={"fraction": 0.03, "label": "share of the class"},
        )
        ax.set_xticklabels(ax.get_xticklabels(), rotation=40, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.set(xlabel="", ylabel="")
        ax.set_title(synthetic_title(f"{column} by diagnosis (row shares)", df), fontsize=11)
    fig.tight_layout()
    return fig


def plot_image_sizes(info: pd.DataFrame, title: str = "Image sizes"):
    """Width x height scatter (marker area ~ count) and the aspect-ratio histogram."""
    ok = info[info["ok"].astype(bool)] if "ok" in info else info
    ok = ok.dropna(subset=["width", "height"])
    w, h = ok["width"].astype(float), ok["height"].astype(float)
    sizes = pd.DataFrame({"w": w, "h": h}).value_counts().reset_index(name="n")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax.scatter(
        sizes["w"],
        sizes["h"],
        s=20 + 300 * sizes["n"] / sizes["n"].max(),
        alpha=0.6,
        color="#4c72b0",
        edgecolor="k",
        linewidth=0.3,
    )
    for _, r in sizes.nlargest(3, "n").iterrows():
        ax.annotate(
            f"{int(r['w'])}x{int(r['h'])}: {int(r['n']):,}",
            (r["w"], r["h"]),
            fontsize=8,
            xytext=(6, 6),
            textcoords="offset points",
        )
    ax.set_xlim(0, sizes["w"].max() * 1.2)
    ax.set_ylim(0, sizes["h"].max() * 1.2)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"{len(sizes)} distinct size(s), n={len(ok):,}")
    ax.spines[["top", "right"]].set_visible(False)
    aspect = (w / h).to_numpy()
    lo, hi = float(aspect.min()), float(aspect.max())
    bins = np.linspace(lo - 0.05, hi + 0.05, 30) if hi - lo > 1e-6 else [lo - 0.01, lo + 0.01]
    ax2.hist(aspect, bins=bins, color="#8c564b")
    ax2.set_xlim(min(lo - 0.1, 0.9), max(hi + 0.1, 1.5))
    ax2.set_xlabel("aspect ratio (width / height)")
    ax2.set_ylabel("images")
    ax2.set_title(f"aspect: median {np.median(aspect):.3f}")
    ax2.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


__all__ = [
    "METADATA_COLUMNS",
    "DX_TYPE_MEANING",
    "clean_category",
    "available_metadata",
    "imbalance_ratio",
    "class_table",
    "metadata_overview",
    "category_share",
    "age_by_class",
    "image_size_stats",
    "size_counts",
    "plot_age_by_class",
    "plot_category_by_class",
    "plot_image_sizes",
]
