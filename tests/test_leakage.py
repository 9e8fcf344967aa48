"""Duplicates, label conflicts, split leakage and metadata shortcuts (notebook 03)."""

from __future__ import annotations

from itertools import combinations

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers_images import contents_under_several_labels

from skinhelpers.data import hashes, manifest
from skinhelpers.explore import leakage, leakage_plots

HAM_IDENTICAL = {
    frozenset({"ISIC_0024366", "ISIC_0029861"}),
    frozenset({"ISIC_0024777", "ISIC_0029938"}),
}
# two HAM10000 images filed under different lesion ids that are the same photograph
HAM_CROSS_LESION = frozenset({"ISIC_0030074", "ISIC_0025226"})


def _ids(pairs: pd.DataFrame) -> set[frozenset]:
    stem = lambda p: p.split("/")[-1].rsplit(".", 1)[0]  # noqa: E731
    return {frozenset({stem(a), stem(b)}) for a, b in zip(pairs["relpath_a"], pairs["relpath_b"])}


def _frame(relpaths, groups, labels=None, sha=None):
    n = len(relpaths)
    return pd.DataFrame(
        {
            "relpath": relpaths,
            "group": groups,
            "label": labels or ["a"] * n,
            "sha1": sha or [f"h{i}" for i in range(n)],
            "image_id": relpaths,
            "source_split": [None] * n,
        }
    )


# ----------------------------------------------------------------------------- exact


def test_exact_duplicates_are_the_two_known_ham_pairs(ham_manifest):
    ex = leakage.exact_duplicates(ham_manifest)
    assert _ids(ex) == HAM_IDENTICAL
    assert (ex["kind"] == "exact").all() and (ex["distance"] == 0).all()
    assert ex["same_group"].all()  # the loader joins byte-identical files into one group


def test_exact_duplicates_lists_every_pair_of_a_triple():
    df = _frame(["a", "b", "c", "d"], ["g1", "g2", "g3", "g4"], sha=["x", "x", "x", "y"])
    ex = leakage.exact_duplicates(df)
    assert _ids(ex) == {frozenset(p) for p in combinations("abc", 2)}
    assert not ex["same_group"].any()


# ----------------------------------------------------------------------------- hamming


def test_hamming_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    bits = rng.random((300, 64)) < 0.5
    for k in range(0, 40, 4):  # plant close pairs
        bits[k + 1] = bits[k]
        bits[k + 1, rng.choice(64, k // 4, replace=False)] ^= True
    i, j, d = hashes.hamming_pairs(bits, 20, block=64)  # several blocks
    brute = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    bi, bj = np.nonzero(np.triu(brute <= 20, 1))
    assert set(zip(i.tolist(), j.tolist())) == set(zip(bi.tolist(), bj.tolist()))
    assert np.array_equal(d, brute[i, j])
    assert np.all(i < j) and np.all(np.diff(d) >= 0)
    assert (0, 1, 0) in set(zip(i.tolist(), j.tolist(), d.tolist()))


@pytest.mark.timeout(300)  # a hang guard; its speed is measured in benchmarks, not here
def test_hamming_pairs_on_10k_codes_finds_the_planted_pair():
    rng = np.random.default_rng(1)
    bits = rng.random((10_000, 256)) < 0.5
    bits[5000] = bits[17]
    i, j, d = hashes.hamming_pairs(bits, 40)
    found = dict(zip(zip(i.tolist(), j.tolist()), d.tolist()))
    assert found[(17, 5000)] == 0
    # random 256-bit codes lie ~128 bits apart: nothing else within 40
    assert len(found) == 1


def test_phash_survives_rescaling_and_reencoding(tmp_path, demo_manifest):
    src = demo_manifest["path"].iloc[0]
    img = cv2.imread(src)
    small = cv2.resize(img, (160, 120), interpolation=cv2.INTER_AREA)
    p_copy = tmp_path / "copy.jpg"
    cv2.imwrite(str(p_copy), small, [cv2.IMWRITE_JPEG_QUALITY, 60])
    other = demo_manifest["path"].iloc[300]
    bits = hashes.phash_codes([src, str(p_copy), other], workers=1, show_progress=False)
    assert bits.shape == (3, 256)
    d = lambda a, b: int((bits[a] != bits[b]).sum())  # noqa: E731
    assert d(0, 1) <= 16
    assert d(0, 2) > 60


def test_near_duplicates_on_real_ham(ham_manifest):
    wanted = set().union(*HAM_IDENTICAL, HAM_CROSS_LESION)
    rows = ham_manifest[ham_manifest["image_id"].isin(wanted)]
    extra = ham_manifest[~ham_manifest["image_id"].isin(wanted)].sample(60, random_state=0)
    df = pd.concat([rows, extra]).reset_index(drop=True)
    bits = hashes.phash_codes(df["path"], workers=2, show_progress=False)
    near = leakage.near_duplicates(df, bits, 36)
    found = _ids(near)
    assert HAM_IDENTICAL <= found and HAM_CROSS_LESION in found
    stem = lambda p: p.split("/")[-1].rsplit(".", 1)[0]  # noqa: E731
    by = {frozenset({stem(r.relpath_a), stem(r.relpath_b)}): r for r in near.itertuples()}
    assert by[HAM_CROSS_LESION].kind == "near" and not by[HAM_CROSS_LESION].same_group
    for p in HAM_IDENTICAL:
        assert by[p].kind == "exact" and by[p].distance == 0 and by[p].same_group


def test_combine_pairs_keeps_one_row_per_pair_and_prefers_exact():
    exact = pd.DataFrame(
        [
            {
                "relpath_a": "b",
                "relpath_b": "a",
                "distance": 0,
                "kind": "exact",
                "same_group": True,
                "label_a": "x",
                "label_b": "y",
                "group_a": "G",
                "group_b": "G",
            }
        ]
    )
    near = pd.DataFrame(
        [
            {
                "relpath_a": "a",
                "relpath_b": "b",
                "distance": 0,
                "kind": "near",
                "same_group": True,
                "label_a": "y",
                "label_b": "x",
                "group_a": "G",
                "group_b": "G",
            },
            {
                "relpath_a": "a",
                "relpath_b": "c",
                "distance": 12,
                "kind": "near",
                "same_group": False,
                "label_a": "y",
                "label_b": "y",
                "group_a": "G",
                "group_b": "H",
            },
        ]
    )
    out = leakage.combine_pairs(exact, near)
    assert len(out) == 2
    ab = out[(out["relpath_a"] == "a") & (out["relpath_b"] == "b")].iloc[0]
    assert ab["kind"] == "exact" and ab["label_a"] == "y" and ab["label_b"] == "x"
    marked = leakage.mark_in_manifest(out, pd.DataFrame({"relpath": ["a", "b"]}))
    assert marked["in_manifest"].tolist() == [True, False]


# ----------------------------------------------------------------------------- conflicts


def test_label_conflicts_in_isic9(isic9_manifest, isic9_dir):
    c = leakage.label_conflicts(isic9_manifest)
    truth = contents_under_several_labels(isic9_dir)  # from the files, with hashlib
    assert len(c) == len(truth)
    assert (c["files"] == 2).all()
    combos = leakage.conflict_label_pairs(c).set_index("labels in conflict")["contents"]
    assert combos.sum() == len(truth)
    assert set(combos.index) == {" | ".join(sorted(v)) for v in truth.values()}
    assert set(combos.index) == {"melanoma | seborrheic keratosis", "actinic keratosis | nevus"}


def test_no_label_conflicts_in_ham(ham_manifest):
    assert leakage.label_conflicts(ham_manifest).empty


# ----------------------------------------------------------------------------- splits


def test_naive_split_leaks_lesions_and_grouped_split_does_not(ham_manifest):
    naive = leakage.split_leak(ham_manifest, "naive", 0.2, seed=0)
    grouped = leakage.split_leak(ham_manifest, "grouped", 0.2, seed=0)
    assert naive["shared_groups"] > 100
    assert naive["test_images_leaked_share"] > 0.2
    assert grouped["shared_groups"] == 0 and grouped["test_images_leaked"] == 0
    for r in (naive, grouped):
        assert r["train_images"] + r["test_images"] == len(ham_manifest)


def test_compare_splits_and_pairs_across():
    # 6 lesions with 2 images each, one cross-lesion duplicate pair
    rel = [f"img{i}" for i in range(12)]
    df = _frame(rel, [f"L{i // 2}" for i in range(12)], labels=["a", "b"] * 6)
    pairs = pd.DataFrame({"relpath_a": ["img0", "img2"], "relpath_b": ["img1", "img5"]})
    t = leakage.compare_splits(df, test_size=0.34, seeds=range(6), pairs=pairs)
    assert set(t["method"]) == {"naive", "grouped"}
    assert (t.loc[t["method"] == "grouped", "shared_groups"] == 0).all()
    assert t.loc[t["method"] == "naive", "shared_groups"].max() > 0
    # within-lesion pair img0/img1 is never split by the grouped split
    tr, te = leakage.split_indices(df, "grouped", 0.34, 0)
    n = leakage.pairs_across(pairs.iloc[:1], df, tr, te)
    assert n == 0
    assert leakage.pairs_across(pairs, df, [0, 2], [1, 5]) == 2
    assert leakage.pairs_across(pairs, df, [0, 1], [2, 5]) == 0
    with pytest.raises(ValueError, match="ships no train/test"):
        leakage.split_indices(df, "shipped")
    with pytest.raises(ValueError, match="not 'naive'"):
        leakage.split_indices(df, "random")


def test_shipped_isic9_split_shares_duplicates(isic9_manifest):
    assert manifest.has_shipped_split(isic9_manifest)
    tr, te = leakage.split_indices(isic9_manifest, "shipped")
    exact = leakage.exact_duplicates(isic9_manifest)
    assert leakage.pairs_across(exact, isic9_manifest, tr, te) > 0


def test_images_per_group():
    df = _frame(list("abcdef"), ["x", "x", "x", "y", "z", "z"])
    t = leakage.images_per_group(df)
    assert t["groups"].to_dict() == {1: 1, 2: 1, 3: 1}
    assert t["images"].sum() == 6


# ----------------------------------------------------------------------------- shortcuts


def test_cramers_v_extremes():
    labels = pd.Series(["mel", "nv", "bcc"] * 100)
    same = labels.map({"mel": "histo", "nv": "follow_up", "bcc": "consensus"})
    rng = np.random.default_rng(0)
    noise = pd.Series(rng.choice(["m", "f"], 300))
    assert leakage.cramers_v(same, labels) == pytest.approx(1.0)
    assert leakage.cramers_v(noise, labels) < 0.2


def test_associations_on_ham(ham_manifest):
    a = leakage.associations(ham_manifest).set_index("column")
    assert set(a.index) == {"sex", "localization", "dx_type"}
    # dx_type is tied to the diagnosis far more than sex is
    assert a.loc["dx_type", "cramers_v"] > 2 * a.loc["sex", "cramers_v"]
    assert a.loc["dx_type", "p_value"] < 1e-10
    # 'unknown' is left out
    assert a.loc["sex", "n"] == (ham_manifest["sex"] != "unknown").sum()
    kw = leakage.age_test(ham_manifest)
    assert kw["p_value"] < 1e-10 and 0 < kw["epsilon_squared"] < 1


def test_associations_skip_datasets_without_metadata(isic9_manifest):
    assert leakage.associations(isic9_manifest).empty
    assert leakage.age_test(isic9_manifest.drop(columns="age")) is None


def test_plots_return_figures(ham_manifest):
    import matplotlib.pyplot as plt

    df = ham_manifest.iloc[:300]
    ex = leakage.exact_duplicates(ham_manifest)
    paths = dict(zip(ham_manifest["relpath"], ham_manifest["path"]))
    bits = hashes.phash_codes(df["path"], workers=2, show_progress=False)
    figs = [
        leakage_plots.plot_images_per_group(df),
        leakage_plots.plot_pairs(ex, paths, n=2),
        leakage_plots.plot_pairs(ex.iloc[:0], paths),
        leakage_plots.plot_distance_hist(bits, df["group"].to_numpy(), 36, sample=200),
        leakage_plots.plot_split_leak(leakage.compare_splits(df, seeds=[0, 1])),
        leakage_plots.plot_associations(leakage.associations(df)),
    ]
    for f in figs:
        assert f.axes
        plt.close(f)
