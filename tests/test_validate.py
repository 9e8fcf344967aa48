"""Validation: every kind of bad input is found, named, and handled as chosen."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_images import contents_under_several_labels, write_jpg, write_mode, write_truncated
from PIL import Image

from skinhelpers.data.imaging import ImageReadError, read_rgb
from skinhelpers.data.manifest import load_manifest
from skinhelpers.data.validate import validate

# ----------------------------------------------------------------------------- real data


def test_ham10000_validation_finds_exactly_the_identical_pairs(ham_manifest):
    rep = validate(ham_manifest, show_progress=False)
    c = rep.counts()
    assert c["byte_identical"] == 4 and rep.counts("case")["byte_identical"] == 2
    assert sum(v for k, v in c.items() if k != "byte_identical") == 0
    dropped = set(rep.findings.loc[rep.findings["drop"], "image_id"])
    assert len(dropped) == 2
    assert dropped <= {"ISIC_0024366", "ISIC_0029861", "ISIC_0024777", "ISIC_0029938"}
    clean = rep.apply(ham_manifest, verbose=False)
    assert len(clean) == 10013 and clean["sha1"].is_unique
    info = rep.image_info
    assert info["ok"].all() and set(info["mode"]) == {"RGB"}
    assert set(zip(info["width"], info["height"])) == {(200, 150)}


def test_isic9_conflicts_and_overlaps_are_counted(isic9_manifest, isic9_dir):
    rep = validate(isic9_manifest, show_progress=False)
    cases, files = rep.counts("case"), rep.counts()
    # images filed under two class folders (byte-identical, conflicting labels), counted
    # from the files themselves: 155 contents, 310 files
    conflicts = contents_under_several_labels(isic9_dir)
    n_files = sum(len(v) for v in conflicts.values())
    assert (cases["label_conflict"], files["label_conflict"]) == (len(conflicts), n_files)
    assert (len(conflicts), n_files) == (155, 310)  # the data README's count
    # 18 ids shipped in both Train and Test
    assert (cases["split_overlap"], files["split_overlap"]) == (18, 36)
    # 157 ids on two rows: the 155 conflicts and the two "(1)" copies
    assert cases["duplicate_id"] == 157
    # same-label identical files: the two "(1)" copies and two pairs under different ids
    assert (cases["byte_identical"], files["byte_identical"]) == (4, 8)
    copies = rep.findings[
        (rep.findings.kind == "byte_identical") & rep.findings.relpath.str.contains(r"\(1\)")
    ]
    assert len(copies) == 2
    clean = rep.apply(isic9_manifest, verbose=False)
    assert len(clean) == 2359 - 310 - 4
    assert clean["sha1"].is_unique and clean["image_id"].is_unique
    # no image left in both shipped splits
    both = clean.groupby("group")["source_split"].nunique()
    assert (both == 1).all()
    kept = rep.apply(isic9_manifest, {"label_conflict": "keep"}, verbose=False)
    # keeping conflicts still removes the train copies of the 18 overlaps (test kept)
    assert len(kept) == 2359 - 18 - 4 - (157 - 18 - 2)  # duplicate ids deduped too
    assert (kept.groupby("group")["source_split"].nunique() == 1).all()


# ----------------------------------------------------------------------------- bad files


@pytest.fixture()
def messy(tmp_path):
    """A class-per-folder tree with one of every problem."""
    root = tmp_path / "messy"
    write_jpg(root / "a" / "good1.jpg", seed=1)
    write_jpg(root / "a" / "good2.jpg", seed=2)
    write_jpg(root / "b" / "good3.jpg", seed=3)
    write_truncated(root / "b" / "truncated.jpg", seed=4)
    (root / "b" / "garbage.jpg").write_bytes(b"this is not a jpeg at all")
    write_mode(root / "a" / "gray.png", "L", seed=5)
    write_mode(root / "a" / "rgba.png", "RGBA", seed=6)
    write_mode(root / "a" / "cmyk.jpg", "CMYK", seed=7)
    write_mode(root / "a" / "deep.png", "I;16", seed=8)
    (root / "b" / "copy_of_good1.jpg").write_bytes((root / "a" / "good1.jpg").read_bytes())
    write_jpg(root / "a" / "same.jpg", seed=9)
    (root / "a" / "same(1).jpg").write_bytes((root / "a" / "same.jpg").read_bytes())
    (root / "c").mkdir()
    return root


def test_every_problem_kind_is_reported_with_the_file(messy):
    df = load_manifest("folder", messy)
    rep = validate(df, show_progress=False)
    f = rep.findings
    by = lambda k: sorted(f.loc[f.kind == k, "relpath"])  # noqa: E731
    assert by("unreadable") == ["b/garbage.jpg", "b/truncated.jpg"]
    assert by("non_rgb") == ["a/cmyk.jpg", "a/deep.png", "a/gray.png", "a/rgba.png"]
    modes = dict(zip(f.loc[f.kind == "non_rgb", "relpath"], f.loc[f.kind == "non_rgb", "detail"]))
    assert "CMYK" in modes["a/cmyk.jpg"] and "16-bit" in modes["a/deep.png"]
    assert by("label_conflict") == ["a/good1.jpg", "b/copy_of_good1.jpg"]
    assert by("byte_identical") == ["a/same(1).jpg", "a/same.jpg"]
    assert by("duplicate_id") == ["a/same(1).jpg", "a/same.jpg"]
    assert rep.counts()["empty_class_folder"] == 1
    text = str(rep)
    assert "b/truncated.jpg" in text and "garbage.jpg" in text and "'c' holds no image" in text
    clean = rep.apply(df, verbose=False)
    assert sorted(clean.relpath) == [
        "a/cmyk.jpg",
        "a/deep.png",
        "a/good2.jpg",
        "a/gray.png",
        "a/rgba.png",
        "a/same.jpg",
        "b/good3.jpg",
    ]
    strict = rep.apply(df, {"non_rgb": "drop"}, verbose=False)
    assert sorted(strict.relpath) == ["a/good2.jpg", "a/same.jpg", "b/good3.jpg"]
    # every kept image can be read as RGB uint8
    for p in clean.path:
        img = read_rgb(p)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_missing_file_is_reported_and_dropped(tmp_path):
    root = tmp_path / "ham"
    rows = [{"lesion_id": "L1", "image_id": f"I{i}", "dx": "nv"} for i in range(3)]
    root.mkdir()
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    for i in (0, 2):
        write_jpg(root / "HAM10000_images_part_1" / f"I{i}.jpg", seed=i)
    df = load_manifest("ham10000", root)
    rep = validate(df, show_progress=False)
    assert rep.findings.loc[rep.findings.kind == "missing_file", "image_id"].tolist() == ["I1"]
    assert "I1" not in rep.apply(df, verbose=False)["image_id"].tolist()


def test_duplicate_csv_rows_are_deduped(tmp_path):
    root = tmp_path / "ham"
    rows = [
        {"lesion_id": "L1", "image_id": "I0", "dx": "nv"},
        {"lesion_id": "L1", "image_id": "I0", "dx": "nv"},
        {"lesion_id": "L2", "image_id": "I1", "dx": "mel"},
    ]
    root.mkdir()
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    for i in (0, 1):
        write_jpg(root / "HAM10000_images_part_1" / f"I{i}.jpg", seed=i)
    df = load_manifest("ham10000", root)
    rep = validate(df, show_progress=False)
    assert rep.counts("case")["duplicate_id"] == 1
    assert rep.apply(df, verbose=False)["image_id"].tolist() == ["I0", "I1"]


def test_bad_actions_are_rejected(demo_manifest):
    rep = validate(demo_manifest.head(20), show_progress=False)
    with pytest.raises(ValueError, match="not allowed for 'missing_file'"):
        rep.apply(demo_manifest.head(20), {"missing_file": "keep"})
    with pytest.raises(ValueError, match="unknown validation kind 'typo'"):
        rep.apply(demo_manifest.head(20), {"typo": "drop"})


# ----------------------------------------------------------------------------- decoding


def test_read_rgb_converts_odd_modes_faithfully(tmp_path):
    base = np.zeros((20, 30, 3), np.uint8)
    base[:, :, 0] = 200
    base[:, :, 1] = np.arange(30, dtype=np.uint8)[None, :] * 8
    base[:, :, 2] = 50
    Image.fromarray(base).save(tmp_path / "rgb.png")
    Image.fromarray(base).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(base).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    gray = np.arange(30, dtype=np.uint16)[None, :].repeat(20, 0) * 2000
    Image.fromarray(gray).save(tmp_path / "deep.png")  # I;16
    assert np.array_equal(read_rgb(tmp_path / "rgb.png"), base)
    assert np.array_equal(read_rgb(tmp_path / "rgba.png"), base)
    cmyk = read_rgb(tmp_path / "cmyk.jpg").astype(int)
    assert np.abs(cmyk - base.astype(int)).mean() < 6  # colours kept, not inverted
    deep = read_rgb(tmp_path / "deep.png")
    assert deep.shape == (20, 30, 3) and deep.dtype == np.uint8
    # 16-bit is scaled, not clipped: 58000/65535*255 ~ 225, and the ramp is monotone
    assert abs(int(deep[0, 29, 0]) - round(29 * 2000 * 255 / 65535)) <= 1
    assert (np.diff(deep[0, :, 0].astype(int)) >= 0).all() and deep[0, :, 0].max() > 200


def test_read_rgb_names_the_bad_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_rgb(bad)
    with pytest.raises(ImageReadError, match="missing.jpg"):
        read_rgb(tmp_path / "missing.jpg")
