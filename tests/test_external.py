"""External validation and rotation-invariant duplicates, on the real data:
HAM10000 vs the ISIC 9-class set (1,437 of whose image ids are HAM10000 images resized to
180x180: found by content), the clinical class map, and planted rotated/mirrored copies."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy import fftpack

from skinhelpers.data import hashes, taxonomy
from skinhelpers.evaluate import external
from skinhelpers.explore import leakage

pytestmark = pytest.mark.realdata

OPS = [
    lambda m: m,
    lambda m: np.rot90(m, 1),
    lambda m: np.rot90(m, 2),
    lambda m: np.rot90(m, 3),
    np.fliplr,
    lambda m: np.rot90(np.fliplr(m), 1),
    lambda m: np.rot90(np.fliplr(m), 2),
    lambda m: np.rot90(np.fliplr(m), 3),
]


def test_dihedral_dct_equals_the_dct_of_each_view():
    img = np.random.default_rng(0).random((64, 64))

    def dct(m):
        return fftpack.dct(fftpack.dct(m, axis=0), axis=1)

    views = hashes.dihedral_dct(dct(img))
    for k, op in enumerate(OPS):
        assert np.allclose(views[k], dct(op(img)), atol=1e-9), hashes.DIHEDRAL_VIEWS[k]


def test_planted_rotated_and_mirrored_copies_are_found(ham_manifest, tmp_path):
    src = ham_manifest.sample(40, random_state=1).reset_index(drop=True)
    planted = []
    for k, (op, _name) in enumerate(zip(OPS[1:], hashes.DIHEDRAL_VIEWS[1:])):
        img = cv2.imread(src.loc[k, "path"])
        copy = np.ascontiguousarray(op(img))
        copy = cv2.resize(copy, (copy.shape[1] * 9 // 10, copy.shape[0] * 9 // 10))
        p = tmp_path / f"copy_{k}.jpg"
        cv2.imwrite(str(p), copy, [cv2.IMWRITE_JPEG_QUALITY, 80])
        planted.append(
            {
                "image_id": f"copy_{k}",
                "relpath": p.name,
                "path": str(p),
                "label": src.loc[k, "label"],
                "group": f"planted{k}",
                "sha1": None,
            }
        )
    df = pd.concat([src, pd.DataFrame(planted)], ignore_index=True)
    plain = leakage.near_duplicates(df, hashes.phash_codes(df["path"], show_progress=False), 36)
    assert not plain["relpath_b"].str.startswith("copy_").any()  # a plain hash misses them
    bits = hashes.phash_codes(df["path"], show_progress=False, dihedral=True)
    near = leakage.near_duplicates(df, bits, 36)
    hits = near[near["relpath_b"].str.startswith("copy_")]
    assert len(hits) == 7 and not hits["same_group"].any()
    for k in range(7):  # each copy with its source, through a non-identity view
        row = hits[hits["relpath_b"] == f"copy_{k}.jpg"].iloc[0]
        assert row["relpath_a"] == src.loc[k, "relpath"] and row["transform"] != "identity"
    # and across sets: the copies against the source images
    q, r, _, v = hashes.cross_pairs(bits[40:], bits[:40], 36)
    assert sorted(zip(q.tolist(), r.tolist())) == [(k, k) for k in range(7)]
    # the view of the copy that gives back the source: the inverse of the planted one
    assert [hashes.DIHEDRAL_VIEWS[x] for x in v[np.argsort(q)]] == [
        "rot270",
        "rot180",
        "rot90",
        "flip",
        "flip+rot90",
        "flip+rot180",
        "flip+rot270",
    ]


def test_isic9_overlap_with_ham10000_by_content(ham_manifest, isic9_manifest, tmp_path):
    ov = external.content_overlap(
        isic9_manifest, ham_manifest, 36, cache_dir=tmp_path, show_progress=False
    )
    ham_ids = set(ham_manifest["image_id"])
    named = isic9_manifest["image_id"].isin(ham_ids)
    # every ISIC file whose id is a HAM10000 id is found by its pixels, and nothing else
    assert set(ov["relpath"]) == set(isic9_manifest.loc[named, "relpath"])
    assert len(ov) == 1514 and ov["image_id"].nunique() == 1437
    assert ov["same_name"].all() and (ov["distance"] <= 16).all()
    assert set(ov["kind"]) == {"near"}  # resized copies: never byte-identical, not rotated
    # the hashes are cached by content: a second pass reads them back
    again = external.content_overlap(
        isic9_manifest.head(50), ham_manifest, 36, cache_dir=tmp_path, show_progress=False
    )
    assert set(again["relpath"]) == set(ov["relpath"]) & set(isic9_manifest.head(50)["relpath"])


def test_auto_class_map_isic9_to_ham(ham_manifest, isic9_manifest):
    t = taxonomy.resolve_class_map(
        ham_manifest.attrs["classes"], isic9_manifest.attrs["classes"], "auto"
    )
    m = {
        e: s if isinstance(s, str) else None for e, s in zip(t["external_class"], t["source_class"])
    }
    assert m == {
        "actinic keratosis": "akiec",
        "basal cell carcinoma": "bcc",
        "dermatofibroma": "df",
        "melanoma": "mel",
        "nevus": "nv",
        "pigmented benign keratosis": "bkl",
        "seborrheic keratosis": "bkl",
        "squamous cell carcinoma": None,
        "vascular lesion": "vasc",
    }
    assert "dropped" in t.set_index("external_class").loc["squamous cell carcinoma", "how"]
    kept, dropped = taxonomy.apply_class_map(isic9_manifest, t, ham_manifest.attrs["classes"])
    assert dropped.to_dict() == {"squamous cell carcinoma": 197}
    assert len(kept) == len(isic9_manifest) - 197 and kept["label_idx"].notna().all()
    with pytest.raises(ValueError, match="does not have"):
        taxonomy.resolve_class_map(["mel", "nv"], ["melanoma"], {"melanoma": "MEL"})
