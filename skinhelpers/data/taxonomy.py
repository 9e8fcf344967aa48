"""The clinical class taxonomy: what a dataset's class names mean, so that datasets can be
joined (several sources in one run, :mod:`skinhelpers.data.sources`) and a model can be
scored on another dataset (notebook 09, :mod:`skinhelpers.evaluate.external`).

One table, :data:`CLINICAL_SYNONYMS`, maps a clinical concept to the names datasets use for
it; :func:`resolve_class_map` pairs the classes of two datasets through it (or through a
dict the reader gives) and :func:`apply_class_map` relabels a manifest accordingly.
A leaf module: it imports nothing from skinhelpers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import pandas as pd

log = logging.getLogger(__name__)

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


def norm_name(name: str) -> str:
    return re.sub(r"[\s_]+", " ", str(name).strip().lower())


def clinical_meaning(name: str, overrides: Mapping[str, str] | None = None) -> str | None:
    """The clinical concept (a key of :data:`CLINICAL_SYNONYMS`) a class name stands for;
    ``overrides`` (a dataset's own class -> concept, e.g. melanoma10k's ``malignant`` ->
    ``melanoma``) come first."""
    if overrides and name in overrides:
        return overrides[name]
    n = norm_name(name)
    for concept, names in CLINICAL_SYNONYMS.items():
        if n in names:
            return concept
    return None


def resolve_class_map(
    source_classes,
    external_classes,
    class_map: str | Mapping[str, str] = "auto",
    source_concepts: Mapping[str, str] | None = None,
    external_concepts: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per external class: ``external_class``, ``source_class`` (None: dropped),
    ``how`` (the reason, in words).

    ``"auto"`` pairs classes of the same name, then maps both sides to a clinical meaning
    (:data:`CLINICAL_SYNONYMS`, with each side's ``*_concepts`` overrides first) and pairs
    classes that share one; a dict maps external class names to source class names
    (names it leaves out are dropped).
    """
    source_classes, external_classes = list(source_classes), list(external_classes)
    rows = []
    if isinstance(class_map, str):
        if class_map != "auto":
            raise ValueError(f"class_map must be 'auto' or a dict, got '{class_map}'")
        by_name = {norm_name(s): s for s in source_classes}
        by_concept: dict[str, list[str]] = {}
        for s in source_classes:
            c = clinical_meaning(s, source_concepts)
            if c:
                by_concept.setdefault(c, []).append(s)
        for e in external_classes:
            c = clinical_meaning(e, external_concepts)
            target = by_name.get(norm_name(e)) or (by_concept.get(c, [None])[0] if c else None)
            if target is not None:
                how = "same name" if norm_name(e) == norm_name(target) else f"both mean '{c}'"
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


__all__ = [
    "CLINICAL_SYNONYMS",
    "apply_class_map",
    "clinical_meaning",
    "resolve_class_map",
]
