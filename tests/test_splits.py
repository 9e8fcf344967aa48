"""Grouped splits: no leakage, determinism, sizes, class presence, near-duplicates, shipped test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_folder_dataset import folder_tree  # noqa: F401 (a fixture: HAM images in class folders)

from skinhelpers.data import manifest as datasets
from skinhelpers.split import checks, grouped, near_duplicates, store

# ----------------------------------------------------------------------------- helpers


def synthetic_manifest(
    seed: int,
    n_groups: int = 300,
    n_classes: int = 5,
    max_per_group: int = 4,
    with_shipped: bool = False,
) -> pd.DataFrame:
    """Random groups of 1..max_per_group images, skewed class sizes (some classes tiny)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(n_classes, 0.7))
    probs = np.maximum(probs, 0.02)
    probs /= probs.sum()
    rows = []
    for g in range(n_groups):
        label = int(rng.choice(n_classes, p=probs))
        for k in range(int(rng.integers(1, max_per_group + 1))):
            rows.append(
                {
                    "image_id": f"img{g}_{k}",
                    "relpath": f"c{label}/img{g}_{k}.jpg",
                    "label": f"class{label}",
                    "label_idx": label,
                    "group": f"L{g:04d}",
                }
            )
    df = pd.DataFrame(rows)
    if with_shipped:
        # shipped test: ~20% of the groups, and a few groups straddling both folders
        gids = df["group"].unique()
        test_groups = set(rng.choice(gids, size=len(gids) // 5, replace=False))
        df["source_split"] = np.where(df["group"].isin(test_groups), "test", "train")
        straddle = rng.choice(sorted(test_groups), size=3, replace=False)
        for g in straddle:
            first = df.index[df["group"] == g][0]
            df.loc[first, "source_split"] = "train"
    df.attrs["classes"] = [f"class{i}" for i in range(n_classes)]
    df.attrs["dataset"] = "synthetic-test"
    return df


def no_group_in_two_splits(split_df: pd.DataFrame) -> bool:
    return bool((split_df.groupby("group")["split"].nunique() == 1).all())


# ----------------------------------------------------------------------------- HAM10000


@pytest.fixture(scope="module")
def ham_split(ham_manifest):
    return grouped.grouped_split(ham_manifest, seed=0)


@pytest.mark.realdata
def test_ham_split_no_leak_sizes_and_classes(ham_manifest, ham_split):
    sp = ham_split
    assert len(sp) == len(ham_manifest)
    assert set(sp["relpath"]) == set(ham_manifest["relpath"])
    assert no_group_in_two_splits(sp)
    # every lesion id in exactly one split (the dataset's own group, before joining)
    lesion = ham_manifest.set_index("relpath")["lesion_id"]
    assert (
        sp.assign(lesion=sp["relpath"].map(lesion)).groupby("lesion")["split"].nunique() == 1
    ).all()
    share = sp["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.70) < 0.03
    assert abs(share["val"] - 0.15) < 0.02
    assert abs(share["test"] - 0.15) < 0.02
    table = store.split_table(sp)
    assert (table[["train", "val", "test"]] > 0).all().all(), table
    # stratified: the rarest class (df, 115 images) gets roughly its share in val and test
    for s in ("val", "test"):
        assert 0.10 <= table.loc["df", s] / 115 <= 0.22
    checked = checks.check_split(sp)
    assert checked["ok"] and checked["classes_missing"] == {}


@pytest.mark.realdata
def test_ham_same_seed_same_split_other_seed_other(ham_manifest, ham_split):
    again = grouped.grouped_split(ham_manifest, seed=0)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), ham_split.reset_index(drop=True))
    other = grouped.grouped_split(ham_manifest, seed=1)
    assert no_group_in_two_splits(other)
    changed = (
        other.set_index("relpath")["split"] != ham_split.set_index("relpath")["split"]
    ).mean()
    assert changed > 0.1, f"seed 1 changed only {changed:.1%} of the assignments"


@pytest.mark.realdata
def test_ham_folds(ham_manifest):
    sub = datasets.subsample(ham_manifest, 3000, seed=0)  # whole lesions, every class
    sp = grouped.grouped_split(sub, seed=0, n_folds=5)
    pool = sp[sp["split"] != "test"]
    assert sorted(pool["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (sp.loc[sp["split"] == "test", "fold"] == -1).all()
    assert (pool.groupby("group")["fold"].nunique() == 1).all()
    assert ((pool["fold"] == 0) == (pool["split"] == "val")).all()
    assert (store.split_table(sp, by="fold").drop(columns="total") > 0).all().all()
    sizes = pool["fold"].value_counts(normalize=True)
    assert sizes.max() - sizes.min() < 0.03
    checks.check_split(sp)


@pytest.mark.realdata
def test_naive_split_leaks_on_ham(ham_manifest):
    leak = checks.naive_split_leakage(ham_manifest, 0.15, seed=0)
    assert leak["leaked_share"] > 0.2  # many HAM lesions have several images


# ----------------------------------------------------------------------------- synthetic inputs


@pytest.mark.parametrize("seed", range(15))
def test_random_manifests_never_leak(seed):
    rng = np.random.default_rng(1000 + seed)
    shipped = seed % 3 == 2
    df = synthetic_manifest(
        seed,
        n_groups=int(rng.integers(40, 400)),
        n_classes=int(rng.integers(2, 8)),
        max_per_group=int(rng.integers(1, 6)),
        with_shipped=shipped,
    )
    val, test = float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.05, 0.3))
    n_folds = int(rng.choice([0, 0, 3, 5]))
    sp = grouped.grouped_split(df, val_size=val, test_size=test, seed=seed, n_folds=n_folds)
    dropped = set(sp.attrs["split"]["dropped"])
    assert len(sp) + len(dropped) == len(df)
    assert set(sp["relpath"]) | dropped == set(df["relpath"])
    assert no_group_in_two_splits(sp)
    if shipped:
        assert set(sp.loc[sp["split"] == "test", "relpath"]) == set(
            df.loc[df["source_split"] == "test", "relpath"]
        )
    assert set(sp["split"]) <= {"train", "val", "test"}
    if n_folds:
        assert (sp[sp["split"] != "test"].groupby("group")["fold"].nunique() == 1).all()
    checks.check_split(sp)  # raises on leakage or a missing class that had enough groups


def test_sizes_close_to_requested():
    df = synthetic_manifest(3, n_groups=2000, n_classes=4, max_per_group=2)
    for val, test in [(0.15, 0.15), (0.1, 0.2), (0.2, 0.1)]:
        share = grouped.grouped_split(df, val, test, seed=0)["split"].value_counts(normalize=True)
        assert abs(share["test"] - test) < 0.02, (val, test, share)
        assert abs(share["val"] - val) < 0.02, (val, test, share)


def test_small_classes_present_in_every_split():
    # class 3 has 4 single-image groups: it must still reach val and test
    df = synthetic_manifest(5, n_groups=200, n_classes=3, max_per_group=3)
    extra = pd.DataFrame(
        {
            "image_id": [f"r{i}" for i in range(4)],
            "relpath": [f"c3/r{i}.jpg" for i in range(4)],
            "label": "class3",
            "label_idx": 3,
            "group": [f"R{i}" for i in range(4)],
        }
    )
    df2 = pd.concat([df, extra], ignore_index=True)
    df2.attrs = {**df.attrs, "classes": df.attrs["classes"] + ["class3"]}
    for seed in range(5):
        sp = grouped.grouped_split(df2, seed=seed)
        present = sp[sp["label"] == "class3"]["split"].unique()
        assert set(present) == {"train", "val", "test"}, (seed, present)


def test_check_split_names_the_leaking_group():
    df = synthetic_manifest(1, n_groups=80)
    sp = grouped.grouped_split(df, seed=0)
    g = sp.loc[sp["split"] == "test", "group"].iloc[0]
    bad = sp.copy()
    bad.loc[bad.index[bad["group"] == g][0], "split"] = "train"
    if (bad["group"] == g).sum() == 1:  # single-image group: give it a twin in train
        row = bad[bad["group"] == g].iloc[[0]].assign(relpath="twin.jpg", split="test")
        bad = pd.concat([bad, row], ignore_index=True)
    with pytest.raises(checks.SplitError, match=g):
        checks.check_split(bad)


def test_check_split_missing_class_is_an_error():
    df = synthetic_manifest(2, n_groups=150, n_classes=3)
    sp = grouped.grouped_split(df, seed=0)
    big = sp["label"].value_counts().index[0]
    bad = sp[~((sp["split"] == "val") & (sp["label"] == big))]
    with pytest.raises(checks.SplitError, match=f"{big}.*val"):
        checks.check_split(bad)


def test_bad_parameters_are_clear_errors():
    df = synthetic_manifest(0, n_groups=50)
    with pytest.raises(ValueError, match="val_size"):
        grouped.grouped_split(df, val_size=-0.1)
    with pytest.raises(ValueError, match="must be < 1"):
        grouped.grouped_split(df, val_size=0.6, test_size=0.5)
    with pytest.raises(ValueError, match="n_folds"):
        grouped.grouped_split(df, n_folds=1)
    with pytest.raises(ValueError, match="lacks column"):
        grouped.grouped_split(df.drop(columns="group"))


# ----------------------------------------------------------------------------- near-duplicates


def test_near_duplicate_pairs_stay_together():
    df = synthetic_manifest(7, n_groups=200, max_per_group=1)
    rng = np.random.default_rng(0)
    a = rng.choice(len(df), 40, replace=False)
    b = rng.choice(len(df), 40, replace=False)
    pairs = pd.DataFrame(
        {
            "relpath_a": df["relpath"].to_numpy()[a],
            "relpath_b": df["relpath"].to_numpy()[b],
            "distance": 2,
            "kind": "near",
        }
    )
    pairs = pairs[pairs["relpath_a"] != pairs["relpath_b"]]
    pairs = pd.concat(
        [pairs, pd.DataFrame({"relpath_a": ["gone.jpg"], "relpath_b": [df["relpath"].iloc[0]]})]
    )
    # without merging, a grouped split separates many pairs
    plain = grouped.grouped_split(df, seed=0)
    with pytest.raises(checks.SplitError, match="near-duplicate"):
        checks.check_split(plain, pairs)
    merged = near_duplicates.merge_near_duplicates(df, pairs)
    assert merged.attrs["near_duplicates"]["pairs_not_in_manifest"] == 1
    assert merged["group"].nunique() < df["group"].nunique()
    assert (merged["group_before_merge"] == df["group"]).all()
    for seed in range(3):
        sp = grouped.grouped_split(merged, seed=seed)
        checked = checks.check_split(sp, pairs)
        assert checked["near_duplicate_pairs_across_splits"] == 0
        assert checked["near_duplicate_pairs_checked"] == len(pairs) - 1


def test_merge_near_duplicates_without_pairs_is_identity():
    df = synthetic_manifest(0, n_groups=30)
    out = near_duplicates.merge_near_duplicates(df, None)
    assert (out["group"] == df["group"]).all()
    with pytest.raises(ValueError, match="relpath_b"):
        near_duplicates.merge_near_duplicates(df, pd.DataFrame({"relpath_a": ["x"]}))


# ----------------------------------------------------------------------------- shipped splits


def test_shipped_split_synthetic_overlap_dropped():
    df = synthetic_manifest(4, n_groups=200, with_shipped=True)
    overlap = grouped.shipped_overlap(df)
    assert len(overlap) == 3
    sp = grouped.grouped_split(df, seed=0)
    shipped_test = set(df.loc[df["source_split"] == "test", "relpath"])
    assert set(sp.loc[sp["split"] == "test", "relpath"]) == shipped_test
    dropped = sp.attrs["split"]["dropped"]
    assert len(dropped) == 3 and not set(dropped) & set(sp["relpath"])
    assert no_group_in_two_splits(sp)
    moved = grouped.grouped_split(df, seed=0, shipped_overlap_action="move_to_test")
    assert len(moved) == len(df)
    assert set(moved.loc[moved["split"] == "test", "relpath"]) == shipped_test | set(dropped)


@pytest.mark.realdata
def test_isic9_keeps_shipped_test(isic9_manifest):
    from skinhelpers.data.validate import validate

    clean = validate(isic9_manifest, show_progress=False).apply(isic9_manifest, verbose=False)
    sp = grouped.grouped_split(clean, seed=0)
    shipped_test = set(clean.loc[clean["source_split"] == "test", "relpath"])
    assert set(sp.loc[sp["split"] == "test", "relpath"]) == shipped_test
    assert not (sp.loc[sp["split"] == "val", "relpath"].isin(shipped_test)).any()
    assert no_group_in_two_splits(sp)
    assert sp.attrs["split"]["shipped"]
    share_val = (sp["split"] == "val").mean()
    assert 0.12 < share_val < 0.19
    checked = checks.check_split(sp)
    # every class with a shipped-train group is in train
    assert set(sp.loc[sp["split"] == "train", "label"]) == set(
        clean.loc[clean["source_split"] == "train", "label"]
    )
    assert all("shipped test" in w for w in checked["warnings"] if "test" in w)


@pytest.mark.realdata
def test_isic9_raw_overlap_reported(isic9_manifest):
    # before validation the 18 ids in both Train and Test form groups that cross
    overlap = grouped.shipped_overlap(isic9_manifest)
    assert len(overlap) >= 18
    sp = grouped.grouped_split(isic9_manifest, seed=0)
    assert no_group_in_two_splits(sp)
    assert sp.attrs["split"]["shipped_overlap"]["groups"] == len(overlap)


# ----------------------------------------------------------------------------- persistence


def test_save_and_read_split_round_trip(tmp_path, demo_manifest):
    datasets.save_manifest(demo_manifest, tmp_path)
    sp = grouped.grouped_split(demo_manifest, seed=3, n_folds=3)
    store.save_split(sp, tmp_path)
    back = store.read_split(tmp_path)
    assert back.attrs["dataset"] == "demo" and back.attrs["split"]["seed"] == 3
    assert back.attrs["split"]["checks"]["ok"]
    assert list(back["relpath"]) == list(demo_manifest["relpath"])
    assert (back.set_index("relpath")["split"] == sp.set_index("relpath")["split"]).all()
    assert back["fold"].dtype.kind == "i"
    assert {"path", "sha1", "label_idx", "manifest_group"} <= set(back.columns)


def test_read_split_errors(tmp_path, demo_manifest):
    datasets.save_manifest(demo_manifest, tmp_path)
    with pytest.raises(FileNotFoundError, match="notebook 04"):
        store.read_split(tmp_path)
    sp = grouped.grouped_split(demo_manifest, seed=0)
    store.save_split(sp, tmp_path)
    # a manifest from another run: fewer rows than the split
    fewer = demo_manifest.iloc[10:].reset_index(drop=True)
    fewer.attrs = dict(demo_manifest.attrs)
    datasets.save_manifest(fewer, tmp_path)
    with pytest.raises(ValueError, match="not in manifest.csv"):
        store.read_split(tmp_path)
    # a split missing manifest rows
    datasets.save_manifest(demo_manifest, tmp_path)
    store.save_split(sp.iloc[5:].copy(), tmp_path, checks={"ok": True})
    with pytest.raises(ValueError, match="have no split"):
        store.read_split(tmp_path)


def test_split_table_and_plot(demo_manifest):
    import matplotlib

    matplotlib.use("Agg")
    sp = grouped.grouped_split(demo_manifest, seed=0)
    t = store.split_table(sp)
    assert list(t.columns) == ["train", "val", "test", "total"]
    assert t["total"].sum() == len(demo_manifest)
    assert list(t.index) == [c for c in demo_manifest.attrs["classes"]]
    from skinhelpers.split.plots import plot_split

    fig = plot_split(sp)
    assert len(fig.axes) == 2


def test_tiny_and_single_class_inputs_fall_back_to_group_shuffle():
    rows = [
        {
            "image_id": f"i{g}{k}",
            "relpath": f"i{g}{k}.jpg",
            "label": "a",
            "label_idx": 0,
            "group": f"G{g}",
        }
        for g in range(6)
        for k in range(2)
    ]
    df = pd.DataFrame(rows)
    sp = grouped.grouped_split(df, val_size=0.2, test_size=0.2, seed=0)
    assert "GroupShuffleSplit" in sp.attrs["split"]["test_method"]
    assert no_group_in_two_splits(sp)
    assert set(sp["split"]) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="too few groups"):
        grouped.grouped_split(df[df["group"].isin(["G0", "G1"])], seed=0)


# ----------------------------------------------------------------------------- two seeds


def test_split_seed_defaults_to_the_training_seed():
    assert grouped.resolve_split_seed(4) == 4 and grouped.resolve_split_seed(4, -1) == 4
    assert grouped.resolve_split_seed(4, None) == 4 and grouped.resolve_split_seed(4, 0) == 0
    for bad in (-2, 1.5, "3", True):
        with pytest.raises(ValueError, match="split_seed"):
            grouped.resolve_split_seed(0, bad)


def test_split_json_records_the_seeds_and_the_test_images(tmp_path):
    df = synthetic_manifest(0, n_groups=120)
    df.attrs = {"dataset": "toy", "classes": sorted(set(df["label"]))}
    split = grouped.grouped_split(df, seed=3)
    store.save_split(split, tmp_path, seeds={"seed": 1, "split_seed": 3, "used": 3})
    rec = __import__("json").loads((tmp_path / "split.json").read_text())
    assert rec["seed"] == 3 and rec["seeds"] == {"seed": 1, "split_seed": 3, "used": 3}
    test = split.loc[split["split"] == "test", "relpath"]
    assert rec["test_fingerprint"] == store.images_fingerprint(test[::-1])  # order-free
    other = grouped.grouped_split(df, seed=4)
    assert rec["test_fingerprint"] != store.images_fingerprint(
        other.loc[other["split"] == "test", "relpath"]
    )


@pytest.mark.slow  # notebooks 01 (twice) and 04 (three times) on 90 real images, ~90 s
def test_split_seed_keeps_subsample_and_split_when_the_training_seed_changes(
    folder_tree,  # noqa: F811 (the fixture imported above)
    tmp_path,
    monkeypatch,
):
    """Two runs that differ in ``seed`` only, both with ``split_seed`` 3: the same smoke
    subsample (01) and the same split (04). Without ``split_seed``, ``seed`` draws the split
    as it always did."""
    from helpers_run import run_notebook

    from skinhelpers.files import PROJECT_ROOT

    monkeypatch.setenv("SKINHELPERS_PROGRESS", "plain")
    nbs = PROJECT_ROOT / "notebooks"
    tree = folder_tree[0]

    def run(nb, folder, **params):
        run_notebook(
            nbs / f"{nb}.ipynb",
            folder / f"{nb}.ipynb",
            {"dataset": "folder", "data_dir": str(tree), "run_dir": str(folder), **params},
        )

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for folder, seed in ((a, 0), (b, 1)):
        run("01_eda", folder, seed=seed, split_seed=3, max_images=40)
        run("04_splitting", folder, seed=seed, split_seed=3)
    ma, mb = datasets.read_manifest(a), datasets.read_manifest(b)
    assert len(ma) < 90 and ma["relpath"].tolist() == mb["relpath"].tolist()
    assert ma.attrs["subsample"]["seed"] == 3
    sa, sb = (pd.read_csv(f / "split.csv") for f in (a, b))
    assert sa.equals(sb)
    run("04_splitting", b, seed=1)  # split_seed -1: the training seed draws the split
    own = pd.read_csv(b / "split.csv")
    direct = grouped.grouped_split(datasets.read_manifest(b), seed=1)
    assert own["split"].tolist() == direct["split"].tolist()
    assert not own["split"].equals(sa["split"])
