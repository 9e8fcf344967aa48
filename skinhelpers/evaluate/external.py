"""External validation (notebook 09): score a run's checkpoint on another dataset.

1. :func:`resolve_class_map` maps the external classes onto the run's classes by their
   clinical meaning (``"auto"``), or as the reader says (a dict); unmapped classes are
   dropped and counted.
2. :func:`content_overlap` finds every external image that is, by content, an exact or
   near duplicate of any image of the source dataset, flips and 90-degree rotations
   included (dihedral perceptual hashes, :mod:`skinhelpers.explore.leakage`): public
   dermoscopy sets share images under other names and sizes (1,437 ISIC 9-class images
   are HAM10000 images resized to 180x180).
3. :func:`score_external` scores the images left, with bootstrap CIs, and the whole set,
   to show what the leak would have done.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from skinhelpers.evaluate import scores
from skinhelpers.explore import leakage

#: clinical meaning -> the class names datasets use for it (lower case)
CLINICAL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "melanoma": ("mel", "melanoma", "malignant melanoma"),
    "nevus": ("nv", "nevus", "nevi", "naevus", "melanocytic nevus", "melanocytic nevi"),
    "basal cell carcinoma": ("bcc", "basal cell carcinoma"),
    "actinic keratosis": (
        "akiec",
        "ak",
        "actinic keratosis",
        "actinic keratoses",
        "actinic keratosis / intraepithelial carcinoma",
    ),
    # HAM10000's bkl lumps seborrheic keratosis, solar lentigo and lichen-planus-like
    # keratosis together (Tschandl et al. 2018)
    "benign keratosis": (
        "bkl",
        "benign keratosis",
        "benign keratosis-like lesion",
        "pigmented benign keratosis",
        "seborrheic keratosis",
        "solar lentigo",
        "lichen planus-like keratosis",
    ),
    "dermatofibroma": ("df", "dermatofibroma"),
    "vascular lesion": ("vasc", "vascular lesion", "vascular lesions"),
    # invasive SCC has no HAM10000 class (akiec holds only the in-situ form, Bowen's
    # disease), so it is kept apart and dropped when the source has no SCC class
    "squamous cell carcinoma": ("scc", "squamous cell carcinoma"),
}

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


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", str(name).strip().lower())


def clinical_meaning(name: str) -> str | None:
    """The clinical concept (a key of :data:`CLINICAL_SYNONYMS`) a class name stands for."""
    n = _norm(name)
    for concept, names in CLINICAL_SYNONYMS.items():
        if n in names:
            return concept
    return None


def resolve_class_map(
    source_classes, external_classes, class_map: str | Mapping[str, str] = "auto"
) -> pd.DataFrame:
    """One row per external class: ``external_class``, ``source_class`` (None: dropped),
    ``how`` (the reason, in words).

    ``"auto"`` maps both sides to a clinical meaning (:data:`CLINICAL_SYNONYMS`) and pairs
    classes that share one; a dict maps external class names to source class names
    (names it leaves out are dropped).
    """
    source_classes, external_classes = list(source_classes), list(external_classes)
    rows = []
    if isinstance(class_map, str):
        if class_map != "auto":
            raise ValueError(f"class_map must be 'auto' or a dict, got '{class_map}'")
        by_concept: dict[str, list[str]] = {}
        for s in source_classes:
            c = clinical_meaning(s)
            if c:
                by_concept.setdefault(c, []).append(s)
        for e in external_classes:
            c = clinical_meaning(e)
            target = by_concept.get(c, [None])[0] if c else None
            if target is not None:
                how = "same name" if _norm(e) == _norm(target) else f"both mean '{c}'"
            elif c:
                how = f"'{c}' has no class in the source dataset: dropped"
            else:
                how = "no known clinical meaning: dropped"
            rows.append({"external_class": e, "source_class": target, "how": how})
    else:
        bad = {k: v for k, v in class_map.items() if v not in source_classes}
        if bad:
            raise ValueError(
                f"class_map maps to classes the run does not have: {bad}; "
                f"the run's classes are {source_classes}"
            )
        unknown = sorted(set(class_map) - set(external_classes))
        if unknown:
            raise ValueError(
                f"class_map names external classes that do not exist: {unknown};"
                f" the external classes are {external_classes}"
            )
        for e in external_classes:
            t = class_map.get(e)
            rows.append(
                {
                    "external_class": e,
                    "source_class": t,
                    "how": "given in class_map" if t else "not in class_map: dropped",
                }
            )
    return pd.DataFrame(rows, columns=["external_class", "source_class", "how"])


def apply_class_map(
    external: pd.DataFrame, table: pd.DataFrame, source_classes
) -> tuple[pd.DataFrame, pd.Series]:
    """External rows whose class maps, relabelled with the source class (``label``,
    ``label_idx``; the original in ``external_label``), and the dropped count per class."""
    source_classes = list(source_classes)
    m = dict(zip(table["external_class"], table["source_class"]))
    target = external["label"].map(m)
    keep = target.notna()
    dropped = external.loc[~keep, "label"].value_counts().rename("dropped")
    out = external[keep].copy()
    out["external_label"] = out["label"]
    out["label"] = target[keep]
    out["label_idx"] = out["label"].map({c: i for i, c in enumerate(source_classes)})
    out.attrs = dict(external.attrs)
    return out.reset_index(drop=True), dropped


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
        (lambda d: leakage.cached_phash_codes(d, cache_dir, hash_size, workers, show_progress))
        if cache_dir
        else (
            lambda d: leakage.phash_codes(
                d["path"], hash_size, workers, show_progress, dihedral=True
            )
        )
    )
    q, r, d, v = leakage.cross_pairs(hash_(external), hash_(source), max_distance)
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
    views = np.asarray(leakage.DIHEDRAL_VIEWS)[v]
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
    y, probs, pos: int, threshold: float, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """AUC of class ``pos`` vs rest, and sensitivity / specificity at ``p >= threshold``,
    with bootstrap CIs (JSON-ready)."""

    y = np.asarray(y)
    yb = (y == pos).astype(int)
    if yb.all() or not yb.any():
        return {"n_pos": int(yb.sum()), "note": "needs both positive and other images"}
    s = np.asarray(probs)[:, pos]
    p2 = np.stack([1 - s, s], 1)
    fns = {
        "auc": lambda yy, p: skm.roc_auc_score(yy, p[:, 1]),
        "sensitivity": lambda yy, p: scores.operating_point(yy, p[:, 1], threshold)["sensitivity"],
        "specificity": lambda yy, p: scores.operating_point(yy, p[:, 1], threshold)["specificity"],
    }
    t = scores.bootstrap_ci(yb, p2, fns, n_bootstrap, seed)
    return {"n_pos": int(yb.sum()), "threshold": float(threshold), **scores.ci_dict(t)}


def score_external(
    y,
    probs,
    classes,
    pos: int | None = None,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Headline metrics with CIs (:func:`scores.evaluate_predictions`) and, when the run
    has a positive class and a threshold, melanoma AUC / sensitivity / specificity."""
    out = scores.evaluate_predictions(y, probs, classes, n_bootstrap, seed)
    if pos is not None and threshold is not None:
        out["positive_class"] = melanoma_at_threshold(y, probs, pos, threshold, n_bootstrap, seed)
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
    "CLINICAL_SYNONYMS",
    "OVERLAP_COLUMNS",
    "apply_class_map",
    "clinical_meaning",
    "content_overlap",
    "leak_table",
    "mark_run_split",
    "melanoma_at_threshold",
    "overlap_summary",
    "resolve_class_map",
    "score_external",
]
