"""Leakage-free splits: stratified by class, grouped by lesion, deterministic by seed.

Every image of one leakage *group* (a lesion, joined with byte-identical copies by
:mod:`skinhelpers.data.manifest` and with near-duplicates by
:mod:`skinhelpers.split.near_duplicates`) lands in exactly one split. The splitting itself
is scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold`: to hold out a
fraction ``f`` the groups are dealt into ``n`` stratified folds and ``k`` of them (``k/n``
close to ``f``, chosen by the seed) are taken. Where stratification is impossible (too few
groups, one class) :class:`~sklearn.model_selection.GroupShuffleSplit` takes over. A class
that is so rare that the folds missed it in a split gets one of its groups moved there from
the split holding most of them (recorded in ``attrs["split"]["moves"]``), so that every
class with at least one group per split is present in every split.

Datasets that ship their own ``Train``/``Test`` folders (``source_split``) keep the
shipped test set exactly as shipped; validation is carved out of the shipped train set
by group. Groups present in both shipped parts are reported (:func:`shipped_overlap`) and
their *train* rows dropped, so no group crosses.

**Two seeds.** The split is drawn by :func:`resolve_split_seed`: ``split_seed`` when it is
given (notebooks 01 and 04; 01's smoke subsample uses it too, since the subsample decides
which images can be in test), else the training ``seed``, so that ``seed`` alone keeps
moving both, as it always did. Runs that differ only in the training seed share their
test images when they share ``split_seed``.

The split is checked by :mod:`skinhelpers.split.checks`; :mod:`skinhelpers.split.store`
writes it to the run folder (``split.csv`` + ``split.json``) and reads it back for the
next notebooks.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, StratifiedGroupKFold

from skinhelpers.data.manifest import has_shipped_split, without_attrs
from skinhelpers.split.store import SPLIT_COLUMNS, split_summary

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("relpath", "image_id", "label", "label_idx")
OVERLAP_ACTIONS = ("drop_train", "move_to_test")


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


# ----------------------------------------------------------------------------- shipped splits


def shipped_overlap(df: pd.DataFrame, group_col: str = "group") -> pd.DataFrame:
    """Groups present in both the shipped train and the shipped test set (one row each)."""
    cols = ["group", "n_train", "n_test", "labels", "train_files", "test_files"]
    if not has_shipped_split(df):
        return pd.DataFrame(columns=cols)
    sp = df["source_split"].fillna("train").replace({"val": "train"})
    rows = []
    for g, sub in without_attrs(df).assign(_sp=sp).groupby(group_col, sort=True):
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


__all__ = [
    "grouped_split",
    "shipped_overlap",
]
