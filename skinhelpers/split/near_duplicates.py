"""Near-duplicates before the split (notebook 04): the pairs notebook 03 found
(``near_duplicates.csv``, :func:`read_pairs`) join their images' groups
(:func:`merge_near_duplicates`), so that :mod:`skinhelpers.split.grouped` never separates
a pair.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from skinhelpers.data.manifest import union_groups

log = logging.getLogger(__name__)


def merge_near_duplicates(
    df: pd.DataFrame, pairs_df: pd.DataFrame | None, group_col: str = "group"
) -> pd.DataFrame:
    """Join the groups of every near-duplicate pair, so a split never separates them.

    ``pairs_df`` has columns ``relpath_a``, ``relpath_b`` (``near_duplicates.csv`` of
    notebook 03). Pairs naming a file that is not in ``df`` (dropped by validation or by a
    subsample) are skipped and counted. The manifest's own group is kept in
    ``group_before_merge``; ``attrs["near_duplicates"]`` says how much was merged.
    """
    out = df.copy()
    out.attrs = dict(df.attrs)
    out["group_before_merge"] = out[group_col].astype(str)
    info = {
        "pairs": 0,
        "pairs_used": 0,
        "pairs_not_in_manifest": 0,
        "groups_before": int(out[group_col].nunique()),
        "groups_after": int(out[group_col].nunique()),
        "groups_merged": 0,
    }
    if pairs_df is None or len(pairs_df) == 0:
        out.attrs["near_duplicates"] = info
        return out
    missing = [c for c in ("relpath_a", "relpath_b") if c not in pairs_df.columns]
    if missing:
        raise ValueError(
            f"near-duplicate pairs lack column(s) {missing}; found {list(pairs_df.columns)}"
        )
    pos = {r: i for i, r in enumerate(out["relpath"])}
    keys = [[g] for g in out[group_col].astype(str)]
    used = 0
    for j, (a, b) in enumerate(zip(pairs_df["relpath_a"], pairs_df["relpath_b"])):
        if a not in pos or b not in pos:
            continue
        used += 1
        keys[pos[a]].append(f"pair:{j}")
        keys[pos[b]].append(f"pair:{j}")
    out[group_col] = union_groups(keys)
    after = int(out[group_col].nunique())
    info.update(
        pairs=int(len(pairs_df)),
        pairs_used=used,
        pairs_not_in_manifest=int(len(pairs_df)) - used,
        groups_after=after,
        groups_merged=info["groups_before"] - after,
    )
    out.attrs["near_duplicates"] = info
    return out


def read_pairs(run_dir: str | os.PathLike) -> pd.DataFrame | None:
    """``near_duplicates.csv`` from the run folder, or ``None`` when notebook 03 did not run."""
    path = Path(run_dir) / "near_duplicates.csv"
    if not path.exists():
        return None
    pairs = pd.read_csv(path)
    missing = [c for c in ("relpath_a", "relpath_b") if c not in pairs.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(pairs.columns)}")
    return pairs


__all__ = ["merge_near_duplicates", "read_pairs"]
