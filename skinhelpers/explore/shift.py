"""Several sources in one run: how they differ, and the shortcut that mixing them brings.

A run that joins datasets (:mod:`skinhelpers.data.sources`) gets, chapter by chapter, the
same views per source: class mix, image sizes and metadata (01), quality measures (02).
Chapter 03 asks the question that matters most: **can a model tell the source from the
image alone?** If it can (image size, colour statistics) and the classes differ by source
(HAM10000 is two-thirds nevi, the ISIC 9-class non-copies half melanomas), a network can
learn "which camera" instead of "which lesion" and still score well on a test split drawn
from the same sources. :func:`source_probe` measures the first (a logistic regression on
simple image statistics, cross-validated over lesion groups), :func:`source_only_scores`
the second (what knowing only the source is worth for the diagnosis), and
:func:`shortcut_sentences` says it in words. The pictures are in
:mod:`skinhelpers.explore.shift_plots`.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pandas as pd
from scipy.stats.contingency import association
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skinhelpers.data.imaging import read_rgb
from skinhelpers.progress import progress

log = logging.getLogger(__name__)

#: the image statistics of :func:`image_statistics`, by the question each answers
FEATURE_SETS = {
    "image size": ["width", "height", "aspect"],
    "colour statistics": [
        f"{s}_{c}" for s in ("mean", "std") for c in ("R", "G", "B", "L", "a", "b")
    ],
}
FEATURE_SETS["size + colour"] = FEATURE_SETS["image size"] + FEATURE_SETS["colour statistics"]
#: a source told apart with at least this balanced accuracy counts as "easy to tell"
EASY_TO_TELL = 0.8


# ----------------------------------------------------------------------------- tables


def by_source(df: pd.DataFrame, column: str = "label", share: bool = False) -> pd.DataFrame:
    """Counts (or shares within each source) of ``column`` by source, in class order."""
    t = pd.crosstab(df[column], df["source"])
    order = [c for c in df.attrs.get("classes", []) if c in t.index] if column == "label" else []
    t = t.reindex(order + [i for i in t.index if i not in order])
    t = t[list(dict.fromkeys(df["source"]))]
    return t / t.sum() if share else t


def sizes_by_source(df: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    """Per source: images, distinct sizes, the commonest size and its share."""
    ok = info.dropna(subset=["width", "height"])
    m = ok.merge(df[["relpath", "source"]], on="relpath")
    size = m["width"].astype(int).astype(str) + " x " + m["height"].astype(int).astype(str)
    rows = {}
    for s, g in size.groupby(m["source"], sort=False):
        vc = g.value_counts()
        rows[s] = {
            "images": len(g),
            "distinct sizes": int(len(vc)),
            "commonest size": vc.index[0],
            "its share": float(vc.iloc[0] / len(g)),
        }
    return pd.DataFrame(rows).T


def metadata_by_source(df: pd.DataFrame) -> pd.DataFrame:
    """Share of images with each metadata field (lesion id, age, sex, site) per source."""
    cols = [c for c in ("lesion_id", "age", "sex", "localization", "dx_type") if c in df]
    out = {}
    for s, g in df.groupby("source", sort=False):
        out[s] = {
            c: float((g[c].notna() & ~g[c].astype(str).str.lower().isin({"unknown", ""})).mean())
            for c in cols
        }
    return pd.DataFrame(out)


def measures_by_source(q: pd.DataFrame, df: pd.DataFrame, measures) -> pd.DataFrame:
    """Median of each quality measure (chapter 02's ``quality.csv``) per source."""
    m = q.merge(df[["relpath", "source"]], on="relpath")
    return m.groupby("source", sort=False)[list(measures)].median()


# ----------------------------------------------------------------------------- the probe


def _statistics(path: str, side: int = 64) -> dict:
    img = read_rgb(path)
    h, w = img.shape[:2]
    small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    rgb = small.reshape(-1, 3).astype(np.float32)
    out = {"width": w, "height": h, "aspect": w / h}
    for arr, chans in ((rgb, "RGB"), (lab, ("L", "a", "b"))):
        for k, c in enumerate(chans):
            out[f"mean_{c}"] = float(arr[:, k].mean())
            out[f"std_{c}"] = float(arr[:, k].std())
    return out


def image_statistics(
    df: pd.DataFrame, workers: int = 2, show_progress: bool = True
) -> pd.DataFrame:
    """Size and colour statistics of every image (the file as shipped): width, height,
    aspect, mean and standard deviation of R, G, B and of L, a, b (CIELAB) on a 64x64
    thumbnail. One row per ``relpath``."""
    paths = df["path"].astype(str).tolist()
    with ThreadPoolExecutor(max(1, int(workers or 1))) as ex:
        rows = list(
            progress(
                ex.map(_statistics, paths, chunksize=32),
                total=len(paths),
                desc="image statistics",
                unit="img",
                disable=not show_progress,
            )
        )
    out = pd.DataFrame(rows)
    out.insert(0, "relpath", df["relpath"].to_numpy())
    return out


def source_probe(
    stats: pd.DataFrame, df: pd.DataFrame, seed: int = 0, n_splits: int = 5
) -> pd.DataFrame:
    """How well a logistic regression tells the source from each feature set of
    :func:`image_statistics`: balanced accuracy of its out-of-fold predictions (folds
    grouped by lesion, stratified by source) beside chance (1 / number of sources)."""
    m = stats.merge(df[["relpath", "source", "group"]], on="relpath")
    y = m["source"].to_numpy()
    groups = m["group"].astype(str).to_numpy()
    n_sources = len(set(y))
    if n_sources < 2:
        raise ValueError("the source probe needs at least two sources")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rows = []
    for name, cols in FEATURE_SETS.items():
        model = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
        )
        pred = cross_val_predict(model, m[cols].to_numpy(), y, cv=cv, groups=groups)
        rows.append(
            {
                "features": name,
                "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
                "chance": 1.0 / n_sources,
                "n_images": len(m),
            }
        )
    return pd.DataFrame(rows).set_index("features")


def source_only_scores(df: pd.DataFrame, positive: str | None) -> dict:
    """What knowing only the source says about the diagnosis: Cramer's V of class and
    source, each source's share of ``positive``, and the ROC-AUC for ``positive`` vs rest
    of a "model" that answers each image with its source's share (no pixel looked at)."""
    ct = pd.crosstab(df["label"], df["source"])
    v = float(association(ct.to_numpy(), method="cramer")) if min(ct.shape) > 1 else np.nan
    out: dict = {"cramers_v": v}
    if positive and (df["label"] == positive).any():
        is_pos = (df["label"] == positive).to_numpy()
        share = df.groupby("source", sort=False)["label"].agg(lambda s: (s == positive).mean())
        out["positive_class"] = positive
        out["positive_share"] = {k: float(x) for k, x in share.items()}
        score = df["source"].map(share).to_numpy()
        out["source_only_auc"] = (
            float(skm.roc_auc_score(is_pos, score)) if 0 < is_pos.sum() < len(is_pos) else np.nan
        )
    return out


def shortcut_sentences(probe: pd.DataFrame, mix: dict) -> list[str]:
    """The finding in words, with its numbers."""
    best = probe["balanced_accuracy"].idxmax()
    ba = float(probe.loc[best, "balanced_accuracy"])
    chance = float(probe["chance"].iloc[0])
    easy = ba >= EASY_TO_TELL
    out = [
        f"From {best} alone a linear model tells the source with balanced accuracy "
        f"{ba:.2f} (chance {chance:.2f}): the source is "
        + ("**easy to tell** from the image." if easy else "not easy to tell from the image.")
    ]
    if "positive_share" in mix:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in mix["positive_share"].items())
        out.append(
            f"The share of {mix['positive_class']} differs by source ({shares}; Cramer's V of "
            f"class and source {mix['cramers_v']:.2f}): knowing only the source, without "
            f"looking at the lesion, ranks {mix['positive_class']} vs rest with ROC-AUC "
            f"{mix['source_only_auc']:.2f}."
        )
    if easy and mix.get("cramers_v", 0) >= 0.1:
        out.append(
            "**Warning:** the source is easy to tell and the classes differ by source, so a "
            "model can learn the source instead of the lesion and still score well on a test "
            "split drawn from the same sources. Judge it on a source it never saw "
            "(`holdout_source`), balance the sources in training (`source_balanced`), and "
            "compare its per-source results in chapter 08."
        )
    return out


__all__ = [
    "EASY_TO_TELL",
    "FEATURE_SETS",
    "by_source",
    "image_statistics",
    "measures_by_source",
    "metadata_by_source",
    "shortcut_sentences",
    "sizes_by_source",
    "source_only_scores",
    "source_probe",
]
