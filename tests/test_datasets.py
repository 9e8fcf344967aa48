"""The data layer on the real data and on small bad inputs."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers_images import write_jpg

from skinhelpers.data import manifest as datasets
from skinhelpers.data import registry
from skinhelpers.data.manifest import load_manifest
from skinhelpers.data.registry import DatasetError
from skinhelpers.data.validate import validate

HAM_COUNTS = {
    "nv": 6705,
    "mel": 1113,
    "bkl": 1099,
    "bcc": 514,
    "akiec": 327,
    "vasc": 142,
    "df": 115,
}


# ----------------------------------------------------------------------------- real data


def test_ham10000_loads_with_known_counts(ham_manifest):
    df = ham_manifest
    assert len(df) == 10015
    assert df["lesion_id"].nunique() == 7470
    assert datasets.images_per_class(df).to_dict() == {
        k: HAM_COUNTS[k] for k in df.attrs["classes"]
    }
    assert df.attrs["classes"] == list(registry.HAM_CLASSES)
    assert df["path"].notna().all() and df["relpath"].is_unique
    assert df["mask_path"].notna().all()
    assert df["age"].isna().sum() == 57
    assert (df["sex"] == "unknown").sum() == 57
    # groups are lesions (the identical pairs happen to share a lesion id)
    assert df["group"].nunique() == 7470
    assert (df["label_idx"] == df["label"].map(df.attrs["classes"].index)).all()
    assert df.attrs["positive_class"] == "mel"


def test_ham10000_byte_identical_pairs_share_a_hash(ham_manifest):
    dup = ham_manifest[ham_manifest["sha1"].duplicated(keep=False)]
    pairs = sorted(tuple(sorted(g["image_id"])) for _, g in dup.groupby("sha1"))
    assert pairs == [("ISIC_0024366", "ISIC_0029861"), ("ISIC_0024777", "ISIC_0029938")]


def test_find_root_accepts_the_parent_folder(shared_data, ham_dir):
    assert datasets.find_root("ham10000", shared_data) == ham_dir.resolve()
    root9 = datasets.find_root("isic9", shared_data)
    assert root9.name == registry.ISIC9_DIRNAME
    assert {p.name for p in root9.iterdir()} == {"Train", "Test"}


def test_isic9_loads_folders_splits_and_groups(isic9_manifest):
    df = isic9_manifest
    assert len(df) == 2359
    assert df.attrs["classes"] == list(registry.ISIC9_CLASSES)
    assert df["source_split"].value_counts().to_dict() == {"train": 2241, "test": 118}
    assert df["relpath"].is_unique
    # "(1)" copies get their base id, and byte-identical files always share a group
    assert not df["image_id"].str.contains(r"\(").any()
    for _, g in df.groupby("sha1"):
        assert g["group"].nunique() == 1
    assert df.attrs["positive_class"] == "melanoma"


def test_manifest_round_trip(tmp_path, demo_manifest):
    datasets.save_manifest(demo_manifest, tmp_path)
    back = datasets.read_manifest(tmp_path)
    assert back.attrs["classes"] == demo_manifest.attrs["classes"]
    assert back.attrs["synthetic"] is True
    pd.testing.assert_series_equal(back["relpath"], demo_manifest["relpath"])
    pd.testing.assert_series_equal(back["label_idx"], demo_manifest["label_idx"])
    assert back["source_split"].isna().all() and back["path"].notna().all()


def test_subsample_is_grouped_stratified_and_deterministic(ham_manifest):
    a = datasets.subsample(ham_manifest, 600, seed=1)
    b = datasets.subsample(ham_manifest, 600, seed=1)
    c = datasets.subsample(ham_manifest, 600, seed=2)
    assert a["relpath"].tolist() == b["relpath"].tolist()
    assert a["relpath"].tolist() != c["relpath"].tolist()
    assert 450 < len(a) < 800
    assert set(a["label"]) == set(HAM_COUNTS)
    # whole lesions only
    full = ham_manifest.groupby("group").size()
    sizes = a.groupby("group").size()
    assert (sizes == full.reindex(sizes.index)).all()
    assert datasets.subsample(ham_manifest, 0) is ham_manifest


# ----------------------------------------------------------------------------- bad input


def _ham_tree(root, rows, make_files=True):
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    if make_files:
        for i, r in enumerate(rows):
            write_jpg(root / "HAM10000_images_part_1" / f"{r['image_id']}.jpg", seed=i)
    return root


ROWS = [
    {
        "lesion_id": "L1",
        "image_id": "IMG_1",
        "dx": "nv",
        "dx_type": "histo",
        "age": 40,
        "sex": "male",
        "localization": "back",
    },
    {
        "lesion_id": "L1",
        "image_id": "IMG_2",
        "dx": "nv",
        "dx_type": "histo",
        "age": 40,
        "sex": "male",
        "localization": "back",
    },
    {
        "lesion_id": "L2",
        "image_id": "IMG_3",
        "dx": "mel",
        "dx_type": "histo",
        "age": 70,
        "sex": "female",
        "localization": "face",
    },
]


def test_ham_missing_columns_is_a_clear_error(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "lesion_id"} for r in ROWS]
    root = _ham_tree(tmp_path / "ham", rows)
    with pytest.raises(DatasetError, match=r"missing required column.*lesion_id"):
        load_manifest("ham10000", root)


def test_ham_unknown_label_is_a_finding_naming_the_rows(tmp_path):
    """A typo in the metadata file stops nothing: validation names the row and drops it
    by default, or stops with the row named when asked."""
    rows = ROWS + [{**ROWS[0], "image_id": "IMG_4", "dx": "melanoma"}]
    root = _ham_tree(tmp_path / "ham", rows)
    df = load_manifest("ham10000", root)
    issue = [li for li in df.attrs["load_issues"] if li["kind"] == "unknown_label"]
    assert issue and "'melanoma' (1 rows)" in issue[0]["message"]
    assert f"line(s) [{len(rows) + 1}]" in issue[0]["message"]  # the CSV line of the row
    rep = validate(df, show_progress=False)
    f = rep.findings[rep.findings["kind"] == "unknown_label"]
    assert f["image_id"].tolist() == ["IMG_4"]
    clean = rep.apply(df, verbose=False)
    assert "IMG_4" not in set(clean["image_id"]) and len(clean) == len(df) - 1
    assert (clean["label_idx"] >= 0).all()
    with pytest.raises(ValueError, match="IMG_4"):
        rep.apply(df, {"unknown_label": "error"}, verbose=False)


def test_ham_empty_id_names_the_line(tmp_path):
    root = _ham_tree(tmp_path / "ham", ROWS)
    rows = ROWS + [{**ROWS[0], "image_id": ""}]
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DatasetError, match=r"empty 'image_id' on line\(s\) \[5\]"):
        load_manifest("ham10000", root)


def test_ham_missing_file_is_kept_and_reported(tmp_path):
    root = _ham_tree(tmp_path / "ham", ROWS)
    (root / "HAM10000_images_part_1" / "IMG_2.jpg").unlink()
    df = load_manifest("ham10000", root)
    assert len(df) == 3
    assert df.loc[df.image_id == "IMG_2", "path"].isna().all()
    assert df.attrs["load_issues"][0]["kind"] == "missing_file"


def test_ham_without_optional_columns_loads(tmp_path):
    rows = [{k: r[k] for k in ("lesion_id", "image_id", "dx")} for r in ROWS]
    df = load_manifest("ham10000", _ham_tree(tmp_path / "ham", rows))
    assert df["age"].isna().all() and df["sex"].isna().all()


def test_missing_dataset_folder_says_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv"):
        load_manifest("ham10000", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_manifest("ham10000", tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown dataset 'ham'"):
        load_manifest("ham", tmp_path)


def test_melanoma10k_layout(tmp_path):
    base = tmp_path / "dl" / "melanoma_cancer_dataset"
    for split in ("train", "test"):
        for cls in ("benign", "malignant"):
            for i in range(3):
                write_jpg(base / split / cls / f"melanoma_{split}_{cls}_{i}.jpg", seed=i)
    (base / "train" / "benign" / "notes.txt").write_text("not an image")
    df = load_manifest("melanoma10k", tmp_path / "dl")
    assert len(df) == 12
    assert df.attrs["classes"] == ["benign", "malignant"]
    assert df.attrs["positive_class"] == "malignant"
    assert df["source_split"].value_counts().to_dict() == {"test": 6, "train": 6}
    kinds = {li["kind"] for li in df.attrs["load_issues"]}
    assert kinds == {"not_an_image"}


def test_folder_dataset_reports_empty_class_folder(tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            write_jpg(tmp_path / cls / f"{cls}{i}.png", seed=i)
    (tmp_path / "c").mkdir()
    df = load_manifest("folder", tmp_path)
    assert df.attrs["classes"] == ["a", "b", "c"]
    issues = df.attrs["load_issues"]
    assert [i["kind"] for i in issues] == ["empty_class_folder"]
    assert "'c'" in issues[0]["message"]


def test_isic9_unknown_class_folder_is_an_error(tmp_path):
    base = tmp_path / registry.ISIC9_DIRNAME / "Train"
    write_jpg(base / "melanoma" / "ISIC_1.jpg")
    write_jpg(base / "freckle" / "ISIC_2.jpg")
    with pytest.raises(DatasetError, match=r"unknown class folder.*freckle"):
        load_manifest("isic9", tmp_path)


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_manifest("folder", tmp_path)


def test_raw_data_is_never_written(tmp_path, ham_dir):
    """Loading + validating the real data leaves its files untouched."""
    before = {p: p.stat().st_mtime_ns for p in ham_dir.rglob("*") if p.is_file()}
    from skinhelpers.data.validate import validate

    df = load_manifest("ham10000", ham_dir)
    validate(df.sample(200, random_state=0), show_progress=False)
    after = {p: p.stat().st_mtime_ns for p in ham_dir.rglob("*") if p.is_file()}
    assert before == after


def test_kaggle_ham_zip_with_lowercase_duplicate_folders(tmp_path):
    """The Kaggle zip ships each image twice (HAM10000_images_part_1 and
    ham10000_images_part_1): one row per metadata line, the first folder wins."""
    root = _ham_tree(tmp_path / "ham", ROWS)
    for r in ROWS:
        src = root / "HAM10000_images_part_1" / f"{r['image_id']}.jpg"
        dst = root / "ham10000_images_part_1" / src.name
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(src.read_bytes())
    df = load_manifest("ham10000", tmp_path)
    assert len(df) == 3 and df["relpath"].str.startswith("HAM10000_images_part_1/").all()


def test_the_root_itself_is_accepted(isic9_manifest, ham_manifest):
    again = load_manifest("isic9", isic9_manifest.attrs["root"])
    assert len(again) == len(isic9_manifest)
    assert len(load_manifest("ham10000", ham_manifest.attrs["root"])) == 10015


def test_without_attrs_is_the_same_frame_without_its_attrs():
    """The loops over a manifest's groups use it: pandas deep-copies attrs into each."""
    import pandas as pd

    from skinhelpers.data.manifest import without_attrs

    df = pd.DataFrame({"a": [1, 2]}, index=[5, 9])
    df.attrs["sources"] = [{"name": "x", "classes": list("abc")}]
    out = without_attrs(df)
    assert out.attrs == {} and df.attrs["sources"][0]["name"] == "x"
    pd.testing.assert_frame_equal(out, df, check_flags=False)
    assert list(out.index) == [5, 9]
    assert out.groupby("a").get_group(1).attrs == {}
