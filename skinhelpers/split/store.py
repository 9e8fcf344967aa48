"""The split's tables and files: images, groups and classes per split
(:func:`split_summary`, :func:`split_table`); ``split.csv`` + ``split.json`` in the run
folder, written by notebook 04 (:func:`save_split`) and read by notebooks 05-09
(:func:`read_split`: the manifest with ``split`` and ``fold`` columns); and the K folds of
the train+val pool (:func:`n_folds_of`, :func:`fold_split`).

The split itself is drawn by :mod:`skinhelpers.split.grouped` and checked by
:mod:`skinhelpers.split.checks`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinhelpers.data.manifest import read_manifest
from skinhelpers.files import read_json, write_csv, write_json
from skinhelpers.split.checks import SPLITS, SplitError, check_split, groups_in_two_splits

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["relpath", "image_id", "group", "label", "label_idx", "split", "fold"]


def _class_order(df: pd.DataFrame) -> list[str]:
    classes = df.attrs.get("classes")
    present = set(df["label"])
    if classes:
        return [c for c in classes if c in present] + sorted(present - set(classes))
    return sorted(present)


def split_summary(split_df: pd.DataFrame) -> pd.DataFrame:
    """Images, groups and share of images per split (index train/val/test)."""
    rows = {}
    for s in SPLITS:
        sub = split_df[split_df["split"] == s]
        rows[s] = {
            "images": int(len(sub)),
            "groups": int(sub["group"].nunique()),
            "share": round(len(sub) / max(1, len(split_df)), 4),
            "classes": int(sub["label"].nunique()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def split_table(split_df: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Class x split (or x fold, ``by="fold"``) image counts, with a ``total`` column."""
    if by not in ("split", "fold"):
        raise ValueError(f"by must be 'split' or 'fold', got '{by}'")
    classes = _class_order(split_df)
    src = split_df if by == "split" else split_df[split_df["fold"] >= 0]
    t = pd.crosstab(src["label"], src[by]).reindex(index=classes, fill_value=0)
    if by == "split":
        t = t.reindex(columns=list(SPLITS), fill_value=0)
    t.columns = [str(c) if by == "split" else f"fold {c}" for c in t.columns]
    t["total"] = t.sum(axis=1)
    t.index.name = "class"
    t.columns.name = None
    return t


def images_fingerprint(relpaths) -> str:
    """A short hash of a set of test images (their relpaths, sorted): two runs with the same
    fingerprint test on the same images."""
    h = hashlib.sha1("\n".join(sorted(map(str, relpaths))).encode())
    return h.hexdigest()[:16]


def save_split(
    split_df: pd.DataFrame,
    run_dir: str | os.PathLike,
    checks: dict | None = None,
    seeds: dict | None = None,
) -> Path:
    """Write ``split.csv`` and ``split.json`` (sizes, seed, class counts, checks).

    The split is checked first (:func:`check_split`, which raises on a violation) unless
    ``checks`` (the result of an earlier :func:`check_split` call) is given. ``seed`` in
    split.json is the seed that drew the split; ``seeds`` (notebook 04: ``{"seed": ...,
    "split_seed": ...}``) records the parameters it came from; ``test_fingerprint`` (a
    hash of the test images) and the manifest's subsample let ``compare`` say whether two
    runs' splits differ.
    """
    run_dir = Path(run_dir)
    if checks is None:
        checks = check_split(split_df)
    info = dict(split_df.attrs.get("split", {}))
    summary = split_summary(split_df)
    table = split_table(split_df)
    record = {
        "dataset": split_df.attrs.get("dataset"),
        "seed": info.get("seed"),
        "val_size": info.get("val_size"),
        "test_size": info.get("test_size"),
        "n_folds": info.get("n_folds", 0),
        "shipped": info.get("shipped", False),
        "test_method": info.get("test_method"),
        "val_method": info.get("val_method"),
        "sizes": summary.to_dict("index"),
        "class_counts": {s: {c: int(v) for c, v in table[s].items()} for s in SPLITS},
        "checks": checks,
        "shipped_overlap": info.get("shipped_overlap"),
        "dropped": list(info.get("dropped", [])),
        "moves": list(info.get("moves", [])),
        "notes": list(info.get("notes", [])),
        "near_duplicates": split_df.attrs.get("near_duplicates"),
        "seeds": dict(seeds) if seeds else None,
        "holdout_source": info.get("holdout_source"),
        "subsample": split_df.attrs.get("subsample"),
        "test_fingerprint": images_fingerprint(
            split_df.loc[split_df["split"] == "test", "relpath"]
        ),
    }
    write_csv(run_dir / "split.csv", split_df[SPLIT_COLUMNS])
    write_json(run_dir / "split.json", record)
    return run_dir / "split.csv"


def read_split(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's manifest with the ``split`` and ``fold`` columns of notebook 04.

    Rows the split dropped (listed in ``split.json``) are left out; ``group`` is the
    group the split respected (near-duplicates merged; the manifest's own group is in
    ``manifest_group``). ``attrs`` are the manifest's plus ``attrs["split"]``. A split that
    does not match the manifest (other files or labels) is an error naming them.
    """
    run_dir = Path(run_dir)
    csv = run_dir / "split.csv"
    if not csv.exists():
        raise FileNotFoundError(
            f"{csv} does not exist: run notebook 04 (splitting) in this "
            "run folder first (run_all.sh runs the notebooks in order)"
        )
    info = read_json(run_dir / "split.json")
    manifest = read_manifest(run_dir)
    split = pd.read_csv(csv, dtype={"relpath": str, "group": str, "image_id": str})
    missing = [c for c in ("relpath", "group", "label", "split", "fold") if c not in split]
    if missing:
        raise ValueError(f"{csv}: missing column(s) {missing}")
    known = set(manifest["relpath"])
    foreign = [r for r in split["relpath"] if r not in known]
    if foreign:
        raise ValueError(
            f"{csv} does not match the run's manifest: {len(foreign)} file(s) are "
            f"not in manifest.csv, e.g. {foreign[:3]}. Re-run notebook 04 after 01."
        )
    in_split = set(split["relpath"])
    unassigned = [r for r in manifest["relpath"] if r not in in_split]
    dropped = set(info.get("dropped", []))
    unexplained = [r for r in unassigned if r not in dropped]
    if unexplained:
        raise ValueError(
            f"{csv} does not match the run's manifest: {len(unexplained)} "
            f"manifest file(s) have no split, e.g. {unexplained[:3]}. Re-run "
            "notebook 04 after 01."
        )
    out = manifest.merge(
        split[["relpath", "label", "group", "split", "fold"]].rename(
            columns={"label": "_split_label", "group": "_split_group"}
        ),
        on="relpath",
        how="inner",
        validate="one_to_one",
    )
    wrong = out[out["label"] != out["_split_label"]]
    if len(wrong):
        raise ValueError(
            f"{csv}: {len(wrong)} label(s) differ from manifest.csv, e.g. "
            f"{wrong['relpath'].head(3).tolist()}. Re-run notebook 04 after 01."
        )
    out["manifest_group"] = out["group"]
    out["group"] = out["_split_group"]
    out = out.drop(columns=["_split_label", "_split_group"])
    out["fold"] = out["fold"].astype(int)
    out.attrs = {**manifest.attrs, "split": info}
    return out


def n_folds_of(split_df: pd.DataFrame) -> int:
    """How many cross-validation folds notebook 04 dealt the train+val pool into (0: none)."""
    pool = split_df.loc[split_df["split"] != "test", "fold"]
    return int(pool.max()) + 1 if len(pool) and (pool >= 0).all() else 0


def fold_split(split_df: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The split with fold ``fold`` of the train+val pool as validation and the other
    folds as training (the test split untouched), for K-fold training.

    Fold 0 is notebook 04's own validation split, so ``fold_split(df, 0)`` gives the split
    back unchanged. The folds are grouped (by lesion, near-duplicates merged), so no
    group crosses; the result is checked all the same. A split without folds, or a fold
    out of range, is an error naming ``n_folds`` of notebook 04.
    """
    k = n_folds_of(split_df)
    if k < 2:
        raise ValueError(
            "this split has no cross-validation folds: run notebook 04 with n_folds >= 2 "
            "(the gpu profile does) before K-fold training"
        )
    if int(fold) != fold or not 0 <= fold < k:
        raise ValueError(f"fold must be an integer in 0..{k - 1} (n_folds = {k}), got {fold}")
    out = split_df.copy()
    pool = out["split"] != "test"
    out.loc[pool, "split"] = np.where(out.loc[pool, "fold"] == fold, "val", "train")
    crossing = groups_in_two_splits(out)
    if len(crossing):
        raise SplitError(
            f"fold {fold}: {len(crossing)} group(s) cross splits, e.g. {list(crossing.index[:3])}"
        )
    out.attrs = {**split_df.attrs, "fold": int(fold), "n_folds": k}
    return out


__all__ = [
    "SPLIT_COLUMNS",
    "split_summary",
    "split_table",
    "images_fingerprint",
    "save_split",
    "read_split",
    "n_folds_of",
    "fold_split",
]
