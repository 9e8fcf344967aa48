"""A ``folder`` dataset's own options, and the unit that groups a manifest's split.

**Your own data.** A ``folder`` dataset (any class-per-folder tree, loaded by
:func:`skinhelpers.data.manifest.load_manifest`) names its positive class and brings its
metadata through :func:`apply_folder_options` (notebook 01's ``positive_class`` and
``metadata_csv``): a CSV with an image id per row and any of ``lesion_id``,
``patient_id``, ``age``, ``sex``, ``site``/``localization`` (and ``dx_type``). Then the
split groups by patient where ``patient_id`` is known (all of one patient's lesions stay
in one split), else by lesion, else by image, and chapter 08 gets its operating points,
subgroups and metadata fusion. :func:`grouping_unit` and :func:`grouping_sentences` say
which unit groups a manifest's split, and what that cannot promise (HAM10000 has lesion
ids only: two lesions of one patient can sit in train and test).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinhelpers.data.manifest import base_id, union_groups
from skinhelpers.data.registry import (
    FOLDER_METADATA_ALIASES,
    FOLDER_METADATA_COLUMNS,
    IMAGE_EXTENSIONS,
    DatasetError,
    dataset_spec,
)
from skinhelpers.files import PROJECT_ROOT

log = logging.getLogger(__name__)


def _resolve_csv(metadata_csv: str | os.PathLike, root: Path) -> Path:
    """An absolute path as given; a relative one in the dataset folder, else from the
    project root (as a notebook's ``data_dir``)."""
    p = Path(metadata_csv).expanduser()
    if p.is_absolute():
        return p
    for cand in (root / p, PROJECT_ROOT / p):
        if cand.exists():
            return cand
    return root / p


def read_metadata_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A folder dataset's metadata CSV, one row per image id, with the columns the suite
    knows (``FOLDER_METADATA_COLUMNS``; the usual other names, e.g. ISIC's ``image_name``,
    ``age_approx``, ``anatom_site_general``, are renamed). Ids lose an image extension
    (``a.jpg`` matches the file ``a.jpg``). A CSV without an id column, with repeated ids
    or with none of the columns is an error naming them."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"metadata_csv {path} does not exist")
    try:
        meta = pd.read_csv(path, dtype=str, keep_default_na=True)
    except Exception as e:  # empty or unparsable file
        raise DatasetError(f"{path}: cannot be read as CSV ({e})") from e
    meta.columns = [str(c).strip().lower() for c in meta.columns]
    meta = meta.rename(columns={k: v for k, v in FOLDER_METADATA_ALIASES.items() if k in meta})
    if "image_id" not in meta.columns:
        raise DatasetError(
            f"{path}: no image id column (image_id, or image / image_name / isic_id); "
            f"found {list(meta.columns)}"
        )
    known = [c for c in FOLDER_METADATA_COLUMNS if c in meta.columns]
    if not known:
        raise DatasetError(
            f"{path}: none of the metadata columns {list(FOLDER_METADATA_COLUMNS)} "
            f"(or site / localization); found {list(meta.columns)}"
        )
    meta = meta.loc[:, ~meta.columns.duplicated()]
    ids = meta["image_id"].fillna("").astype(str).str.strip()
    ids = ids.map(
        lambda i: base_id(Path(i).stem if Path(i).suffix.lower() in IMAGE_EXTENSIONS else i)
    )
    if (ids == "").any():
        rows = (np.flatnonzero((ids == "").to_numpy()) + 2).tolist()[:10]
        raise DatasetError(f"{path}: empty image id on line(s) {rows}")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        raise DatasetError(
            f"{path}: image id(s) on more than one row: {sorted(set(dup))[:10]} (one row per image)"
        )
    out = pd.DataFrame({"image_id": ids})
    for c in known:
        v = meta[c].astype(object).where(meta[c].notna(), None)
        v = v.map(lambda x: x.strip() if isinstance(x, str) else x)
        out[c] = v.map(lambda x: None if x in ("", None) else x)
    if "age" in out:
        out["age"] = pd.to_numeric(out["age"], errors="coerce")
    if "sex" in out:
        out["sex"] = out["sex"].map(lambda x: x.lower() if isinstance(x, str) else x)
    return out


def apply_folder_options(
    df: pd.DataFrame, positive_class: str = "", metadata_csv: str | os.PathLike = ""
) -> pd.DataFrame:
    """A ``folder`` dataset's own positive class and metadata (notebook 01's parameters).

    ``positive_class``: the class chapter 08 treats as malignant (its operating points and
    melanoma section); one of the dataset's classes. ``metadata_csv``: see
    :func:`read_metadata_csv` (a relative path is looked for in the dataset folder, then
    from the project root). Its values fill the manifest's ``lesion_id``, ``age``,
    ``sex``, ``localization``, ``dx_type`` and a ``patient_id`` column, matched by image
    id; the leakage group becomes the patient where known, else the lesion, else the image
    (joined with byte-identical files as before). Images without a row keep their own
    group and are counted (``load_issues``: ``metadata_missing``); rows without an image
    are counted too. Both options empty: ``df`` unchanged. Other datasets (which name their
    classes and metadata themselves) refuse the options, as does a manifest of several
    sources. The options are kept in ``attrs["folder_options"]`` so that notebook 03 can
    read the raw folder again the same way.
    """
    if not positive_class and not metadata_csv:
        return df
    name = df.attrs.get("dataset")
    if name != "folder":
        own = df.attrs.get("positive_class")
        if not metadata_csv and positive_class == own:
            return df
        raise DatasetError(
            f"positive_class / metadata_csv are options of the 'folder' dataset; {name} "
            f"names its own (positive class {own!r}, metadata from its own files)"
        )
    out = df.copy()
    out.attrs = {**df.attrs, "load_issues": list(df.attrs.get("load_issues", []))}
    classes = list(df.attrs["classes"])
    if positive_class:
        if positive_class not in classes:
            raise DatasetError(
                f"positive_class '{positive_class}' is not a class of this dataset; its "
                f"classes (the folder names) are {classes}"
            )
        out.attrs["positive_class"] = positive_class
    options = {"positive_class": positive_class or "", "metadata_csv": ""}
    if metadata_csv:
        path = _resolve_csv(metadata_csv, Path(df.attrs["root"]))
        meta = read_metadata_csv(path).set_index("image_id")
        options["metadata_csv"] = str(path)
        ids = out["image_id"].astype(str)
        matched = ids.isin(meta.index)
        for c in meta.columns:
            v = ids.map(meta[c]).astype(object)
            out[c] = v.where(v.notna(), None)
        if "age" in out:
            out["age"] = pd.to_numeric(out["age"], errors="coerce")
        if "patient_id" not in out:
            out["patient_id"] = None
        keys = []
        for pid, lid, g, h in zip(out["patient_id"], out["lesion_id"], df["group"], df["sha1"]):
            k = [f"patient:{pid}"] if isinstance(pid, str) else []
            k += [str(lid)] if isinstance(lid, str) else []
            keys.append(k + [str(g)] + (["sha1:" + h] if isinstance(h, str) else []))
        out["group"] = union_groups(keys)
        n_missing, n_unused = int((~matched).sum()), int((~meta.index.isin(set(ids))).sum())
        if n_missing:
            out.attrs["load_issues"].append(
                {
                    "kind": "metadata_missing",
                    "count": n_missing,
                    "message": f"{n_missing} image(s) have no row in {path.name} (no metadata; "
                    f"each is its own group), e.g. {ids[~matched].head(3).tolist()}",
                }
            )
        out.attrs["metadata"] = {
            "csv": str(path),
            "columns": list(meta.columns),
            "images_matched": int(matched.sum()),
            "images_without_row": n_missing,
            "rows_without_image": n_unused,
            "patients": int(out["patient_id"].dropna().nunique()),
            "lesions": int(out["lesion_id"].dropna().nunique()),
        }
    out.attrs["folder_options"] = options
    return out


def reapply_folder_options(raw: pd.DataFrame, attrs: dict) -> pd.DataFrame:
    """The raw dataset read again (notebook 03) with the options chapter 01 gave it
    (``attrs["folder_options"]`` of the run's manifest); unchanged without them."""
    opts = attrs.get("folder_options") or {}
    return apply_folder_options(raw, opts.get("positive_class", ""), opts.get("metadata_csv", ""))


def grouping_unit(attrs: dict, df: pd.DataFrame | None = None) -> str:
    """Which unit groups a manifest's split: ``"patient"`` (a ``patient_id`` known for some
    images), ``"lesion"`` (lesion ids: HAM10000, the demo set), ``"image"`` (neither: an
    image id with its byte-identical copies), or, for several sources, each source's unit
    (``"lesion (ham10000), image (isic9)"``)."""
    if attrs.get("sources"):
        units = [f"{grouping_unit({'dataset': s['name']})} ({s['name']})" for s in attrs["sources"]]
        return ", ".join(units)
    meta = attrs.get("metadata") or {}
    if df is not None and "patient_id" in df and df["patient_id"].notna().any():
        return "patient"
    if meta.get("patients"):
        return "patient"
    if df is not None and "lesion_id" in df and df["lesion_id"].notna().any():
        return "lesion"
    if meta.get("lesions"):
        return "lesion"
    try:
        reader = dataset_spec(str(attrs.get("dataset"))).reader
    except ValueError:
        return "image"
    return "lesion" if reader in ("ham", "demo") else "image"


def grouping_sentences(attrs: dict, df: pd.DataFrame | None = None) -> list[str]:
    """What the split's grouping promises, and what it cannot (chapters 03/04, the card)."""
    unit = grouping_unit(attrs, df)
    meta = attrs.get("metadata") or {}
    if unit == "patient":
        n = df["patient_id"].dropna().nunique() if df is not None else meta.get("patients", "?")
        return [
            "The split is grouped by **patient** (`patient_id` of the metadata CSV, "
            f"{n} patients): every image of one patient, of every "
            "lesion, sits in one split; images without a patient id are grouped by lesion "
            "where known, else alone; byte-identical files and near-duplicates join groups."
        ]
    if unit == "lesion":
        return [
            "The split is grouped by **lesion** (`lesion_id`): all images of one lesion sit "
            "in one split, joined with byte-identical files and near-duplicates.",
            "There are no patient ids (HAM10000 has lesion ids only), so two lesions of one "
            "patient can sit in train and test: the split is free of lesion leakage, not of "
            "patient leakage (the same skin, age and camera can be seen in training). "
            "Datasets with a `patient_id` (a folder dataset's `metadata_csv`) are grouped "
            "by patient.",
        ]
    if unit == "image":
        return [
            "This dataset has no lesion or patient ids: a group is one image id, joined "
            "with its byte-identical copies and near-duplicates (chapter 03). Other views "
            "of one lesion that are not near-duplicates, and other lesions of one patient, "
            "can sit in train and test. A folder dataset can bring its ids in a "
            "`metadata_csv` (lesion_id, patient_id).",
        ]
    return [
        f"The split is grouped source by source: {unit}. Sources with lesion ids only "
        "keep a lesion's images together, not a patient's lesions; sources without ids "
        "group an image with its copies and near-duplicates."
    ]
