"""Dataset registry and loaders: every supported dataset becomes one manifest table.

A manifest is a :class:`pandas.DataFrame`, one row per image file, with columns

=============  ==============================================================
image_id       the dataset's id (HAM10000 ``image_id``, else the file stem)
relpath        path relative to the dataset root (unique per row)
path           absolute path, or ``None`` when the file is missing
label          class name;  ``label_idx``: its index in ``attrs["classes"]``
group          leakage group: lesion_id (HAM10000), joined with every byte-identical
               file, so that a grouped split never separates copies of one image
lesion_id      HAM10000 only (``None`` elsewhere)
source_split   the split the dataset ships with (``train``/``test``) or ``None``
age, sex, localization, dx_type   where the dataset has them
sha1           content hash of the file (``None`` when missing)
mask_path      lesion segmentation mask where the dataset has one
=============  ==============================================================

``df.attrs`` carries ``dataset``, ``classes`` (fixed order), ``root``, ``synthetic``,
``positive_class`` (melanoma / malignant) and ``load_issues`` (problems found while
walking the folders, reported by :mod:`skinhelpers.data.validate`).

**Your own data.** A ``folder`` dataset (any class-per-folder tree) names its positive
class and brings its metadata through :func:`apply_folder_options` (notebook 01's
``positive_class`` and ``metadata_csv``): a CSV with an image id per row and any of
``lesion_id``, ``patient_id``, ``age``, ``sex``, ``site``/``localization`` (and
``dx_type``). Then the split groups by patient where ``patient_id`` is known (all of one
patient's lesions stay in one split), else by lesion, else by image, and chapter 08 gets
its operating points, subgroups and metadata fusion. :func:`grouping_unit` and
:func:`grouping_sentences` say which unit groups a manifest's split, and what that cannot
promise (HAM10000 has lesion ids only: two lesions of one patient can sit in train and
test).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from skinhelpers.data.registry import (
    DEFAULT_DATA_DIR,
    FOLDER_METADATA_ALIASES,
    FOLDER_METADATA_COLUMNS,
    HAM_OPTIONAL_COLUMNS,
    HAM_REQUIRED_COLUMNS,
    IMAGE_EXTENSIONS,
    MANIFEST_COLUMNS,
    SPLIT_DIR_NAMES,
    DatasetError,
    DatasetSpec,
    dataset_spec,
    default_demo_dir,
)
from skinhelpers.data.synthetic import ensure_demo
from skinhelpers.files import PROJECT_ROOT, read_json, write_csv, write_json

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- helpers


def sha1_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _hash_column(paths: pd.Series) -> list[str | None]:
    out = []
    for p in paths:
        if p is None or (isinstance(p, float) and np.isnan(p)):
            out.append(None)
            continue
        try:
            out.append(sha1_of(p))
        except OSError:
            out.append(None)
    return out


def _base_id(stem: str) -> str:
    """``ISIC_0025509(1)`` and ``ISIC_0025509 (1)`` -> ``ISIC_0025509`` (Windows-style copies)."""
    return re.sub(r"\s*\(\d+\)$", "", stem)


def union_groups(keys: list[list[str]]) -> list[str]:
    """Union-find over rows: rows sharing any key end up in one group.

    ``keys[i]`` lists the keys of row ``i``; the group name is the smallest first key of
    the component, so it is deterministic and readable.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ks in keys:
        ks = [k for k in ks if k]
        for k in ks[1:]:
            ra, rb = find(ks[0]), find(k)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    # name each component by the smallest *first* key of its rows (a lesion id or a
    # file's base id), never by a hash
    name: dict[str, str] = {}
    for ks in keys:
        r = find(ks[0])
        name[r] = min(name.get(r, ks[0]), ks[0])
    return [name[find(ks[0])] for ks in keys]


def _finish(
    df: pd.DataFrame,
    spec: DatasetSpec,
    root: Path,
    classes: tuple[str, ...],
    load_issues: list[dict],
    synthetic: bool = False,
) -> pd.DataFrame:
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            df[col] = None
    # -1: a label no class knows (reported by validation as unknown_label, dropped)
    df["label_idx"] = df["label"].map({c: i for i, c in enumerate(classes)}).fillna(-1).astype(int)
    df["sha1"] = _hash_column(df["path"])
    # the leakage group: the dataset's own group key, joined with byte-identical files
    first = df["group"].astype(str).tolist()
    hashes = ["sha1:" + h if isinstance(h, str) else "" for h in df["sha1"]]
    df["group"] = union_groups([[a, b] for a, b in zip(first, hashes)])
    df = df[MANIFEST_COLUMNS].reset_index(drop=True)
    df.attrs.update(
        {
            "dataset": spec.name,
            "classes": list(classes),
            "root": str(root),
            "synthetic": synthetic,
            "positive_class": spec.positive_class if spec.positive_class in classes else None,
            "load_issues": load_issues,
        }
    )
    return df


def _index_images(root: Path, exclude_dirs: tuple[str, ...] = ()) -> dict[str, Path]:
    """Map file stem -> path for every image below ``root`` (first in sorted order wins)."""
    index: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                index.setdefault(p.stem, p)
    return index


# ----------------------------------------------------------------------------- loaders


def _load_ham_layout(spec: DatasetSpec, root: Path, synthetic: bool = False) -> pd.DataFrame:
    csv = root / "HAM10000_metadata.csv"
    try:
        meta = pd.read_csv(csv)
    except Exception as e:  # empty or unparsable file
        raise DatasetError(f"{csv}: cannot be read as CSV ({e})") from e
    missing = [c for c in HAM_REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise DatasetError(
            f"{csv}: missing required column(s) {missing}; found {list(meta.columns)}. "
            f"A HAM10000 metadata file needs {list(HAM_REQUIRED_COLUMNS)} "
            f"(and optionally {list(HAM_OPTIONAL_COLUMNS)})."
        )
    for c in ("lesion_id", "image_id", "dx"):
        bad = meta[c].isna() | (meta[c].astype(str).str.strip() == "")
        if bad.any():
            rows = (np.flatnonzero(bad.to_numpy()) + 2).tolist()[:10]
            raise DatasetError(f"{csv}: empty '{c}' on line(s) {rows}")
    meta["dx"] = meta["dx"].astype(str).str.strip()
    # a label no class knows (a typo in the metadata file) is a validation finding naming
    # its rows (skinhelpers.data.validate: unknown_label, dropped by default), not a stop
    unknown = sorted(set(meta["dx"]) - set(spec.classes))
    unknown_issue = None
    if unknown:
        counts = meta["dx"].value_counts()
        lines = (np.flatnonzero(meta["dx"].isin(unknown).to_numpy()) + 2).tolist()
        detail = ", ".join(f"'{u}' ({counts[u]} rows)" for u in unknown)
        unknown_issue = {
            "kind": "unknown_label",
            "count": int(meta["dx"].isin(unknown).sum()),
            "message": f"{csv.name}: unknown diagnosis label(s) {detail} on line(s) "
            f"{lines[:20]}{' ...' if len(lines) > 20 else ''}; expected one of "
            f"{list(spec.classes)}",
        }
    index = _index_images(root, exclude_dirs=("HAM10000_segmentations_lesion_200x150",))
    mask_dirs = [d for d in root.iterdir() if d.is_dir() and "segmentation" in d.name.lower()]
    masks: dict[str, Path] = {}
    for d in mask_dirs:
        for p in sorted(d.glob("*_segmentation.png")):
            masks.setdefault(p.stem.replace("_segmentation", ""), p)
    ids = meta["image_id"].astype(str).str.strip()
    paths = [index.get(i) for i in ids]
    df = pd.DataFrame(
        {
            "image_id": ids,
            "relpath": [
                str(p.relative_to(root)) if p else f"<missing>/{i}.jpg" for i, p in zip(ids, paths)
            ],
            "path": [str(p) if p else None for p in paths],
            "label": meta["dx"],
            "group": meta["lesion_id"].astype(str).str.strip(),
            "lesion_id": meta["lesion_id"].astype(str).str.strip(),
            "source_split": None,
            "mask_path": [str(masks[i]) if i in masks else None for i in ids],
        }
    )
    for c in HAM_OPTIONAL_COLUMNS:
        df[c] = meta[c].to_numpy() if c in meta.columns else None
    if "age" in meta.columns:
        df["age"] = pd.to_numeric(meta["age"], errors="coerce")
    load_issues = [unknown_issue] if unknown_issue else []
    n_missing = sum(p is None for p in paths)
    if n_missing:
        load_issues.append(
            {
                "kind": "missing_file",
                "count": n_missing,
                "message": f"{n_missing} image(s) listed in {csv.name} have no file below {root}",
            }
        )
    return _finish(df, spec, root, spec.classes, load_issues, synthetic=synthetic)


def _load_demo(spec: DatasetSpec, root: Path) -> pd.DataFrame:
    return _load_ham_layout(spec, root, synthetic=True)


def _walk_class_folders(spec: DatasetSpec, root: Path) -> pd.DataFrame:
    """Class-per-folder trees: ``root/<class>/*`` or ``root/<split>/<class>/*``."""
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise DatasetError(
            f"{root}: no class folders found (expected <class>/ or "
            "<split>/<class>/ subfolders with images)"
        )
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_DIR_NAMES]
    if split_dirs and len(split_dirs) == len(subdirs):
        pairs = [
            (SPLIT_DIR_NAMES[d.name.lower()], c)
            for d in split_dirs
            for c in sorted(x for x in d.iterdir() if x.is_dir())
        ]
    else:
        pairs = [(None, c) for c in subdirs]
    rows, load_issues = [], []
    skipped: list[str] = []
    for split, cdir in pairs:
        n = 0
        for p in sorted(cdir.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(str(p.relative_to(root)))
                continue
            n += 1
            rows.append(
                {
                    "image_id": _base_id(p.stem),
                    "relpath": str(p.relative_to(root)),
                    "path": str(p),
                    "label": cdir.name,
                    "source_split": split,
                    "group": "id:" + _base_id(p.stem),
                }
            )
        if n == 0:
            where = f"{split}/{cdir.name}" if split else cdir.name
            load_issues.append(
                {
                    "kind": "empty_class_folder",
                    "count": 1,
                    "message": f"class folder '{where}' holds no image",
                    "path": str(cdir),
                }
            )
    if skipped:
        load_issues.append(
            {
                "kind": "not_an_image",
                "count": len(skipped),
                "message": f"{len(skipped)} non-image file(s) skipped, e.g. {skipped[:3]}",
                "paths": skipped,
            }
        )
    folder_classes = sorted({c.name for _, c in pairs})
    if spec.classes is not None:
        unknown = sorted(set(folder_classes) - set(spec.classes))
        if unknown:
            raise DatasetError(
                f"{root}: unknown class folder(s) {unknown}; the {spec.name} "
                f"dataset has classes {list(spec.classes)}. Use dataset="
                "'folder' for an arbitrary class-per-folder tree."
            )
        classes = spec.classes
    else:
        classes = tuple(folder_classes)
    if not rows:
        raise DatasetError(f"{root}: no image files found in the class folders {folder_classes}")
    df = pd.DataFrame(rows)
    return _finish(df, spec, root, classes, load_issues)


READERS = {"ham": _load_ham_layout, "folders": _walk_class_folders, "demo": _load_demo}


def find_root(dataset: str, data_dir: str | os.PathLike) -> Path:
    """Locate the dataset's root below ``data_dir``.

    A relative ``data_dir`` is taken relative to the project root (as in the notebooks'
    parameters). ``data_dir`` may be the root itself, its parent (``../shared/data`` holds
    ``ham10000/``), or the folder Kaggle unzipped into; the root is found by the spec's
    marker file or folder, at most three levels down.
    """
    spec = dataset_spec(dataset)
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_absolute():
        data_dir = PROJECT_ROOT / data_dir
    data_dir = data_dir.resolve()
    if not data_dir.exists():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if spec.marker is None:
        return data_dir
    if data_dir.name == spec.marker and data_dir.is_dir():
        return data_dir  # given the marker folder itself (e.g. df.attrs["root"] of isic9)
    candidates = [data_dir]
    for _depth in range(3):
        nxt = []
        for c in candidates:
            marker = c / spec.marker
            if marker.exists():  # a marker folder is the root; a marker file sits in it
                return marker if marker.is_dir() else c
            nxt.extend(sorted(d for d in c.iterdir() if d.is_dir() and not d.name.startswith(".")))
        candidates = nxt
    raise DatasetError(
        f"no {spec.name} dataset found in {data_dir}: looked for '{spec.marker}' up to three "
        f"levels down. Expected layout: {spec.layout}"
        + (f" (Kaggle dataset {spec.kaggle_slug})." if spec.kaggle_slug else ".")
    )


def load_manifest(
    dataset: str, data_dir: str | os.PathLike | None = None, seed: int = 0
) -> pd.DataFrame:
    """Load ``dataset`` from ``data_dir`` into a manifest table (see module docstring).

    ``demo`` is generated on first use (deterministic from ``seed``) when ``data_dir``
    does not hold it yet. Nothing under ``data_dir`` is ever written to, except the demo
    generation into an empty or missing folder.
    """
    spec = dataset_spec(dataset)
    if data_dir is None:
        data_dir = DEFAULT_DATA_DIR / dataset if dataset != "demo" else default_demo_dir(seed)
    if dataset == "demo":
        ensure_demo(Path(data_dir), seed=seed)
    root = find_root(dataset, data_dir)
    return READERS[spec.reader](spec, root)


def has_shipped_split(df: pd.DataFrame) -> bool:
    """Whether the dataset ships its own train and test parts (``source_split``); never
    for a manifest of several sources, whose splits are all drawn."""
    if "source_split" not in df.columns:
        return False
    if "source" in df.columns and df["source"].nunique() > 1:
        return False  # several sources: every split is drawn (skinhelpers.split.grouped)
    return {"train", "test"} <= set(df["source_split"].dropna())


def images_per_class(df: pd.DataFrame) -> pd.Series:
    """Images per class, in the dataset's class order (zeros included)."""
    return df["label"].value_counts().reindex(df.attrs["classes"], fill_value=0)


# ----------------------------------------------------------------------------- your own data


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
        lambda i: _base_id(Path(i).stem if Path(i).suffix.lower() in IMAGE_EXTENSIONS else i)
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


# ----------------------------------------------------------------------------- persistence


def save_manifest(df: pd.DataFrame, run_dir: str | os.PathLike) -> Path:
    """Write ``manifest.csv`` and its attrs (``manifest.json``) into the run folder."""
    run_dir = Path(run_dir)
    write_csv(run_dir / "manifest.csv", df)
    write_json(run_dir / "manifest.json", dict(df.attrs))
    return run_dir / "manifest.csv"


def read_manifest(run_dir: str | os.PathLike) -> pd.DataFrame:
    run_dir = Path(run_dir)
    attrs = read_json(run_dir / "manifest.json")
    df = pd.read_csv(
        run_dir / "manifest.csv",
        dtype={"image_id": str, "group": str, "lesion_id": str, "patient_id": str, "sha1": str},
    )
    df = df.astype({c: object for c in ("path", "mask_path", "source_split")})
    df = df.where(df.notna(), None)
    df["label_idx"] = df["label_idx"].astype(int)
    if "age" in df:
        df["age"] = pd.to_numeric(df["age"], errors="coerce")
    df.attrs.update(attrs)
    return df


def subsample(
    df: pd.DataFrame, max_images: int, seed: int = 0, min_per_class: int = 8
) -> pd.DataFrame:
    """A class-stratified subsample of whole groups (lesions), about ``max_images`` rows.

    For smoke runs: every class keeps its share (and at least ``min_per_class`` images
    where it has them), whole lesions are kept or dropped, and the choice is the same for
    the same seed. ``max_images <= 0`` or ``>= len(df)`` returns ``df`` unchanged. A
    manifest of several sources is stratified by class and source.
    """
    if max_images is None or max_images <= 0 or max_images >= len(df):
        return df
    rng = np.random.default_rng(seed)
    key = df["label"].astype(str)
    if "source" in df.columns and df["source"].nunique() > 1:
        key = key + "|" + df["source"].astype(str)
    groups = (
        df.assign(_stratum=key)
        .groupby("group", sort=True)
        .agg(n=("label", "size"), stratum=("_stratum", lambda s: s.mode().iloc[0]))
    )
    frac = max_images / len(df)
    chosen = []
    for _stratum, g in groups.groupby("stratum", sort=True):
        total = int(g["n"].sum())
        want = min(total, max(min_per_class, int(round(total * frac))))
        order = g.index.to_numpy()[rng.permutation(len(g))]
        got = 0
        for grp in order:
            if got >= want:
                break
            chosen.append(grp)
            got += int(g.loc[grp, "n"])
    out = df[df["group"].isin(set(chosen))].reset_index(drop=True)
    out.attrs = {
        **df.attrs,
        "subsample": {
            "max_images": int(max_images),
            "seed": int(seed),
            "rows_before": len(df),
            "rows_after": len(out),
        },
    }
    return out
