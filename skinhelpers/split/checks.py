"""Leak checks of a split (notebook 04): no group in two splits or two folds, no
near-duplicate pair across splits, every class present in every split where it has the
groups to be (:func:`check_split`, which raises :class:`SplitError`); and what an
image-level random split would leak instead (:func:`naive_split_leakage`). ``SPLITS``
names the three splits.

The split itself is drawn by :mod:`skinhelpers.split.grouped`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from skinhelpers.data.manifest import has_shipped_split

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class SplitError(Exception):
    """A split violates a leakage or presence check (its own exception: an unrelated
    ``assert`` failing inside the checks is not mistaken for a found leak)."""


def is_shipped(split_df: pd.DataFrame) -> bool:
    sp = split_df.attrs.get("split", {})
    if isinstance(sp, dict) and "shipped" in sp:
        return bool(sp["shipped"])
    return has_shipped_split(split_df)


def groups_in_two_splits(split_df: pd.DataFrame) -> pd.Series:
    """The groups found in more than one split, each with the sorted splits it is in."""
    groups = split_df.groupby("group")["split"].agg(lambda s: sorted(set(s)))
    return groups[groups.map(len) > 1]


def check_split(
    split_df: pd.DataFrame, pairs_df: pd.DataFrame | None = None, max_examples: int = 10
) -> dict:
    """Check a split; raise :class:`SplitError` on a violation.

    * every ``split`` is train/val/test and every ``fold`` an integer (-1: no fold);
    * no group in two splits, no group in two folds;
    * no near-duplicate pair (``pairs_df``) across splits;
    * every class present in every non-empty split where it has enough groups to be:
      (at least one group per split; with a shipped test set, two groups in the shipped
      train set for train/val). A class too rare for that is a *warning*, not an error.

    Returns a dict of what was checked, with counts and warnings.
    """
    for c in ("relpath", "group", "label", "split", "fold"):
        if c not in split_df.columns:
            raise ValueError(f"split table lacks column '{c}'")
    problems: list[str] = []
    bad_split = sorted(set(split_df["split"]) - set(SPLITS))
    if bad_split:
        problems.append(f"unknown split name(s) {bad_split}; allowed {list(SPLITS)}")
    crossing = groups_in_two_splits(split_df)
    if len(crossing):
        ex = "; ".join(f"{g} in {v}" for g, v in crossing.head(max_examples).items())
        problems.append(f"{len(crossing)} group(s) in more than one split: {ex}")
    folded = split_df[split_df["fold"] >= 0]
    n_folds = int(folded["fold"].nunique()) if len(folded) else 0
    fold_crossing = folded.groupby("group")["fold"].nunique()
    fold_crossing = fold_crossing[fold_crossing > 1]
    if len(fold_crossing):
        problems.append(
            f"{len(fold_crossing)} group(s) in more than one fold, e.g. "
            f"{fold_crossing.index[:max_examples].tolist()}"
        )
    if len(folded) and (split_df.loc[split_df["split"] == "test", "fold"] >= 0).any():
        problems.append("test rows carry a fold number: test must stay out of the folds")
    pairs_checked = pairs_crossing = pairs_skipped = 0
    if pairs_df is not None and len(pairs_df):
        where = dict(zip(split_df["relpath"], split_df["split"]))
        bad = []
        for a, b in zip(pairs_df["relpath_a"], pairs_df["relpath_b"]):
            if a not in where or b not in where:
                pairs_skipped += 1
                continue
            pairs_checked += 1
            if where[a] != where[b]:
                bad.append(f"{a} ({where[a]}) ~ {b} ({where[b]})")
        pairs_crossing = len(bad)
        if bad:
            problems.append(
                f"{len(bad)} near-duplicate pair(s) across splits: " + "; ".join(bad[:max_examples])
            )
    # class presence
    shipped = is_shipped(split_df)
    sp = split_df.attrs.get("split", {})
    held_out = isinstance(sp, dict) and bool(sp.get("holdout_source"))
    present_splits = [s for s in SPLITS if (split_df["split"] == s).any()]
    n_groups_cls = split_df.groupby("label")["group"].nunique()
    pool = split_df[split_df["split"] != "test"]
    n_groups_pool = pool.groupby("label")["group"].nunique()
    missing: dict[str, list[str]] = {}
    warns: list[str] = []
    for s in present_splits:
        have = set(split_df.loc[split_df["split"] == s, "label"])
        for c in sorted(set(split_df["label"]) - have):
            missing.setdefault(s, []).append(c)
            if shipped and s == "test":
                warns.append(f"class '{c}' is absent from the shipped test set")
                continue
            if held_out and s == "test":
                warns.append(
                    f"class '{c}' is absent from the held-out source {sp['holdout_source']}"
                )
                continue
            if shipped:
                enough = int(n_groups_pool.get(c, 0)) >= 2
                need = "2 groups in the shipped train set"
            else:
                enough = int(n_groups_cls[c]) >= len(present_splits)
                need = f"{len(present_splits)} groups"
            if enough:
                problems.append(
                    f"class '{c}' is missing from the {s} split although it has "
                    f"enough groups ({need})"
                )
            else:
                warns.append(
                    f"class '{c}' is missing from {s}: too few groups "
                    f"({int(n_groups_cls[c])}) to be in every split"
                )
    if problems:
        raise SplitError("split check failed:\n  " + "\n  ".join(problems))
    return {
        "ok": True,
        "images": int(len(split_df)),
        "groups": int(split_df["group"].nunique()),
        "groups_in_two_splits": 0,
        "n_folds": n_folds,
        "groups_in_two_folds": 0,
        "near_duplicate_pairs_checked": pairs_checked,
        "near_duplicate_pairs_across_splits": pairs_crossing,
        "near_duplicate_pairs_not_in_split": pairs_skipped,
        "classes_missing": missing,
        "warnings": warns,
    }


def naive_split_leakage(df: pd.DataFrame, test_size: float = 0.15, seed: int = 0) -> dict:
    """What an image-level random split would leak: test images whose group is in train.

    For the narrative of notebook 04 (why the split must be grouped).
    """
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(len(df) * test_size)))
    is_test = np.zeros(len(df), dtype=bool)
    is_test[rng.choice(len(df), n_test, replace=False)] = True
    train_groups = set(df.loc[~is_test, "group"])
    leaked = df.loc[is_test, "group"].isin(train_groups)
    return {
        "test_images": int(n_test),
        "leaked_test_images": int(leaked.sum()),
        "leaked_share": float(leaked.mean()),
    }


__all__ = [
    "SPLITS",
    "SplitError",
    "is_shipped",
    "groups_in_two_splits",
    "check_split",
    "naive_split_leakage",
]
