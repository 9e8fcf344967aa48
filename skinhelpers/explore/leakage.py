"""Leakage checks for notebook 03: duplicates, label conflicts, split leaks, shortcuts.

* :func:`exact_duplicates` pairs files with the same content hash (sha1).
* :func:`near_duplicates` turns the perceptual hashes of :mod:`skinhelpers.data.hashes`
  (over the eight flips and 90-degree rotations: dermoscopy repeats are often rotated or
  mirrored) into a table that says whether each pair lies within one leakage group (same
  lesion: expected) or crosses groups (two "different" lesions that are the same picture:
  the dangerous kind); ``transform`` names the view that matched.
* :func:`label_conflicts`: identical files filed under different labels.
* :func:`split_leak` / :func:`compare_splits`: how a naive image-level random split
  shares lesions between train and test, and that a grouped split shares none.
* :func:`associations`: chi-square and Cramer's V of metadata against the diagnosis.
"""

from __future__ import annotations

import logging
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from skinhelpers.data.hashes import DIHEDRAL_VIEWS, hamming_pairs
from skinhelpers.data.manifest import has_shipped_split, without_attrs
from skinhelpers.explore.eda import clean_category

log = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "relpath_a",
    "relpath_b",
    "distance",
    "kind",
    "transform",
    "same_group",
    "label_a",
    "label_b",
    "group_a",
    "group_b",
]

# ----------------------------------------------------------------------------- duplicates


def exact_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Every pair of rows with the same ``sha1`` (byte-identical files), distance 0."""
    rows = []
    d = without_attrs(df[df["sha1"].notna()])
    for sha, g in d.groupby("sha1", sort=True):
        if len(g) < 2:
            continue
        for (_, a), (_, b) in combinations(g.iterrows(), 2):
            rows.append(
                {
                    "relpath_a": a["relpath"],
                    "relpath_b": b["relpath"],
                    "distance": 0,
                    "kind": "exact",
                    "transform": "identity",
                    "same_group": a["group"] == b["group"],
                    "label_a": a["label"],
                    "label_b": b["label"],
                    "group_a": a["group"],
                    "group_b": b["group"],
                    "sha1": sha,
                }
            )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS + ["sha1"])


def near_duplicates(df: pd.DataFrame, bits: np.ndarray, max_distance: int) -> pd.DataFrame:
    """Pairs of ``df`` rows whose hashes lie within ``max_distance`` bits.

    ``kind`` is ``exact`` when the two files are byte-identical, else ``near``;
    ``transform`` names the view of ``a`` that matched ``b`` (:data:`DIHEDRAL_VIEWS`;
    always ``identity`` for plain ``(n, bits)`` hashes); ``same_group`` says whether both
    rows are in one leakage group (lesion).
    """
    if len(bits) != len(df):
        raise ValueError(f"{len(bits)} hashes for {len(df)} manifest rows")
    i, j, d, v = hamming_pairs(bits, max_distance, return_views=True)
    a, b = df.iloc[i].reset_index(drop=True), df.iloc[j].reset_index(drop=True)
    sha_a, sha_b = a["sha1"].astype(str), b["sha1"].astype(str)
    exact = (sha_a == sha_b) & a["sha1"].notna()
    return pd.DataFrame(
        {
            "relpath_a": a["relpath"],
            "relpath_b": b["relpath"],
            "distance": d,
            "kind": np.where(exact, "exact", "near"),
            "transform": np.where(exact, "identity", np.asarray(DIHEDRAL_VIEWS)[v]),
            "same_group": (a["group"].to_numpy() == b["group"].to_numpy()),
            "label_a": a["label"],
            "label_b": b["label"],
            "group_a": a["group"],
            "group_b": b["group"],
        },
        columns=PAIR_COLUMNS,
    )


def combine_pairs(*tables: pd.DataFrame) -> pd.DataFrame:
    """Concatenate pair tables, one row per unordered pair (exact wins over near)."""
    t = (
        pd.concat([x.reindex(columns=PAIR_COLUMNS) for x in tables if len(x)], ignore_index=True)
        if any(len(x) for x in tables)
        else pd.DataFrame(columns=PAIR_COLUMNS)
    )
    if t.empty:
        return t
    a, b = t["relpath_a"].astype(str), t["relpath_b"].astype(str)
    t["relpath_a"], t["relpath_b"] = np.where(a <= b, a, b), np.where(a <= b, b, a)
    swap = a > b
    for x, y in (("label_a", "label_b"), ("group_a", "group_b")):
        t.loc[swap, [x, y]] = t.loc[swap, [y, x]].to_numpy()
    t["_rank"] = (t["kind"] != "exact").astype(int)
    t = t.sort_values(["_rank", "distance"]).drop_duplicates(["relpath_a", "relpath_b"])
    return (
        t.drop(columns="_rank")
        .sort_values(["distance", "relpath_a", "relpath_b"])
        .reset_index(drop=True)
    )


def mark_in_manifest(pairs: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Add ``in_manifest``: both files of the pair are rows of ``df`` (the analysed set)."""
    keep = set(df["relpath"])
    return pairs.assign(in_manifest=pairs["relpath_a"].isin(keep) & pairs["relpath_b"].isin(keep))


def pair_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Counts of pairs by kind and by same/cross group, and how many differ in label."""
    if pairs.empty:
        return pd.DataFrame(columns=["kind", "same_group", "pairs", "label_differs"])
    t = pairs.assign(label_differs=pairs["label_a"] != pairs["label_b"])
    return (
        t.groupby(["kind", "same_group"])
        .agg(pairs=("relpath_a", "size"), label_differs=("label_differs", "sum"))
        .reset_index()
    )


# ----------------------------------------------------------------------------- conflicts


def label_conflicts(df: pd.DataFrame) -> pd.DataFrame:
    """Identical files (one sha1) filed under more than one label: one row per content."""
    d = without_attrs(df[df["sha1"].notna()])
    rows = []
    for sha, g in d.groupby("sha1", sort=True):
        labels = sorted(set(g["label"]))
        if len(labels) < 2:
            continue
        splits = sorted(set(g["source_split"].dropna())) if "source_split" in g else []
        rows.append(
            {
                "sha1": sha,
                "files": len(g),
                "labels": " | ".join(labels),
                "image_ids": ", ".join(sorted(set(g["image_id"].astype(str)))),
                "splits": ", ".join(splits),
                "relpaths": " | ".join(g["relpath"]),
            }
        )
    return pd.DataFrame(
        rows, columns=["sha1", "files", "labels", "image_ids", "splits", "relpaths"]
    )


def conflict_label_pairs(conflicts: pd.DataFrame) -> pd.DataFrame:
    """How often each combination of labels is in conflict."""
    if conflicts.empty:
        return pd.DataFrame()
    ct = conflicts["labels"].value_counts().rename("contents").reset_index()
    return ct.rename(columns={"labels": "labels in conflict"})


# ----------------------------------------------------------------------------- splits


def images_per_group(df: pd.DataFrame) -> pd.DataFrame:
    """How many groups (lesions) have 1, 2, 3, ... images."""
    n = df.groupby("group").size()
    vc = n.value_counts().sort_index()
    out = pd.DataFrame({"groups": vc, "images": vc * vc.index})
    out.index.name = "images_per_group"
    return out


def split_indices(
    df: pd.DataFrame, method: str = "naive", test_size: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions ``(train, test)`` of one split of ``df``.

    ``naive``: :func:`sklearn.model_selection.train_test_split` of images, stratified by
    label (what most tutorials do); ``grouped``:
    :class:`sklearn.model_selection.GroupShuffleSplit` on ``group`` (whole lesions);
    ``shipped``: the dataset's own ``source_split`` (train / test).
    """
    idx = np.arange(len(df))
    if method == "naive":
        strat = df["label"] if df["label"].value_counts().min() >= 2 else None
        return tuple(
            train_test_split(idx, test_size=test_size, random_state=int(seed), stratify=strat)
        )
    if method == "grouped":
        gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=int(seed))
        return next(gss.split(idx, groups=df["group"].to_numpy()))
    if method == "shipped":
        sp = df["source_split"].to_numpy() if "source_split" in df else np.full(len(df), None)
        tr, te = np.flatnonzero(sp == "train"), np.flatnonzero(sp == "test")
        if len(tr) == 0 or len(te) == 0:
            raise ValueError("the dataset ships no train/test split (source_split)")
        return tr, te
    raise ValueError(f"split method '{method}' is not 'naive', 'grouped' or 'shipped'")


def pairs_across(pairs: pd.DataFrame, df: pd.DataFrame, train_idx, test_idx) -> int:
    """How many pairs have one image in train and the other in test.

    Pairs with a file that is not a row of ``df`` are ignored.
    """
    if pairs.empty:
        return 0
    side = pd.Series(np.nan, index=df["relpath"].to_numpy())
    side.iloc[np.asarray(train_idx, dtype=int)] = 0
    side.iloc[np.asarray(test_idx, dtype=int)] = 1
    a = side.reindex(pairs["relpath_a"].to_numpy()).to_numpy()
    b = side.reindex(pairs["relpath_b"].to_numpy()).to_numpy()
    return int(np.sum((a + b) == 1))


def split_leak(
    df: pd.DataFrame,
    method: str = "naive",
    test_size: float = 0.2,
    seed: int | None = 0,
    pairs: pd.DataFrame | None = None,
) -> dict:
    """Split once (:func:`split_indices`) and count what the test set shares with train.

    ``shared_groups`` / ``test_groups_shared``: test groups (lesions) that also have
    images in train; ``test_images_leaked`` / ``..._share``: test images whose group is in
    train; with ``pairs`` (duplicate pairs), ``dup_pairs_split``: pairs split between
    train and test.
    """
    tr, te = split_indices(df, method, test_size, seed if seed is not None else 0)
    trd, ted = df.iloc[tr], df.iloc[te]
    train_groups = set(trd["group"])
    te_groups = ted["group"].unique()
    shared = [g for g in te_groups if g in train_groups]
    te_in = ted["group"].isin(train_groups)
    out = {
        "method": method,
        "seed": None if method == "shipped" else seed,
        "train_images": len(trd),
        "test_images": len(ted),
        "test_groups": len(te_groups),
        "shared_groups": len(shared),
        "test_groups_shared": len(shared) / max(1, len(te_groups)),
        "test_images_leaked": int(te_in.sum()),
        "test_images_leaked_share": float(te_in.mean()) if len(ted) else 0.0,
    }
    if pairs is not None:
        out["dup_pairs_split"] = pairs_across(pairs, df, tr, te)
    return out


def compare_splits(
    df: pd.DataFrame,
    test_size: float = 0.2,
    seeds=(0, 1, 2, 3, 4),
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`split_leak` for ``naive`` and ``grouped`` over ``seeds`` (+ the shipped split)."""
    rows = [split_leak(df, m, test_size, s, pairs) for s in seeds for m in ("naive", "grouped")]
    if has_shipped_split(df):
        rows.append(split_leak(df, "shipped", pairs=pairs))
    out = pd.DataFrame(rows)
    out["seed"] = out["seed"].astype("Int64")  # <NA> for the shipped split
    return out


# ----------------------------------------------------------------------------- shortcuts


def cramers_v(x: pd.Series, y: pd.Series) -> float:
    """Cramer's V of two categorical series (``scipy.stats.contingency.association``)."""
    ct = pd.crosstab(x, y)
    if min(ct.shape) < 2:
        return float("nan")
    return float(stats.contingency.association(ct.to_numpy(), method="cramer"))


def associations(
    df: pd.DataFrame, columns=("sex", "localization", "dx_type"), target: str = "label"
) -> pd.DataFrame:
    """Chi-square test of independence and Cramer's V of each column against ``target``.

    ``unknown``/missing values are left out. Cramer's V: 0 = no association, 1 = the
    column determines the diagnosis (and vice versa). Columns a dataset lacks are skipped.
    """
    rows = []
    for c in columns:
        if c not in df.columns:
            continue
        v = clean_category(df[c])
        ok = v.notna()
        if ok.sum() == 0 or v[ok].nunique() < 2:
            continue
        ct = pd.crosstab(v[ok], df.loc[ok, target])
        chi2, p, dof, _ = stats.chi2_contingency(ct.to_numpy())
        rows.append(
            {
                "column": c,
                "n": int(ok.sum()),
                "values": int(ct.shape[0]),
                "chi2": float(chi2),
                "dof": int(dof),
                "p_value": float(p),
                "cramers_v": cramers_v(v[ok], df.loc[ok, target]),
            }
        )
    return pd.DataFrame(
        rows, columns=["column", "n", "values", "chi2", "dof", "p_value", "cramers_v"]
    )


def age_test(df: pd.DataFrame) -> dict | None:
    """Kruskal-Wallis test: does the age distribution differ between classes?"""
    if "age" not in df.columns:
        return None
    age = pd.to_numeric(df["age"], errors="coerce")
    groups = [age[(df["label"] == c)].dropna().to_numpy() for c in sorted(df["label"].unique())]
    groups = [g for g in groups if len(g) > 0]
    if len(groups) < 2:
        return None
    h, p = stats.kruskal(*groups)
    # epsilon-squared effect size for Kruskal-Wallis
    n = sum(len(g) for g in groups)
    return {
        "test": "Kruskal-Wallis",
        "n": int(n),
        "H": float(h),
        "p_value": float(p),
        "epsilon_squared": float(h / ((n**2 - 1) / (n + 1))),
    }


__all__ = [
    "age_test",
    "associations",
    "combine_pairs",
    "compare_splits",
    "conflict_label_pairs",
    "cramers_v",
    "exact_duplicates",
    "has_shipped_split",
    "images_per_group",
    "label_conflicts",
    "mark_in_manifest",
    "near_duplicates",
    "pair_summary",
    "pairs_across",
    "split_indices",
    "split_leak",
]
