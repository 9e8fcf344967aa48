"""K-fold training (the gpu profile's lever): fold splits that never leak a lesion, the
ensemble module and its checks, where the fold models live. The whole K-fold chain
(04 folds -> 07 fold models -> 08 ensemble) runs in tests/test_gpu_profile.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from short_checkpoint import pick_images, train_short_checkpoint

from skinhelpers.model.checkpoints import CheckpointError
from skinhelpers.model.ensemble import Ensemble, load_ensemble
from skinhelpers.model.inference import predict_batch
from skinhelpers.split import checks, grouped, store
from skinhelpers.train import kfold
from skinhelpers.train.config import TrainConfig


@pytest.mark.realdata
def test_ham_fold_splits_keep_lesions_apart_and_fold0_is_the_split(ham_manifest):
    sp = grouped.grouped_split(ham_manifest, seed=0, n_folds=5)
    assert store.n_folds_of(sp) == 5
    same = store.fold_split(sp, 0)
    assert (same["split"] == sp["split"]).all()  # the run's own model is the fold-0 model
    lesion = dict(zip(ham_manifest["relpath"], ham_manifest["group"]))
    test = sp["split"] == "test"
    val_rows = []
    for f in range(5):
        fs = store.fold_split(sp, f)
        assert fs.attrs["fold"] == f and fs.attrs["n_folds"] == 5
        assert (fs.loc[test, "split"] == "test").all() and not (
            fs.loc[~test, "split"] == "test"
        ).any()
        val = fs[fs["split"] == "val"]
        assert (val["fold"] == f).all() and len(val) == (sp["fold"] == f).sum()
        by_split = {
            s: {lesion[r] for r in fs.loc[fs["split"] == s, "relpath"]} for s in checks.SPLITS
        }
        assert not by_split["train"] & by_split["val"], f"fold {f}: a lesion in train and val"
        assert not by_split["test"] & (by_split["train"] | by_split["val"])
        assert set(val["label"]) == set(sp["label"])  # stratified: every class validates
        val_rows.append(set(val["relpath"]))
    # every pool image validates exactly once across the folds
    assert sum(map(len, val_rows)) == (~test).sum() and set().union(*val_rows) == set(
        sp.loc[~test, "relpath"]
    )


def test_fold_split_errors_name_the_fix():
    df = pd.DataFrame(
        {
            "relpath": [f"{i}.jpg" for i in range(6)],
            "group": list("aabbcc"),
            "label": ["x", "x", "y", "y", "x", "y"],
            "split": ["train", "train", "val", "val", "test", "test"],
            "fold": [-1] * 6,
        }
    )
    with pytest.raises(ValueError, match="n_folds >= 2"):
        store.fold_split(df, 1)
    df["fold"] = [1, 1, 0, 0, -1, -1]
    assert (
        store.fold_split(df, 1)["split"] == ["val", "val", "train", "train", "test", "test"]
    ).all()
    for bad in (2, -1, 0.5):
        with pytest.raises(ValueError, match=r"fold must be an integer in 0\.\.1"):
            store.fold_split(df, bad)
    df.loc[2, "group"] = "a"  # a lesion in two folds: a leak
    with pytest.raises(checks.SplitError, match="cross splits"):
        store.fold_split(df, 1)


def test_ensemble_averages_member_probabilities():
    torch.manual_seed(0)
    members = [torch.nn.Linear(5, 3) for _ in range(3)]
    x = torch.randn(4, 5)
    out = Ensemble(members)(x)
    want = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    torch.testing.assert_close(out.softmax(1), want, atol=1e-6, rtol=0)
    assert not torch.allclose(want, members[0](x).softmax(1))
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


def test_load_ensemble_and_mismatched_members(tmp_path, demo_manifest):
    df = pick_images(demo_manifest, per_class=4)
    a = train_short_checkpoint(df, tmp_path / "a.pt", size=32, seed=0)
    b = train_short_checkpoint(df, tmp_path / "b.pt", size=32, seed=1)
    ens, info = load_ensemble([a, b])
    assert info["members"] == [str(a), str(b)] and info["arch"].startswith("ensemble of 2")
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    p_ens, _ = predict_batch(ens, x, info["mean"], info["std"], views=2)
    singles = [load_ensemble([p])[0] for p in (a, b)]
    p_each = [predict_batch(m, x, info["mean"], info["std"], views=2)[0] for m in singles]
    np.testing.assert_allclose(p_ens.numpy(), (p_each[0] + p_each[1]).numpy() / 2, atol=1e-6)
    c = train_short_checkpoint(df, tmp_path / "c.pt", size=48, seed=2)
    with pytest.raises(CheckpointError, match=r"differ in \['image_size'\]"):
        load_ensemble([a, c])


def test_fold_layout_and_seeds(tmp_path):
    assert kfold.fold_dir(tmp_path, 0) == tmp_path
    assert kfold.fold_dir(tmp_path, 3) == tmp_path / "folds" / "fold3"
    cfg = TrainConfig(arch="small_cnn", seed=7)
    assert kfold.fold_config(cfg, 0).seed == 7 and kfold.fold_config(cfg, 2).seed == 9
    assert kfold.fold_config(cfg, 2).arch == "small_cnn"
    assert kfold.fold_checkpoints(tmp_path, "best_ema") == []  # not a K-fold run
