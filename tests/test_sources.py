"""Several datasets in one run (skinhelpers.data.sources): on the real HAM10000 and ISIC
9-class sets, and a binary benign/malignant folder tree built here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from skinhelpers.data import manifest, sources
from skinhelpers.data.validate import validate
from skinhelpers.split import checks, grouped


@pytest.fixture(scope="module")
def joined(shared_data):
    return sources.load_dataset("ham10000+isic9", shared_data, show_progress=False)


@pytest.fixture(scope="module")
def joined_report(joined):
    return validate(joined, show_progress=False)


@pytest.fixture(scope="module")
def joined_clean(joined, joined_report):
    return joined_report.apply(joined, verbose=False)


@pytest.fixture(scope="module")
def ham_alone(ham_manifest):
    """HAM10000 validated on its own, as a one-source run does it."""
    return validate(ham_manifest, show_progress=False).apply(ham_manifest, verbose=False)


def test_requests_are_checked_before_reading_anything(tmp_path):
    with pytest.raises(ValueError, match="isic8"):
        sources.parse_datasets("ham10000+isic8")
    with pytest.raises(ValueError, match="named twice"):
        sources.parse_datasets("ham10000+ham10000")
    # a label_space class that no source has, by name or by clinical meaning
    with pytest.raises(ValueError, match="'merkel cell carcinoma'"):
        sources.check_request("ham10000+isic9", ["mel", "merkel cell carcinoma"])
    with pytest.raises(ValueError, match="label_space"):
        sources.check_request("ham10000+isic9", "binary")
    with pytest.raises(ValueError, match="melanoma10k"):
        sources.check_request("ham10000+isic9", data_dirs={"melanoma10k": str(tmp_path)})
    assert sources.check_request("ham10000+isic9", ["mel", "nevus"]) == ["ham10000", "isic9"]
    assert sources.parse_label_space(" mel, nevus ") == ["mel", "nevus"]


def test_joined_manifest_has_both_sources_unique_paths_and_groups(joined, ham_manifest):
    assert sources.source_names(joined) == ["ham10000", "isic9"]
    assert joined["relpath"].is_unique
    assert joined.attrs["classes"] == ham_manifest.attrs["classes"]
    assert joined.attrs["positive_class"] == "mel"
    # group ids never collide across sources
    by_group = joined.groupby("group")["source"].nunique()
    crossing = by_group[by_group > 1].index
    # only a copy, joined to its twin's lesion on purpose, makes a group span two sources
    with_copy = set(joined.loc[joined["copy_of"].notna(), "group"])
    assert len(crossing) and set(crossing) <= with_copy
    # the source's own label is kept beside the harmonised one
    isic = joined[joined["source"] == "isic9"]
    assert set(isic.loc[isic["source_label"] == "seborrheic keratosis", "label"]) == {"bkl"}
    assert set(isic.loc[isic["source_label"] == "nevus", "label"]) == {"nv"}
    # invasive SCC has no HAM10000 class: dropped and counted
    info = {s["name"]: s for s in joined.attrs["sources"]}
    n_scc = len(list(Path(info["isic9"]["root"]).glob("*/squamous cell carcinoma/*.jpg")))
    assert info["isic9"]["dropped_by_class"] == {"squamous cell carcinoma": n_scc}


def test_copies_across_sources_are_found_by_content(joined, ham_manifest):
    """Every ISIC 9-class image that carries a HAM10000 image id is a resized HAM10000
    image: the content search (not the names) must find each of them."""
    isic = joined[joined["source"] == "isic9"]
    ham_ids = set(ham_manifest["image_id"])
    named = set(isic.loc[isic["image_id"].isin(ham_ids), "relpath"])
    found = set(isic.loc[isic["copy_of"].notna(), "relpath"])
    assert named and named <= found
    # and the twin kept is the HAM10000 image (it has the lesion id and metadata)
    twins = joined.set_index("relpath").loc[sorted(found & named), "copy_of"]
    assert twins.str.startswith("ham10000/").all()


def test_validation_keeps_one_copy_of_each_image(
    joined, joined_report, joined_clean, ham_manifest, ham_alone
):
    rep = joined_report
    kinds = set(rep.findings["kind"])
    assert {"cross_source_copy", "cross_source_conflict"} <= kinds
    # after validation no HAM10000 image is there twice
    isic = joined_clean[joined_clean["source"] == "isic9"]
    assert not isic["image_id"].isin(set(ham_manifest["image_id"])).any()
    assert joined_clean["copy_of"].isna().all()
    # HAM10000 loses exactly what it loses alone (its own two byte-identical files)
    assert (joined_clean["source"] == "ham10000").sum() == len(ham_alone)
    # "keep" keeps both copies, in one group
    kept = rep.apply(
        joined,
        {"cross_source_copy": "keep", "cross_source_conflict": "keep", "label_conflict": "keep"},
        verbose=False,
    )
    twins = kept[kept["copy_of"].notna()]
    group_of = dict(zip(kept["relpath"], kept["group"]))
    assert len(twins) and all(
        group_of[c] == g for c, g in zip(twins["copy_of"], twins["group"]) if c in group_of
    )


def test_split_by_source_keeps_the_first_sources_own_split(joined_clean, ham_alone):
    s = grouped.grouped_split(joined_clean, 0.15, 0.15, seed=3)
    checks.check_split(s)
    for src in ("ham10000", "isic9"):  # every source in every split
        assert set(s.loc[s["relpath"].str.startswith(src + "/"), "split"]) == {
            "train",
            "val",
            "test",
        }
    a = grouped.grouped_split(ham_alone, 0.15, 0.15, seed=3)
    joined_split = dict(zip(s["relpath"], s["split"]))
    assert all(joined_split["ham10000/" + r] == sp for r, sp in zip(a["relpath"], a["split"]))


def test_holdout_source_puts_one_whole_source_in_test(joined_clean):
    s = grouped.grouped_split(joined_clean, 0.15, 0.15, seed=0, holdout_source="isic9")
    checked = checks.check_split(s)
    is_isic = s["relpath"].str.startswith("isic9/")
    assert (s.loc[is_isic, "split"] == "test").all()
    assert (s.loc[~is_isic, "split"] != "test").all()
    assert set(s.loc[~is_isic, "split"]) == {"train", "val"}
    assert any("absent from the held-out source" in w for w in checked["warnings"])
    with pytest.raises(ValueError, match="'isic8'"):
        grouped.grouped_split(joined_clean, holdout_source="isic8")


def _binary_tree(root, isic9_manifest, n=12):
    """A melanoma10k-shaped tree (melanoma_cancer_dataset/{train,test}/{benign,malignant})
    from ISIC 9-class images that are not in HAM10000 (real dermoscopy, not copies)."""
    ham_like = isic9_manifest["image_id"].str.match(r"ISIC_00(2[4-9]|3[0-4])\d{3}$")
    pool = isic9_manifest[~ham_like]
    mel = pool[pool["label"] == "melanoma"].head(n)
    ben = pool[pool["label"] == "nevus"].head(n)
    for i, (_, r) in enumerate(pd.concat([mel, ben]).iterrows()):
        cls = "malignant" if r["label"] == "melanoma" else "benign"
        split = "test" if i % 4 == 0 else "train"
        d = root / "melanoma_cancer_dataset" / split / cls
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(r["path"], d / f"{cls}_{i}.jpg")
    return root


def test_melanoma_label_space_joins_a_binary_folder_set(tmp_path, shared_data, isic9_manifest):
    tree = _binary_tree(tmp_path / "mel10k", isic9_manifest)
    df = sources.load_dataset(
        "ham10000+melanoma10k",
        shared_data,
        data_dirs={"melanoma10k": str(tree)},
        label_space="melanoma",
        show_progress=False,
    )
    assert df.attrs["classes"] == ["other", "melanoma"]
    assert df.attrs["positive_class"] == "melanoma"
    ham = df[df["source"] == "ham10000"]
    assert ((ham["label"] == "melanoma") == (ham["source_label"] == "mel")).all()
    m10 = df[df["source"] == "melanoma10k"]
    assert len(m10) == 24
    assert ((m10["label"] == "melanoma") == (m10["source_label"] == "malignant")).all()
    assert m10["copy_of"].isna().all()  # not HAM10000 images
    # without the melanoma label space the binary set brings melanomas only
    first = sources.load_dataset(
        "ham10000+melanoma10k",
        shared_data,
        data_dirs={"melanoma10k": str(tree)},
        show_progress=False,
    )
    info = {s["name"]: s for s in first.attrs["sources"]}["melanoma10k"]
    assert info["labels_kept"] == ["mel"] and info["dropped_by_class"] == {"benign": 12}


def test_one_dataset_loads_as_before(shared_data, ham_manifest):
    df = sources.load_dataset("ham10000", shared_data, show_progress=False)
    pd.testing.assert_frame_equal(df, ham_manifest)
    assert "source" not in df.columns
    mel = sources.load_dataset("ham10000", shared_data, label_space="melanoma", show_progress=False)
    assert mel.attrs["classes"] == ["other", "melanoma"]
    assert (mel["label"] == "melanoma").sum() == (ham_manifest["label"] == "mel").sum()


def test_manifest_of_several_sources_round_trips(joined_clean, tmp_path):
    manifest.save_manifest(joined_clean, tmp_path)
    back = manifest.read_manifest(tmp_path)
    assert list(back["source"].unique()) == ["ham10000", "isic9"]
    assert back.attrs["sources"][1]["name"] == "isic9"
    again = sources.load_like(back.attrs)
    assert len(again) == len(sources.load_like(joined_clean.attrs))


def test_run_all_refuses_a_bad_source_or_label_space_before_running(tmp_path):
    from skinhelpers.run import pipeline

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    marker = tmp_path / "ran.txt"
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'dataset = "demo"\ndata_dir = ""\nrun_dir = ""\nlabel_space = "first"'
    )
    params.metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [params, nbformat.v4.new_code_cell(f"open({str(marker)!r}, 'w').write('x')")]
    nbformat.write(nb, nbs / "01_a.ipynb")
    for dataset, extra, needle in (
        ("ham10000+isic8", {}, "'isic8'"),
        ("ham10000+isic9", {"label_space": "mel,merkel cell carcinoma"}, "merkel"),
    ):
        with pytest.raises(SystemExit, match=needle):
            pipeline.run(
                dataset,
                None,
                "smoke",
                str(tmp_path / "r"),
                extra=extra,
                html=False,
                notebook_dir=nbs,
            )
    assert not marker.exists() and not (tmp_path / "r" / "run.json").exists()
