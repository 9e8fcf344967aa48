"""External validation (notebook 09): score a run's checkpoint on another dataset.

1. :func:`skinhelpers.data.taxonomy.resolve_class_map` maps the external classes onto the
   run's classes by their clinical meaning (``"auto"``), or as the reader says (a dict);
   unmapped classes are dropped and counted (the taxonomy that also joins sources).
2. :func:`content_overlap` finds every external image that is, by content, an exact or
   near duplicate of any image of the source dataset, flips and 90-degree rotations
   included (dihedral perceptual hashes, :mod:`skinhelpers.explore.leakage`): public
   dermoscopy sets share images under other names and sizes (1,437 ISIC 9-class images
   are HAM10000 images resized to 180x180).
3. :func:`score_external` scores the images left, with bootstrap CIs, and the whole set,
   to show what the leak would have done.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skinhelpers.data import hashes
from skinhelpers.evaluate import bootstrap, scores, thresholds

log = logging.getLogger(__name__)

#: columns of external_overlap.csv
OVERLAP_COLUMNS = [
    "image_id",
    "relpath",
    "label",
    "source_image_id",
    "source_relpath",
    "source_label",
    "distance",
    "transform",
    "kind",
    "same_name",
    "run_split",
    "matches",
]


def content_overlap(
    external: pd.DataFrame,
    source: pd.DataFrame,
    max_distance: int = 36,
    cache_dir=None,
    hash_size: int = 16,
    workers: int = 2,
    show_progress: bool = True,
) -> pd.DataFrame:
    """External images that are, by content, a copy of a source image: one row per
    external image (its closest source image), columns :data:`OVERLAP_COLUMNS`.

    ``kind``: ``exact`` (same bytes), ``rotated/mirrored`` (matched through a flip or
    a 90-degree rotation), ``near`` (resized, re-encoded, recoloured...). ``same_name``:
    the two files also share their image id; ``matches``: how many source images lie
    within ``max_distance`` bits. ``run_split`` is left empty (see :func:`mark_run_split`).
    """
    hash_ = (
        (lambda d: hashes.cached_phash_codes(d, cache_dir, hash_size, workers, show_progress))
        if cache_dir
        else (
            lambda d: hashes.phash_codes(
                d["path"], hash_size, workers, show_progress, dihedral=True
            )
        )
    )
    q, r, d, v = hashes.cross_pairs(hash_(external), hash_(source), max_distance)
    sha_e = external["sha1"].astype(str).to_numpy() if "sha1" in external else None
    sha_s = source["sha1"].astype(str).to_numpy() if "sha1" in source else None
    exact = (
        np.zeros(len(q), dtype=bool)
        if sha_e is None or sha_s is None
        else (sha_e[q] == sha_s[r]) & (sha_e[q] != "None")
    )
    # order: exact first, then by distance; keep each external image's best match
    order = np.lexsort((d, ~exact))
    q, r, d, v, exact = q[order], r[order], d[order], v[order], exact[order]
    counts = np.bincount(q, minlength=len(external))
    _, first = np.unique(q, return_index=True)
    q, r, d, v, exact = q[first], r[first], d[first], v[first], exact[first]
    e, s = external.iloc[q].reset_index(drop=True), source.iloc[r].reset_index(drop=True)
    views = np.asarray(hashes.DIHEDRAL_VIEWS)[v]
    kind = np.where(exact, "exact", np.where(views != "identity", "rotated/mirrored", "near"))
    out = pd.DataFrame(
        {
            "image_id": e["image_id"],
            "relpath": e["relpath"],
            "label": e["label"],
            "source_image_id": s["image_id"],
            "source_relpath": s["relpath"],
            "source_label": s["label"],
            "distance": np.where(exact, 0, d),
            "transform": np.where(exact, "identity", views),
            "kind": kind,
            "same_name": e["image_id"].astype(str).to_numpy()
            == s["image_id"].astype(str).to_numpy(),
            "run_split": "",
            "matches": counts[q],
        },
        columns=OVERLAP_COLUMNS,
    )
    return out.sort_values(["distance", "image_id"]).reset_index(drop=True)


def mark_run_split(overlap: pd.DataFrame, run_split: pd.DataFrame) -> pd.DataFrame:
    """Fill ``run_split``: where the matched source image sits in the run (``train``,
    ``val``, ``test``, or ``not in run`` when the run's subsample left it out)."""
    where = dict(zip(run_split["relpath"], run_split["split"]))
    return overlap.assign(run_split=overlap["source_relpath"].map(where).fillna("not in run"))


def overlap_summary(overlap: pd.DataFrame) -> dict:
    """Counts for the report: by kind, by where the source image sits in the run."""
    return {
        "n_removed_overlap": len(overlap),
        "by_kind": {k: int(v) for k, v in overlap["kind"].value_counts().items()},
        "by_run_split": {k: int(v) for k, v in overlap["run_split"].value_counts().items()},
        "same_name": int(overlap["same_name"].sum()),
        "renamed": int((~overlap["same_name"]).sum()),
    }


def melanoma_at_threshold(
    y,
    probs,
    pos: int,
    threshold: float,
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups=None,
) -> dict:
    """AUC of class ``pos`` vs rest with a bootstrap CI of the ``groups`` (the external
    set's lesions, stratified by ``pos`` vs rest; ``None``: images), and sensitivity /
    specificity at ``p >= threshold`` with the Wilson intervals that count the groups
    (:func:`thresholds.operating_point_ci`, as notebook 08's operating points). JSON-ready."""

    y = np.asarray(y)
    yb = (y == pos).astype(int)
    if yb.all() or not yb.any():
        return {"n_pos": int(yb.sum()), "note": "needs both positive and other images"}
    s = np.asarray(probs)[:, pos]
    p2 = np.stack([1 - s, s], 1)
    fns = {"auc": lambda yy, p: skm.roc_auc_score(yy, p[:, 1])}
    t = bootstrap.bootstrap_ci(yb, p2, fns, n_bootstrap, seed, groups=groups)
    return {
        "n_pos": int(yb.sum()),
        "n_neg": int((1 - yb).sum()),
        "threshold": float(threshold),
        **bootstrap.ci_dict(t),
        **thresholds.operating_point_ci(yb.astype(bool), s, threshold, groups),
        **t.attrs,
    }


def score_external(
    y,
    probs,
    classes,
    pos: int | None = None,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups=None,
) -> dict:
    """Headline metrics with CIs (:func:`scores.evaluate_predictions`) and, when the run
    has a positive class and a threshold, melanoma AUC / sensitivity / specificity.
    ``groups``: the external images' lesions (the manifest's ``group``), the unit the
    bootstrap resamples; ``None`` resamples images."""
    out = scores.evaluate_predictions(y, probs, classes, n_bootstrap, seed, groups=groups)
    if pos is not None and threshold is not None:
        out["positive_class"] = melanoma_at_threshold(
            y, probs, pos, threshold, n_bootstrap, seed, groups=groups
        )
    return out


def leak_table(clean: dict, whole: dict) -> pd.DataFrame:
    """Headline metrics without the overlap and on the whole set, side by side."""
    rows = {}
    for name, r in (("overlap removed", clean), ("whole set (leaky)", whole)):
        row = {k: v for k, v in r["headline"].items()}
        if "positive_class" in r and "auc" in r["positive_class"]:
            for k in ("auc", "sensitivity", "specificity"):
                row[f"melanoma_{k}"] = r["positive_class"][k]
        rows[name] = {
            k: f"{v['value']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})" for k, v in row.items()
        }
    return pd.DataFrame(rows).T


__all__ = [
    "OVERLAP_COLUMNS",
    "content_overlap",
    "leak_table",
    "mark_run_split",
    "melanoma_at_threshold",
    "overlap_summary",
    "score_external",
]
