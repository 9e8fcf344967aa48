"""Your own data: a ``folder`` dataset (real HAM10000 images copied into class folders)
with a positive class and a metadata CSV (lesion and patient ids, age, sex, site) is
grouped by patient, and chapter 08 gives it operating points, subgroups and metadata
fusion like HAM10000."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from helpers_run import run_notebook

from skinhelpers.data import folder_options, manifest
from skinhelpers.data.registry import DatasetError
from skinhelpers.files import PROJECT_ROOT
from skinhelpers.split import grouped

pytestmark = pytest.mark.realdata
NB = PROJECT_ROOT / "notebooks"


@pytest.fixture(scope="module")
def folder_tree(ham_dir, tmp_path_factory):
    """90 HAM10000 images of mel, nv and bkl (12 from lesions with two images, 18 single per
    class) in ``<class>/<image_id>.jpg``, and ``metadata.csv`` in ISIC's column names
    (``image`` with the extension, ``site``), with made-up patients of two lesions each."""
    out = tmp_path_factory.mktemp("own") / "tree"
    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    meta = meta[meta["dx"].isin(["mel", "nv", "bkl"])]
    parts = []
    for _dx, g in meta.groupby("dx"):
        multi = g["lesion_id"].duplicated(keep=False)
        parts += [
            g[multi].sort_values(["lesion_id", "image_id"]).head(12),
            g[~multi].sort_values("image_id").head(18),
        ]
    sel = pd.concat(parts).reset_index(drop=True)
    for r in sel.itertuples():
        src = next(
            ham_dir / d / f"{r.image_id}.jpg"
            for d in ("HAM10000_images_part_1", "HAM10000_images_part_2")
            if (ham_dir / d / f"{r.image_id}.jpg").exists()
        )
        (out / r.dx).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / r.dx / f"{r.image_id}.jpg")
    lesions = sorted(sel["lesion_id"].unique())
    patient = {les: f"P{i // 2:03d}" for i, les in enumerate(lesions)}
    pd.DataFrame(
        {
            "image": sel["image_id"] + ".jpg",
            "lesion_id": sel["lesion_id"],
            "patient_id": sel["lesion_id"].map(patient),
            "age": sel["age"],
            "sex": sel["sex"],
            "site": sel["localization"],
        }
    ).to_csv(out / "metadata.csv", index=False)
    return out, sel, patient


def test_folder_options_group_by_patient(folder_tree):
    tree, sel, patient = folder_tree
    plain = manifest.load_manifest("folder", tree)
    assert plain.attrs["positive_class"] is None and plain["lesion_id"].isna().all()
    assert folder_options.grouping_unit(plain.attrs, plain) == "image"
    df = folder_options.apply_folder_options(plain, "mel", "metadata.csv")  # in the dataset folder
    assert df.attrs["positive_class"] == "mel"
    assert df.attrs["metadata"]["images_matched"] == len(sel) == len(df)
    assert df.attrs["metadata"]["patients"] == len(set(patient.values()))
    truth = sel.set_index("image_id")
    assert (df["lesion_id"] == df["image_id"].map(truth["lesion_id"])).all()
    assert (df["localization"] == df["image_id"].map(truth["localization"])).all()
    assert df["age"].dtype.kind == "f" and set(df["sex"].dropna()) <= {"male", "female"}
    # one group per patient: all of a patient's images, of both lesions, together
    assert (df.groupby("patient_id")["group"].nunique() == 1).all()
    assert df["group"].nunique() == df["patient_id"].nunique()
    assert folder_options.grouping_unit(df.attrs, df) == "patient"
    assert "grouped by **patient**" in folder_options.grouping_sentences(df.attrs, df)[0]
    split = grouped.grouped_split(df, 0.2, 0.3, seed=0).merge(df[["relpath", "patient_id"]])
    assert (split.groupby("patient_id")["split"].nunique() == 1).all()
    # the raw folder read again the way chapter 01 read it (notebook 03)
    again = folder_options.reapply_folder_options(plain, df.attrs)
    assert again["group"].tolist() == df["group"].tolist()


def test_folder_options_refuse_what_they_cannot_use(folder_tree, tmp_path, ham_manifest):
    tree, _, _ = folder_tree
    plain = manifest.load_manifest("folder", tree)
    with pytest.raises(DatasetError, match=r"positive_class 'melanoma' is not a class.*'mel'"):
        folder_options.apply_folder_options(plain, "melanoma")
    csv = pd.read_csv(tree / "metadata.csv")
    csv.rename(columns={"image": "name"}).to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(DatasetError, match="no image id column"):
        folder_options.apply_folder_options(plain, "", tmp_path / "noid.csv")
    pd.concat([csv, csv.head(2)]).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(DatasetError, match="more than one row"):
        folder_options.apply_folder_options(plain, "", tmp_path / "twice.csv")
    # rows for only part of the images: the rest keep their own group, and are reported
    csv.head(30).to_csv(tmp_path / "part.csv", index=False)
    part = folder_options.apply_folder_options(plain, "", tmp_path / "part.csv")
    assert part.attrs["metadata"]["images_without_row"] == 60
    assert any(i["kind"] == "metadata_missing" for i in part.attrs["load_issues"])
    assert part.loc[part["patient_id"].isna(), "group"].str.startswith("id:").all()
    # HAM10000 names its own positive class and metadata
    assert folder_options.apply_folder_options(ham_manifest, "mel") is ham_manifest
    with pytest.raises(DatasetError, match="options of the 'folder' dataset"):
        folder_options.apply_folder_options(ham_manifest, "", tree / "metadata.csv")
    assert folder_options.grouping_unit(ham_manifest.attrs, ham_manifest) == "lesion"
    assert "two lesions of one patient" in " ".join(
        folder_options.grouping_sentences(ham_manifest.attrs)
    )


@pytest.mark.slow  # notebooks 01 and 08 (~70 s on 2 cores)
def test_folder_dataset_gets_operating_points_and_subgroups(folder_tree, tmp_path, monkeypatch):
    from test_notebook_08 import _execute, prepare_run

    from skinhelpers.share.model_card import model_card_text

    monkeypatch.setenv("SKINHELPERS_PROGRESS", "plain")
    tree, sel, _ = folder_tree
    run = tmp_path / "own"
    run_notebook(
        NB / "01_eda.ipynb",
        tmp_path / "01_eda.ipynb",
        {
            "dataset": "folder",
            "data_dir": str(tree),
            "run_dir": str(run),
            "positive_class": "mel",
            "metadata_csv": "metadata.csv",
        },
    )
    df = manifest.read_manifest(run)
    assert df.attrs["positive_class"] == "mel" and len(df) == len(sel)
    assert df["patient_id"].notna().all() and df.attrs["folder_options"]["positive_class"] == "mel"
    prepare_run(run, df)  # what 02, 04 and 07 leave (a short-trained checkpoint)
    _execute(
        run,
        "folder",
        tree,
        n_bootstrap=40,
        tta_views=1,
        gradcam_per_class=1,
        cam_max_images=8,
        worst_errors_shown=4,
    )
    m = json.loads((run / "metrics.json").read_text())
    pc = m["positive_class"]
    assert pc and len(pc["operating_points"]) >= 2  # the melanoma section, thresholds on val
    sub = pd.read_csv(run / "subgroups.csv")
    assert {"all", "sex", "age_band", "localization"} <= set(sub["attribute"])
    assert {"melanoma_auc", "sensitivity", "specificity"} <= set(sub["metric"])
    assert m["levers"]["metadata_columns"] == ["age", "sex", "localization"]
    card = model_card_text(run)
    assert "| split grouped by | patient |" in card and "grouped by **patient**" in card
