"""The dataset registry: which datasets exist, how each is laid out, their classes.

A leaf module: :mod:`.manifest` reads a dataset into one table, :mod:`.synthetic` writes
the demo set, :mod:`.download` fetches from Kaggle; all three look the dataset up here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from skinhelpers.files import PROJECT_ROOT

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


HAM_CLASS_NAMES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}


ISIC9_CLASSES = (
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
)

log = logging.getLogger(__name__)


ISIC9_DIRNAME = "Skin cancer ISIC The International Skin Imaging Collaboration"


HAM_REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")


HAM_OPTIONAL_COLUMNS = ("dx_type", "age", "sex", "localization")


#: what a ``folder`` dataset's ``metadata_csv`` may hold beside the image id
#: (:func:`skinhelpers.data.folder_options.apply_folder_options`)
FOLDER_METADATA_COLUMNS = ("lesion_id", "patient_id", "age", "sex", "localization", "dx_type")

#: other names of those columns (ISIC challenge CSVs among them), lower case
FOLDER_METADATA_ALIASES = {
    "image": "image_id",
    "image_name": "image_id",
    "isic_id": "image_id",
    "file": "image_id",
    "filename": "image_id",
    "lesion": "lesion_id",
    "patient": "patient_id",
    "age_approx": "age",
    "gender": "sex",
    "site": "localization",
    "body_site": "localization",
    "anatom_site_general": "localization",
    "anatom_site_general_challenge": "localization",
}


SPLIT_DIR_NAMES = {
    "train": "train",
    "test": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}


MANIFEST_COLUMNS = [
    "image_id",
    "relpath",
    "path",
    "label",
    "label_idx",
    "group",
    "lesion_id",
    "source_split",
    "age",
    "sex",
    "localization",
    "dx_type",
    "sha1",
    "mask_path",
]


class DatasetError(ValueError):
    """A dataset on disk is not in the expected layout or holds bad values."""


@dataclass(frozen=True)
class DatasetSpec:
    """One supported dataset: where it comes from and how it is laid out."""

    name: str
    title: str
    kaggle_slug: str | None
    layout: str
    classes: tuple[str, ...] | None  # None: taken from the class folders
    positive_class: str | None  # the class a clinician worries about most
    marker: str | None  # a path (relative to the root) that identifies the root
    reader: str  # how manifest.load_manifest reads it: 'ham', 'folders' or 'demo'
    #: class name -> clinical concept where the name alone does not say it (the taxonomy,
    #: :mod:`skinhelpers.data.taxonomy`, knows the usual names)
    concepts: tuple[tuple[str, str], ...] = ()


DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "raw"


def dataset_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset '{dataset}'; choose one of {sorted(DATASETS)}") from None


def concepts_of(dataset: str) -> dict[str, str]:
    """A dataset's own class -> clinical concept names (e.g. melanoma10k's ``malignant`` ->
    ``melanoma``), for :mod:`skinhelpers.data.taxonomy`."""
    return dict(dataset_spec(dataset).concepts)


def default_demo_dir(seed: int = 0) -> Path:
    return PROJECT_ROOT / "data" / "demo" / f"seed{seed}"


def describe(dataset: str | None = None) -> str:
    """A human-readable table of the registry (or of one dataset)."""
    specs = [dataset_spec(dataset)] if dataset else list(DATASETS.values())
    lines = []
    for s in specs:
        lines.append(f"{s.name:12s} {s.title}")
        lines.append(f"{'':12s} layout: {s.layout}")
        if s.kaggle_slug:
            lines.append(f"{'':12s} kaggle: {s.kaggle_slug}")
    return "\n".join(lines)


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec(
            "ham10000",
            "HAM10000 (7 classes, with lesion metadata)",
            "kmader/skin-cancer-mnist-ham10000",
            "HAM10000_metadata.csv + HAM10000_images_part_1/ + HAM10000_images_part_2/",
            HAM_CLASSES,
            "mel",
            "HAM10000_metadata.csv",
            "ham",
        ),
        DatasetSpec(
            "isic9",
            "ISIC skin cancer, 9 classes (folders only)",
            "nodoubttome/skin-cancer9-classesisic",
            f"{ISIC9_DIRNAME}/{{Train,Test}}/<class name>/*.jpg",
            ISIC9_CLASSES,
            "melanoma",
            ISIC9_DIRNAME,
            "folders",
        ),
        DatasetSpec(
            "melanoma10k",
            "Melanoma benign/malignant, 10,000 images",
            "hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images",
            "melanoma_cancer_dataset/{train,test}/{benign,malignant}/*.jpg",
            ("benign", "malignant"),
            "malignant",
            "melanoma_cancer_dataset",
            "folders",
            (("malignant", "melanoma"), ("benign", "benign lesion")),
        ),
        DatasetSpec(
            "folder",
            "Any class-per-folder tree (notebook 01: positive_class, metadata_csv)",
            None,
            "<class>/*.jpg or <split>/<class>/*.jpg (+ an optional metadata CSV: image_id and "
            "any of lesion_id, patient_id, age, sex, site)",
            None,
            None,
            None,
            "folders",
        ),
        DatasetSpec(
            "demo",
            "SYNTHETIC dermoscopy-like demo set (HAM10000 layout)",
            None,
            "generated offline by skinhelpers.data.synthetic",
            HAM_CLASSES,
            "mel",
            "HAM10000_metadata.csv",
            "demo",
        ),
    ]
}
