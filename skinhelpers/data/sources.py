"""Several datasets in one run: ``dataset="ham10000+isic9"``.

:func:`load_dataset` is what notebooks 01, 03 and 09 call. One registered dataset loads
exactly as :func:`skinhelpers.data.manifest.load_manifest` does. Several, joined with
``+``, are each loaded the same way (found under ``data_dir``, or under their own folder
in ``data_dirs``) and joined into one manifest:

* ``source`` names the dataset of each row and ``source_label`` keeps that dataset's own
  class name; ``label`` is the harmonised class, matched by clinical meaning through the
  one taxonomy (:mod:`skinhelpers.data.taxonomy`, also used by notebook 09).
* ``label_space`` chooses the classes: ``"first"`` (default) the first dataset's classes;
  ``"melanoma"`` melanoma against everything else (so a binary benign/malignant folder set
  can join a 7-class one); or a list of class names. A source class with no place in the
  label space is dropped and counted (``unmapped_classes="drop"``) or kept as an extra
  class (``"keep"``).
* ``relpath`` becomes ``<source>/<relpath>`` and ``group`` ``<source>:<group>``, so both
  stay unique across sources.
* **One image, one copy.** Public dermoscopy sets share images under other names and sizes
  (1,437 ISIC 9-class ids are HAM10000 images resized to 180x180). Every image of a later
  source is compared by content (perceptual hashes over the eight flips and rotations,
  :mod:`skinhelpers.data.hashes`) with the earlier sources; of a copy and its twin, the one
  with a lesion id and metadata is kept. ``copy_of`` names the kept twin on the other row,
  which validation (:mod:`skinhelpers.data.validate`) reports as ``cross_source_copy``
  (dropped by default), or ``cross_source_conflict`` when the two harmonised labels differ.
  The two rows share one group, so a copy that is kept never straddles two splits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from skinhelpers.data import hashes
from skinhelpers.data.manifest import load_manifest, union_groups
from skinhelpers.data.registry import (
    DATASETS,
    DEFAULT_DATA_DIR,
    DatasetError,
    concepts_of,
    dataset_spec,
)
from skinhelpers.data.taxonomy import clinical_meaning, norm_name, resolve_class_map
from skinhelpers.files import PROJECT_ROOT

log = logging.getLogger(__name__)

#: the label spaces by name (a list of class names is the third kind)
LABEL_SPACES = ("first", "melanoma")
#: the two classes of the ``"melanoma"`` label space (the positive class last)
MELANOMA_CLASSES = ("other", "melanoma")
UNMAPPED = ("drop", "keep")
#: where the perceptual hashes of joined sources are kept (by file content)
HASH_CACHE_DIR = PROJECT_ROOT / "data" / "cache" / "phash"
#: largest perceptual-hash distance (of 256 bits) for two images to be one picture; the
#: value notebook 09 uses (resized, re-encoded copies of HAM10000 lie at 0-30)
COPY_MAX_DISTANCE = 36
#: columns a joined manifest has beside :data:`skinhelpers.data.registry.MANIFEST_COLUMNS`
SOURCE_COLUMNS = ["source", "source_label", "copy_of", "copy_distance"]


# ----------------------------------------------------------------------------- requests


def parse_datasets(dataset: str) -> list[str]:
    """``"ham10000+isic9"`` -> ``["ham10000", "isic9"]``; refuses an unregistered name
    or a name given twice, naming it."""
    names = [n.strip() for n in str(dataset).split("+")]
    if not all(names):
        raise ValueError(f"dataset '{dataset}': empty name between '+' signs")
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(
            f"unknown dataset(s) {unknown} in '{dataset}'; registered: {sorted(DATASETS)} "
            "(join several with '+', e.g. ham10000+isic9)"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"dataset(s) {twice} named twice in '{dataset}'")
    if len(names) > 1 and "demo" in names:
        raise ValueError("the SYNTHETIC demo set cannot be joined with other datasets")
    return names


def _known_classes(name: str) -> list[str] | None:
    classes = dataset_spec(name).classes
    return list(classes) if classes is not None else None


def parse_label_space(label_space: str | Sequence[str]) -> str | list[str]:
    """``"first"``, ``"melanoma"``, or a list of class names (given as a list, or as one
    string of comma-separated names, as ``run_all.sh -p label_space "mel,nv,bkl"`` does)."""
    if isinstance(label_space, str):
        if "," in label_space:
            return [c.strip() for c in label_space.split(",") if c.strip()]
        return label_space.strip()
    return list(label_space)


def check_request(
    dataset: str,
    label_space: str | Sequence[str] = "first",
    unmapped_classes: str = "drop",
    data_dirs: Mapping[str, str] | None = None,
) -> list[str]:
    """Everything that can be checked before any file is read: the dataset names, the
    label space (a listed class must mean something a source has), ``unmapped_classes``
    and ``data_dirs`` (keys must be sources of the run). Returns the source names."""
    names = parse_datasets(dataset)
    label_space = parse_label_space(label_space)
    if unmapped_classes not in UNMAPPED:
        raise ValueError(
            f"unmapped_classes must be one of {list(UNMAPPED)}, got '{unmapped_classes}'"
        )
    if data_dirs:
        if not isinstance(data_dirs, Mapping):
            raise ValueError(f"data_dirs must be a dict {{dataset: folder}}, got {data_dirs!r}")
        extra = sorted(set(data_dirs) - set(names))
        if extra:
            raise ValueError(f"data_dirs names {extra}, which are not in dataset '{dataset}'")
    if isinstance(label_space, str):
        if label_space not in LABEL_SPACES:
            raise ValueError(
                f"label_space must be one of {list(LABEL_SPACES)} or a list of class names "
                f"(comma-separated), got '{label_space}'"
            )
        return names
    wanted = list(label_space)
    if not wanted or not all(isinstance(c, str) and c for c in wanted):
        raise ValueError(f"label_space must be a non-empty list of class names, got {wanted!r}")
    # a class no source can fill is refused now, where the sources' classes are known
    known = {n: _known_classes(n) for n in names}
    if all(v is not None for v in known.values()):
        have = set()
        for n, classes in known.items():
            concepts = concepts_of(n)
            have |= {norm_name(c) for c in classes}
            have |= {clinical_meaning(c, concepts) for c in classes}
        missing = [
            c for c in wanted if norm_name(c) not in have and clinical_meaning(c) not in have
        ]
        if missing:
            raise ValueError(
                f"label_space class(es) {missing} are in no source of '{dataset}' (by name "
                f"or clinical meaning); the sources' classes: {known}"
            )
    return names


# ----------------------------------------------------------------------------- labels


def label_map_table(
    sources: Mapping[str, Sequence[str]],
    label_space: str | Sequence[str] = "first",
    unmapped_classes: str = "drop",
    concepts: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """How every source class maps into the label space.

    ``sources``: source name -> its classes, in run order. Returns one row per source
    class (``source``, ``source_class``, ``label``: the harmonised class or None when
    dropped, ``how``) and the label space's classes in order.
    """
    concepts = concepts or {}
    names = list(sources)
    rows = []
    if label_space == "melanoma":
        classes = list(MELANOMA_CLASSES)
        for s in names:
            for c in sources[s]:
                meaning = clinical_meaning(c, concepts.get(s))
                if meaning is None:
                    raise DatasetError(
                        f"{s}: class '{c}' has no known clinical meaning, so it cannot be "
                        "placed in the 'melanoma' label space (melanoma vs everything else); "
                        "give label_space as a list, or rename the class folder"
                    )
                is_mel = meaning == "melanoma"
                rows.append(
                    {
                        "source": s,
                        "source_class": c,
                        "label": "melanoma" if is_mel else "other",
                        "how": "melanoma" if is_mel else f"'{meaning}': not melanoma",
                    }
                )
        return pd.DataFrame(rows), classes
    if label_space == "first":
        first = names[0]
        classes = list(sources[first])
        target_concepts = concepts.get(first)
    else:
        classes = list(label_space)
        target_concepts = None
    extra: list[str] = []
    for s in names:
        t = resolve_class_map(classes, sources[s], "auto", target_concepts, concepts.get(s))
        for r in t.itertuples():
            label, how = r.source_class, r.how
            if label is None and unmapped_classes == "keep":
                meaning = clinical_meaning(r.external_class, concepts.get(s))
                label = meaning or r.external_class
                how = "no class in the label space: kept as an extra class"
                if label not in extra:
                    extra.append(label)
            rows.append({"source": s, "source_class": r.external_class, "label": label, "how": how})
    return pd.DataFrame(rows), classes + extra


# ----------------------------------------------------------------------------- copies


def _metadata_score(df: pd.DataFrame) -> np.ndarray:
    """How much a row knows: a lesion id counts most, then each metadata value."""
    score = df["lesion_id"].notna().to_numpy().astype(int) * 10
    for c in ("age", "sex", "localization"):
        if c in df:
            v = df[c]
            score += (v.notna() & (v.astype(str) != "unknown")).to_numpy().astype(int)
    return score


def find_copies(
    df: pd.DataFrame,
    max_distance: int = COPY_MAX_DISTANCE,
    cache_dir: str | os.PathLike | None = HASH_CACHE_DIR,
    workers: int = 2,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Images of a later source that are, by content, a copy of an image of an earlier
    one. One row per pair (each image of a later source matched to its closest earlier
    image): ``relpath`` (the copy to drop), ``twin`` (the copy kept: the one with a lesion
    id and metadata, else the earlier source's), ``distance``, ``transform``."""
    usable = df[df["path"].notna()]
    names = list(dict.fromkeys(usable["source"]))
    bits = (
        hashes.cached_phash_codes(usable, cache_dir, 16, workers, show_progress)
        if cache_dir
        else hashes.phash_codes(usable["path"], 16, workers, show_progress, dihedral=True)
    )
    src = usable["source"].to_numpy()
    score = _metadata_score(usable)
    rel = usable["relpath"].to_numpy()
    rows = []
    for k, name in enumerate(names[1:], start=1):
        q_idx = np.flatnonzero(src == name)
        r_idx = np.flatnonzero(np.isin(src, names[:k]))
        if not len(q_idx) or not len(r_idx):
            continue
        q, r, d, v = hashes.cross_pairs(bits[q_idx], bits[r_idx], max_distance)
        order = np.lexsort((d,))  # closest first; keep each query image's best match
        q, r, d, v = q[order], r[order], d[order], v[order]
        _, first = np.unique(q, return_index=True)
        for i, j, dist, view in zip(q[first], r[first], d[first], v[first]):
            a, b = q_idx[i], r_idx[j]  # a: later source, b: earlier source
            drop, keep = (b, a) if score[a] > score[b] else (a, b)
            rows.append(
                {
                    "relpath": rel[drop],
                    "twin": rel[keep],
                    "distance": int(dist),
                    "transform": hashes.DIHEDRAL_VIEWS[int(view)],
                }
            )
    cols = ["relpath", "twin", "distance", "transform"]
    out = pd.DataFrame(rows, columns=cols)
    # a kept image may not itself be dropped as another image's copy: keep the first call
    return out[~out["twin"].isin(set(out["relpath"]))].drop_duplicates("relpath")


# ----------------------------------------------------------------------------- loading


def _source_dir(name: str, data_dir, data_dirs: Mapping[str, str] | None):
    if data_dirs and data_dirs.get(name):
        return data_dirs[name]
    return data_dir or DEFAULT_DATA_DIR / name


def join_sources(
    frames: Mapping[str, pd.DataFrame],
    label_space: str | Sequence[str] = "first",
    unmapped_classes: str = "drop",
    find_copies_kw: Mapping | None = None,
) -> pd.DataFrame:
    """One manifest from per-source manifests (see the module docstring)."""
    names = list(frames)
    concepts = {n: concepts_of(n) for n in names}
    table, classes = label_map_table(
        {n: frames[n].attrs["classes"] for n in names}, label_space, unmapped_classes, concepts
    )
    parts, sources_info = [], []
    for n in names:
        f = frames[n].copy()
        m = table[table["source"] == n].set_index("source_class")["label"]
        f["source"] = n
        f["source_label"] = f["label"]
        f["label"] = f["label"].map(m)
        kept = f["label"].notna()
        dropped = f.loc[~kept, "source_label"].value_counts()
        if not kept.any():
            raise DatasetError(
                f"{n}: none of its classes {frames[n].attrs['classes']} has a place in the label "
                f"space {classes}; choose label_space='melanoma' or a list of classes"
            )
        f = f[kept]
        f["relpath"] = n + "/" + f["relpath"].astype(str)
        f["group"] = n + ":" + f["group"].astype(str)
        parts.append(f)
        sources_info.append(
            {
                "name": n,
                "root": frames[n].attrs["root"],
                "images": int(len(f)),
                "classes": list(frames[n].attrs["classes"]),
                "labels_kept": sorted(set(f["label"])),
                "dropped_by_class": {k: int(v) for k, v in dropped.items()},
            }
        )
        if f["label"].nunique() == 1 and len(classes) > 2:
            log.warning(
                "%s brings only class '%s' into the run: the source alone tells the class "
                "(a shortcut); label_space='melanoma' keeps all its images",
                n,
                f["label"].iloc[0],
            )
    df = pd.concat(parts, ignore_index=True)
    df["label_idx"] = df["label"].map({c: i for i, c in enumerate(classes)}).astype(int)
    copies = find_copies(df, **(find_copies_kw or {}))
    twin_of = dict(zip(copies["relpath"], copies["twin"]))
    dist_of = dict(zip(copies["relpath"], copies["distance"]))
    df["copy_of"] = df["relpath"].map(twin_of).astype(object)
    df["copy_distance"] = df["relpath"].map(dist_of)
    df["copy_of"] = df["copy_of"].where(df["copy_of"].notna(), None)
    # a copy and its twin are one leakage group
    group_of = dict(zip(df["relpath"], df["group"]))
    keys = [
        [g, group_of[t]] if isinstance(t, str) else [g] for g, t in zip(df["group"], df["copy_of"])
    ]
    df["group"] = union_groups(keys)
    first = frames[names[0]].attrs
    positive = (
        "melanoma"
        if label_space == "melanoma"
        else next((c for c in classes if clinical_meaning(c) == "melanoma"), None)
    )
    if label_space == "first" and first.get("positive_class") in classes:
        positive = first["positive_class"]
    df.attrs = {
        "dataset": "+".join(names),
        "classes": classes,
        "root": first["root"],
        "synthetic": False,
        "positive_class": positive,
        "load_issues": [
            {**li, "message": f"{n}: {li['message']}"}
            for n in names
            for li in frames[n].attrs.get("load_issues", [])
        ],
        "sources": sources_info,
        "label_space": label_space if isinstance(label_space, str) else list(label_space),
        "unmapped_classes": unmapped_classes,
        "class_map": table.to_dict("records"),
        "copies": {
            "pairs": int(len(copies)),
            "by_source": {
                k: int(v) for k, v in df.loc[df["copy_of"].notna(), "source"].value_counts().items()
            },
            "max_distance": int((find_copies_kw or {}).get("max_distance", COPY_MAX_DISTANCE)),
        },
    }
    return df


def load_dataset(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    data_dirs: Mapping[str, str] | None = None,
    label_space: str | Sequence[str] = "first",
    unmapped_classes: str = "drop",
    workers: int = 2,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Load one dataset (exactly :func:`load_manifest`) or several joined with ``+``.

    ``data_dir`` is where every source is looked for (each found by its marker, as for one
    dataset); ``data_dirs`` gives a source its own folder (``{"isic9": "DIR"}``).
    One dataset with a ``label_space`` other than ``"first"`` is relabelled the same way
    (e.g. HAM10000 as melanoma vs everything else).
    """
    names = check_request(dataset, label_space, unmapped_classes, data_dirs)
    label_space = parse_label_space(label_space)
    if len(names) == 1 and label_space == "first":
        return load_manifest(names[0], _source_dir(names[0], data_dir, data_dirs), seed=seed)
    frames = {}
    for n in names:
        where = _source_dir(n, data_dir, data_dirs)
        frames[n] = load_manifest(n, where, seed=seed)
        log.info("%s: %d images from %s", n, len(frames[n]), frames[n].attrs["root"])
    kw = {"workers": workers, "show_progress": show_progress}
    return join_sources(frames, label_space, unmapped_classes, kw)


def load_like(attrs: Mapping, data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The raw dataset a run's manifest came from (its ``attrs``), loaded again: the same
    sources from the same folders, the same label space (for notebooks 03 and 09)."""
    if "sources" not in attrs:
        return load_manifest(attrs["dataset"], data_dir or attrs["root"])
    dirs = {s["name"]: s["root"] for s in attrs["sources"]}
    return load_dataset(
        attrs["dataset"],
        data_dirs=dirs,
        label_space=attrs.get("label_space", "first"),
        unmapped_classes=attrs.get("unmapped_classes", "drop"),
        show_progress=False,
    )


def is_multi_source(df: pd.DataFrame) -> bool:
    """Whether a manifest joins several sources."""
    return "source" in df.columns and df["source"].nunique() > 1


def source_names(df: pd.DataFrame) -> list[str]:
    """The sources of a manifest in run order (one name for a single dataset)."""
    if "source" in df.columns:
        return list(dict.fromkeys(df["source"]))
    return [str(df.attrs.get("dataset"))]


__all__ = [
    "COPY_MAX_DISTANCE",
    "LABEL_SPACES",
    "MELANOMA_CLASSES",
    "SOURCE_COLUMNS",
    "check_request",
    "label_map_table",
    "find_copies",
    "is_multi_source",
    "join_sources",
    "load_dataset",
    "load_like",
    "parse_datasets",
    "parse_label_space",
    "source_names",
]
