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

A ``folder`` dataset's own positive class and metadata CSV, and the unit that groups a
manifest's split, are in :mod:`skinhelpers.data.folder_options`.
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


def base_id(stem: str) -> str:
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
                    "image_id": base_id(p.stem),
                    "relpath": str(p.relative_to(root)),
                    "path": str(p),
                    "label": cdir.name,
                    "source_split": split,
                    "group": "id:" + base_id(p.stem),
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


def without_attrs(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without its ``attrs`` (a shallow copy: same columns, same index), for loops
    over its groups or rows. pandas deep-copies ``attrs`` into every group and row it hands
    out, and a manifest carries its classes and sources there: 15 of the 21 s that
    validating HAM10000 + ISIC 9-class took (12,177 rows) were those copies."""
    out = df.copy(deep=False)
    out.attrs = {}
    return out


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
        without_attrs(df)
        .assign(_stratum=key)
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
