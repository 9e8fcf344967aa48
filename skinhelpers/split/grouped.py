"""Leakage-free splits: stratified by class, grouped by lesion, deterministic by seed.

Every image of one leakage *group* (a lesion, joined with byte-identical copies by
:mod:`skinhelpers.data.manifest` and with near-duplicates by :func:`merge_near_duplicates`)
lands in exactly one split. The splitting itself is scikit-learn's
:class:`~sklearn.model_selection.StratifiedGroupKFold`: to hold out a fraction ``f`` the
groups are dealt into ``n`` stratified folds and ``k`` of them (``k/n`` close to ``f``,
chosen by the seed) are taken. Where stratification is impossible (too few groups, one
class) :class:`~sklearn.model_selection.GroupShuffleSplit` takes over. A class that is so
rare that the folds missed it in a split gets one of its groups moved there from the
split holding most of them (recorded in ``attrs["split"]["moves"]``), so that every class
with at least one group per split is present in every split.

Datasets that ship their own ``Train``/``Test`` folders (``source_split``) keep the
shipped test set exactly as shipped; validation is carved out of the shipped train set
by group. Groups present in both shipped parts are reported (:func:`shipped_overlap`) and
their *train* rows dropped, so no group crosses.

**Two seeds.** The split is drawn by :func:`resolve_split_seed`: ``split_seed`` when it is
given (notebooks 01 and 04; 01's smoke subsample uses it too, since the subsample decides
which images can be in test), else the training ``seed``, so that ``seed`` alone keeps
moving both, as it always did. Runs that differ only in the training seed share their
test images when they share ``split_seed``.

``save_split`` writes ``split.csv`` + ``split.json`` to the run folder;
``read_split`` gives the next notebooks the manifest with ``split`` and ``fold`` columns.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, StratifiedGroupKFold

from skinhelpers.data.manifest import has_shipped_split, read_manifest, union_groups
from skinhelpers.files import read_json, write_csv, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["relpath", "image_id", "group", "label", "label_idx", "split", "fold"]
REQUIRED_COLUMNS = ("relpath", "image_id", "label", "label_idx")
OVERLAP_ACTIONS = ("drop_train", "move_to_test")


class SplitError(Exception):
    """A split violates a leakage or presence check (its own exception: an unrelated
    ``assert`` failing inside the checks is not mistaken for a found leak)."""


# ----------------------------------------------------------------------------- inputs


def resolve_split_seed(seed: int, split_seed: int | None = -1) -> int:
    """The seed that draws the split (and chapter 01's subsample): ``split_seed`` when it
    is given (``>= 0``), else ``seed`` (``split_seed`` -1 or None: the training seed draws
    the split too, the meaning ``seed`` always had)."""
    if split_seed is None or (isinstance(split_seed, int) and split_seed == -1):
        return int(seed)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(
            f"split_seed={split_seed!r}: give a seed >= 0, or -1 for 'the same as seed'"
        )
    return split_seed


def images_fingerprint(relpaths) -> str:
    """A short hash of a set of test images (their relpaths, sorted): two runs with the same
    fingerprint test on the same images."""
    h = hashlib.sha1("\n".join(sorted(map(str, relpaths))).encode())
    return h.hexdigest()[:16]


def _check_inputs(
    df: pd.DataFrame, group_col: str, val_size: float, test_size: float, n_folds: int
) -> None:
    if len(df) == 0:
        raise ValueError("cannot split an empty manifest")
    missing = [c for c in (*REQUIRED_COLUMNS, group_col) if c not in df.columns]
    if missing:
        raise ValueError(
            f"manifest lacks column(s) {missing} needed for the split; found {list(df.columns)}"
        )
    bad = df[group_col].isna()
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} row(s) have no '{group_col}' (e.g. "
            f"{df.loc[bad, 'relpath'].head(3).tolist()}); every image needs a "
            "leakage group"
        )
    if df["relpath"].duplicated().any():
        dup = df.loc[df["relpath"].duplicated(), "relpath"].head(3).tolist()
        raise ValueError(f"relpath must be unique per row; duplicated: {dup}")
    if not 0 <= val_size < 1:
        raise ValueError(f"val_size must be in [0, 1), got {val_size}")
    if not 0 <= test_size < 1:
        raise ValueError(f"test_size must be in [0, 1), got {test_size}")
    if val_size + test_size >= 1:
        raise ValueError(f"val_size + test_size must be < 1, got {val_size} + {test_size}")
    if n_folds < 0 or n_folds == 1 or int(n_folds) != n_folds:
        raise ValueError(f"n_folds must be 0 (no folds) or an integer >= 2, got {n_folds}")


# ----------------------------------------------------------------------------- near-duplicates


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


# ----------------------------------------------------------------------------- shipped splits


def shipped_overlap(df: pd.DataFrame, group_col: str = "group") -> pd.DataFrame:
    """Groups present in both the shipped train and the shipped test set (one row each)."""
    cols = ["group", "n_train", "n_test", "labels", "train_files", "test_files"]
    if not has_shipped_split(df):
        return pd.DataFrame(columns=cols)
    sp = df["source_split"].fillna("train").replace({"val": "train"})
    rows = []
    for g, sub in df.assign(_sp=sp).groupby(group_col, sort=True):
        parts = set(sub["_sp"])
        if {"train", "test"} <= parts:
            tr, te = sub[sub["_sp"] == "train"], sub[sub["_sp"] == "test"]
            rows.append(
                {
                    "group": g,
                    "n_train": len(tr),
                    "n_test": len(te),
                    "labels": ", ".join(sorted(set(sub["label"]))),
                    "train_files": "; ".join(tr["relpath"]),
                    "test_files": "; ".join(te["relpath"]),
                }
            )
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- splitting


def _fold_plan(fracs: list[float], max_folds: int = 20, tol: float = 0.01) -> tuple[int, list[int]]:
    """``(n, ks)``: deal the groups into ``n`` folds and hold out ``ks[i]`` of them for
    ``fracs[i]`` (``ks[i]/n`` within ``tol`` of ``fracs[i]``, smallest such ``n``; at least
    one fold stays in the remainder)."""
    best = None
    for n in range(2, max_folds + 1):
        ks = [0 if f <= 0 else max(1, round(f * n)) for f in fracs]
        if sum(ks) > n - 1:
            continue
        err = max(abs(k / n - f) for k, f in zip(ks, fracs))
        if err <= tol:
            return n, ks
        if best is None or err < best[0] - 1e-12:
            best = (err, n, ks)
    if best is None:
        raise ValueError(f"cannot hold out fractions {fracs}")
    return best[1], best[2]


def _hold_out(pool: pd.DataFrame, fracs: list[float], seed: int) -> tuple[np.ndarray, str]:
    """Deal ``pool``'s groups into parts: ``part[i] = j`` holds row ``i`` out for
    ``fracs[j]`` (about that share of the rows), ``-1`` keeps it in the remainder.

    One :class:`StratifiedGroupKFold` pass into ``n`` folds, of which the seed picks
    ``ks[j]`` for part ``j`` (so all parts are stratified alike);
    :class:`GroupShuffleSplit` where stratification is impossible.
    """
    part = np.full(len(pool), -1, dtype=int)
    if len(pool) == 0 or not any(f > 0 for f in fracs):
        return part, "none"
    groups = pool["group"].astype(str).to_numpy()
    y = pool["label_idx"].to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups <= sum(f > 0 for f in fracs):
        raise ValueError(
            f"cannot split {len(pool)} image(s) in {n_groups} group(s) into "
            f"{sum(f > 0 for f in fracs) + 1} parts: too few groups"
        )
    n, ks = _fold_plan(fracs)
    _, y_cnt = np.unique(y, return_counts=True)
    if n_groups >= n and len(y_cnt) > 1 and (y_cnt >= n).any():
        sgkf = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "least populated class has only m members"
            warnings.filterwarnings(
                "ignore", category=UserWarning, module="sklearn.model_selection"
            )
            folds = [test for _, test in sgkf.split(np.zeros(len(pool)), y, groups)]
        order = np.random.default_rng(seed).permutation(n)
        start = 0
        for j, k in enumerate(ks):
            for f in order[start : start + k]:
                part[folds[f]] = j
            start += k
        return part, f"StratifiedGroupKFold({n}): " + ", ".join(
            f"{k} fold(s) for {f:.0%}" for k, f in zip(ks, fracs) if k
        )
    left = np.arange(len(pool))
    share_left = 1.0
    for j, f in enumerate(fracs):
        if f <= 0:
            continue
        gss = GroupShuffleSplit(
            n_splits=1, test_size=min(0.95, f / share_left), random_state=seed + j
        )
        _, held = next(gss.split(left, y[left], groups[left]))
        part[left[held]] = j
        left = np.setdiff1d(left, left[held])
        share_left -= f
    return part, "GroupShuffleSplit (too few groups to stratify)"


def _assign_folds(pool: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    groups = pool["group"].astype(str).to_numpy()
    y = pool["label_idx"].to_numpy()
    n_groups = len(np.unique(groups))
    if n_folds > n_groups:
        raise ValueError(
            f"n_folds={n_folds} is more than the {n_groups} group(s) in the train+val pool"
        )
    _, y_cnt = np.unique(y, return_counts=True)
    if len(y_cnt) > 1 and (y_cnt >= n_folds).any():
        cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        cv = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(pool), -1, dtype=int)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn.model_selection")
        for i, (_, test) in enumerate(cv.split(np.zeros(len(pool)), y, groups)):
            fold[test] = i
    return fold


def _ensure_class_presence(
    out: pd.DataFrame, targets: list[str], donors: list[str], seed: int
) -> list[dict]:
    """Give every split in ``targets`` each class that has the groups to spare.

    A split lacking class ``c`` receives one group of ``c`` from the ``donors`` split
    holding most groups of ``c``, if that split keeps at least one; the smallest
    single-class group moves (ties broken by the seed). Folds follow the move (val is
    fold 0, test has none, train gets its smallest fold). Returns the moves made.
    """
    rng = np.random.default_rng(seed + 7919)
    n_folds = int(out["fold"].max()) + 1 if (out["fold"] >= 0).any() else 0
    moves = []
    for c in sorted(out["label"].unique()):
        for s in targets:
            if ((out["split"] == s) & (out["label"] == c)).any():
                continue
            gsplit = out.groupby("group")["split"].agg(lambda x: x.iloc[0])
            glabels = out.groupby("group")["label"].agg(lambda x: frozenset(x))
            with_c = [g for g in glabels.index if c in glabels[g]]
            per_donor = {d: [g for g in with_c if gsplit[g] == d] for d in donors if d != s}
            donor = max(per_donor, key=lambda d: (len(per_donor[d]), d == "train"), default=None)
            if donor is None or len(per_donor[donor]) < 2:
                continue
            cand = per_donor[donor]
            pure = [g for g in cand if glabels[g] == {c}] or cand
            sizes = out[out["group"].isin(pure)].groupby("group").size()
            options = sorted(sizes.index[sizes == sizes.min()])
            g = options[int(rng.integers(len(options)))]
            rows = out["group"] == g
            out.loc[rows, "split"] = s
            if n_folds:
                if s == "test":
                    out.loc[rows, "fold"] = -1
                elif s == "val":
                    out.loc[rows, "fold"] = 0
                else:
                    train_folds = out.loc[(out["split"] == "train") & ~rows, "fold"]
                    counts = train_folds.value_counts().reindex(range(1, n_folds), fill_value=0)
                    out.loc[rows, "fold"] = int(counts.idxmin())
            moves.append(
                {"group": g, "label": c, "from": donor, "to": s, "images": int(rows.sum())}
            )
    return moves


def grouped_split(
    df: pd.DataFrame,
    val_size: float = 0.15,
    test_size: float = 0.15,
    seed: int = 0,
    group_col: str = "group",
    n_folds: int = 0,
    shipped_overlap_action: str = "drop_train",
    holdout_source: str | None = None,
) -> pd.DataFrame:
    """A stratified, grouped train/val/test split of a manifest (see the module docstring).

    A manifest of several sources (a ``source`` column, :mod:`skinhelpers.data.sources`)
    is split source by source (:func:`split_by_source`): stratified by class within each
    source, so by class and source; the first source's split is the one it gets alone
    with the same seed. ``holdout_source`` puts one whole source in test
    (leave-one-source-out); validation then comes from the other sources.
    """
    if holdout_source or ("source" in df.columns and df["source"].nunique() > 1):
        return split_by_source(
            df,
            val_size,
            test_size,
            seed,
            group_col,
            n_folds,
            shipped_overlap_action,
            holdout_source,
        )
    return _split_one(df, val_size, test_size, seed, group_col, n_folds, shipped_overlap_action)


def split_by_source(
    df: pd.DataFrame,
    val_size: float = 0.15,
    test_size: float = 0.15,
    seed: int = 0,
    group_col: str = "group",
    n_folds: int = 0,
    shipped_overlap_action: str = "drop_train",
    holdout_source: str | None = None,
) -> pd.DataFrame:
    """:func:`grouped_split` of a manifest that joins several sources.

    Without ``holdout_source`` each source is split on its own, in run order, with the
    same parameters (its shipped test set, if any, kept as shipped only in a run of that
    one source: here every source's test share is drawn), and a row whose group already
    has a split (a copy kept in two sources, a near-duplicate pair across sources) follows
    its group. With ``holdout_source`` that source, and every group it shares, is the
    test split; the rest is split into train and validation (``test_size`` unused).
    """
    if "source" not in df.columns:
        raise ValueError("holdout_source needs a manifest of several sources (a 'source' column)")
    _check_inputs(df, group_col, val_size, test_size, n_folds)
    names = list(dict.fromkeys(df["source"]))
    work = df.reset_index(drop=True).copy()
    work["group"] = work[group_col].astype(str)
    work["source_split"] = None  # shipped splits of single sources do not carry over
    info: dict = {
        "seed": int(seed),
        "val_size": float(val_size),
        "test_size": float(test_size),
        "n_folds": int(n_folds),
        "group_col": group_col,
        "shipped": False,
        "holdout_source": holdout_source,
        "sources": names,
        "by_source": {},
        "dropped": [],
        "moves": [],
        "notes": [],
    }
    assigned: dict[str, tuple[str, int]] = {}  # group -> (split, fold)
    if holdout_source:
        if holdout_source not in names:
            raise ValueError(
                f"holdout_source '{holdout_source}' is not a source of this run; its sources "
                f"are {names}"
            )
        if len(names) < 2:
            raise ValueError("holdout_source needs at least two sources")
        held = set(work.loc[work["source"] == holdout_source, "group"])
        assigned.update({g: ("test", -1) for g in held})
        rest = work[~work["group"].isin(held)]
        part = _split_one(rest, val_size, 0.0, seed, "group", n_folds, shipped_overlap_action)
        assigned.update(zip(part["group"], zip(part["split"], part["fold"])))
        info["test_method"] = f"leave-one-source-out: all of {holdout_source}"
        info["val_method"] = part.attrs["split"]["val_method"]
        info["moves"] = part.attrs["split"]["moves"]
        info["notes"].append(
            f"test is the whole source {holdout_source} ({len(held):,} groups); train and "
            f"validation come from {[n for n in names if n != holdout_source]}"
        )
    else:
        for name in names:
            rows = work[(work["source"] == name) & ~work["group"].isin(set(assigned))]
            if rows.empty:
                continue
            part = _split_one(
                rows, val_size, test_size, seed, "group", n_folds, shipped_overlap_action
            )
            assigned.update(zip(part["group"], zip(part["split"], part["fold"])))
            info["by_source"][name] = {
                k: part.attrs["split"][k] for k in ("test_method", "val_method", "moves")
            }
            info["moves"] += part.attrs["split"]["moves"]
        methods = {v["test_method"] for v in info["by_source"].values()}
        info["test_method"] = "per source: " + "; ".join(sorted(methods))
        info["val_method"] = "per source: " + "; ".join(
            sorted({v["val_method"] for v in info["by_source"].values()})
        )
        info["notes"].append(
            "split source by source (stratified by class within each source); a row whose "
            "group another source already placed follows it"
        )
    work["split"] = work["group"].map(lambda g: assigned[g][0])
    work["fold"] = work["group"].map(lambda g: assigned[g][1]).astype(int)
    out = work[SPLIT_COLUMNS].copy()
    out.attrs = dict(df.attrs)
    info["sizes"] = split_summary(out).to_dict("index")
    out.attrs["split"] = info
    return out


def _split_one(
    df: pd.DataFrame,
    val_size: float = 0.15,
    test_size: float = 0.15,
    seed: int = 0,
    group_col: str = "group",
    n_folds: int = 0,
    shipped_overlap_action: str = "drop_train",
) -> pd.DataFrame:
    """:func:`grouped_split` of one source.

    Returns one row per kept image with columns ``relpath, image_id, group, label,
    label_idx, split, fold``. ``fold`` is -1 without folds; with ``n_folds = K`` the
    train+val pool is dealt into K grouped stratified folds (test rows keep -1) and the
    validation split *is* fold 0 (``val_size`` is then ignored). With a shipped test set
    (``source_split``), ``test_size`` is ignored, the shipped test set is kept, and
    groups found in both shipped parts lose their train rows (``shipped_overlap_action=
    "drop_train"``) or move them to test (``"move_to_test"``). ``attrs["split"]``
    records the parameters, the method, the overlap, dropped rows and class moves.
    """
    _check_inputs(df, group_col, val_size, test_size, n_folds)
    if shipped_overlap_action not in OVERLAP_ACTIONS:
        raise ValueError(
            f"shipped_overlap_action must be one of {OVERLAP_ACTIONS}, got "
            f"'{shipped_overlap_action}'"
        )
    seed = int(seed)
    n_folds = int(n_folds)
    work = df.reset_index(drop=True).copy()
    work["group"] = work[group_col].astype(str)
    work["split"] = "train"
    work["fold"] = -1
    shipped = has_shipped_split(work)
    info: dict = {
        "seed": seed,
        "val_size": float(val_size),
        "test_size": float(test_size),
        "n_folds": n_folds,
        "group_col": group_col,
        "shipped": shipped,
        "dropped": [],
        "moves": [],
        "notes": [],
    }
    keep = np.ones(len(work), dtype=bool)

    if shipped:
        overlap = shipped_overlap(work)
        info["shipped_overlap"] = {
            "groups": int(len(overlap)),
            "train_images": int(overlap["n_train"].sum()),
            "test_images": int(overlap["n_test"].sum()),
            "action": shipped_overlap_action,
            "table": overlap.to_dict("records"),
        }
        is_test = (work["source_split"] == "test").to_numpy()
        crossing = work["group"].isin(set(overlap["group"])).to_numpy()
        if shipped_overlap_action == "drop_train":
            keep &= ~(crossing & ~is_test)
            info["dropped"] = work.loc[~keep, "relpath"].tolist()
        else:
            is_test = is_test | crossing
        work.loc[is_test, "split"] = "test"
        info["test_method"] = "shipped test set"
        if test_size:
            info["notes"].append(
                f"test_size={test_size} ignored: the dataset ships its own "
                "test set, which is kept as it is"
            )
        n_total = int(keep.sum())
        pool_mask = keep & ~is_test
        # val_size is a share of all kept images, carved out of the shipped train set
        val_frac = val_size * n_total / max(1, int(pool_mask.sum()))
        if val_frac >= 1:
            raise ValueError(
                f"val_size={val_size} asks for more images than the shipped "
                f"train set holds ({int(pool_mask.sum())})"
            )
    else:
        # one stratified pass deals test and val alike (val only here without folds)
        part, method = _hold_out(work, [test_size, 0.0 if n_folds else val_size], seed)
        work.loc[part == 0, "split"] = "test"
        work.loc[part == 1, "split"] = "val"
        info["test_method"] = info["val_method"] = method
        pool_mask = part != 0

    pool_idx = np.flatnonzero(pool_mask)
    pool = work.iloc[pool_idx]
    if n_folds:
        fold = _assign_folds(pool, n_folds, seed)
        work.loc[pool_idx, "fold"] = fold
        work.loc[pool_idx[fold == 0], "split"] = "val"
        info["val_method"] = f"fold 0 of {n_folds} grouped stratified folds"
        if val_size and abs(val_size - 1 / n_folds) > 0.02:
            info["notes"].append(
                f"val_size={val_size} ignored: with n_folds={n_folds} the "
                "validation split is fold 0"
            )
    elif shipped:
        part, method = _hold_out(pool, [val_frac], seed)
        work.loc[pool_idx[part == 0], "split"] = "val"
        info["val_method"] = method

    work = work[keep].reset_index(drop=True)
    parts = (
        ["train"]
        + ([] if shipped or not test_size else ["test"])
        + (["val"] if val_size or n_folds else [])
    )
    donors = [p for p in parts if not (shipped and p == "test")]
    info["moves"] = _ensure_class_presence(work, parts, donors, seed)
    out = work[SPLIT_COLUMNS].copy()
    if shipped:
        out["source_split"] = work["source_split"].to_numpy()
    out.attrs = dict(df.attrs)
    info["sizes"] = split_summary(out).to_dict("index")
    out.attrs["split"] = info
    return out


# ----------------------------------------------------------------------------- checks


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


# ----------------------------------------------------------------------------- tables and plots


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
    "is_shipped",
    "SPLITS",
    "SplitError",
    "grouped_split",
    "merge_near_duplicates",
    "read_pairs",
    "shipped_overlap",
    "has_shipped_split",
    "check_split",
    "naive_split_leakage",
    "split_summary",
    "split_table",
    "save_split",
    "read_split",
    "n_folds_of",
    "fold_split",
]
