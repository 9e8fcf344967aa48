"""Subgroup table and run comparison on real HAM10000 test predictions of short-trained
checkpoints (two seeds), plus the TensorBoard hparams log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from short_checkpoint import train_short_checkpoint
from sklearn import metrics as skm

from skinhelpers.data import manifest as datasets
from skinhelpers.evaluate import bootstrap, compare, subgroups
from skinhelpers.evaluate.predict import predict_images
from skinhelpers.files import write_csv, write_json
from skinhelpers.split import grouped

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def ham_runs(ham_manifest, tmp_path_factory):
    """Two run folders (seeds 0 and 1) with the test predictions notebook 08 writes."""
    df = datasets.subsample(ham_manifest, 500, seed=0)
    split = df.merge(
        grouped.grouped_split(df, val_size=0.2, test_size=0.4, seed=0)[["relpath", "split"]],
        on="relpath",
    )
    train = split[split["split"] == "train"].reset_index(drop=True)
    train.attrs = df.attrs
    test = split[split["split"] == "test"].reset_index(drop=True)
    classes = list(df.attrs["classes"])
    runs = []
    for seed in (0, 1):
        run = tmp_path_factory.mktemp("runs") / f"ham-seed{seed}"
        ck = train_short_checkpoint(
            train.groupby("label").head(10).reset_index(drop=True),
            run / "checkpoints" / "best.pt",
            size=32,
            steps=5,
            seed=seed,
        )
        pred = predict_images(
            ck, list(test["path"]), batch_size=64, device="cpu", show_progress=False
        )
        assert list(pred["path"]) == list(test["path"])
        out = test[["image_id", "relpath", "label"]].copy()
        for c in classes:
            out[f"p_{c}"] = pred[f"p_{c}"].to_numpy()
        out["pred"] = pred["pred"].to_numpy()
        out["group"] = test["group"].to_numpy()  # the lesion, as notebook 08 writes it
        write_csv(run / "predictions_test.csv", out)
        write_json(
            run / "run.json",
            {"parameters": {"seed": seed, "image_size": 32, "trial_models": ["small_cnn"]}},
        )
        runs.append(run)
    return runs, test, classes


def test_age_bands():
    got = subgroups.age_band([5, 29.9, 30, 44, 45, 60, 74, 75, 90, None]).tolist()
    assert got == [
        "<30",
        "<30",
        "30-44",
        "30-44",
        "45-59",
        "60-74",
        "60-74",
        "75+",
        "75+",
        "unknown",
    ]


def test_subgroup_table_on_ham_test_predictions(ham_runs):
    runs, test, classes = ham_runs
    pred = pd.read_csv(runs[0] / "predictions_test.csv")
    probs = pred[[f"p_{c}" for c in classes]].to_numpy()
    p_mel = probs[:, classes.index("mel")]
    thr = float(np.quantile(p_mel, 0.7))
    t = subgroups.subgroup_table(
        test, probs, classes, "mel", thr, n_bootstrap=60, seed=0, min_n=25, min_pos=5
    )
    assert {"sex", "age_band", "localization"} <= set(t["attribute"])
    assert "dx_type" not in set(t["attribute"])  # descriptive only, never a subgroup
    assert set(t["metric"]) == set(subgroups.METRICS)
    y = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    ba = t[(t["attribute"] == "all") & (t["metric"] == "balanced_accuracy")].iloc[0]
    assert ba["n"] == len(test)
    assert ba["value"] == pytest.approx(skm.balanced_accuracy_score(y, probs.argmax(1)))
    sens = t[(t["attribute"] == "all") & (t["metric"] == "sensitivity")].iloc[0]
    mel = y == classes.index("mel")
    assert sens["value"] == pytest.approx(np.mean(p_mel[mel] >= thr))
    for attr, g in t[t["metric"] == "balanced_accuracy"].groupby("attribute"):
        assert g["n"].sum() == len(test), attr  # every image in exactly one group
    ok = t["value"].notna() & t["ci_low"].notna()
    assert (t.loc[ok, "ci_low"] <= t.loc[ok, "value"] + 1e-9).all()
    assert (t.loc[ok, "value"] <= t.loc[ok, "ci_high"] + 1e-9).all()
    small = t[t["n"] < 25]
    assert len(small) and not small["ranked"].any() and small["rank"].isna().all()
    ranked = t[t["ranked"] & (t["attribute"] == "sex") & (t["metric"] == "balanced_accuracy")]
    assert min(ranked["rank"].tolist()) == 1
    # the lesions: counted, and the bootstrap resamples them
    whole = t[t["attribute"] == "all"].iloc[0]
    assert whole["n_lesions"] == test["group"].nunique() < len(test)
    assert whole["n_pos"] == mel.sum() and whole["n_neg"] == (~mel).sum()
    assert (t["n_pos"] + t["n_neg"] == t["n"]).all()
    boot = t[t["metric"].isin(["balanced_accuracy", "melanoma_auc"]) & t["ci_low"].notna()]
    assert (boot["ci_method"] == "group bootstrap").all()
    # an AUC only from 5 melanomas and 5 others; never an interval of width zero
    auc = t[t["metric"] == "melanoma_auc"]
    few = (auc["n_pos"] < 5) | (auc["n_neg"] < 5)
    assert auc.loc[few, "value"].isna().all() and auc.loc[~few, "value"].notna().all()
    has_ci = t["ci_low"].notna()
    assert (t.loc[has_ci, "ci_high"] > t.loc[has_ci, "ci_low"]).all()
    fig = subgroups.plot_forest(t)
    assert len(fig.axes) == 4
    dx = subgroups.dx_type_table(test)
    assert dx.loc["All", "All"] == len(test)


def test_compare_two_seeds(ham_runs, capsys):
    runs, test, _ = ham_runs
    side, diff = compare.compare_runs(runs, n_bootstrap=50)
    assert list(side.columns) == [r.name for r in runs]
    assert set(diff["metric"]) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_macro_ovr"}
    assert (diff["n_shared"] == len(test)).all()
    assert (diff["bootstrap_unit"] == "group").all()
    assert (diff["n_groups"] == test["group"].nunique()).all()
    assert (
        (diff["ci_low"] <= diff["diff"] + 1e-9) & (diff["diff"] <= diff["ci_high"] + 1e-9)
    ).all()
    ba = diff.set_index("metric").loc["balanced_accuracy"]
    assert ba["a"] == pytest.approx(side.loc["balanced_accuracy", runs[0].name])
    assert compare.main([str(r) for r in runs] + ["--n-bootstrap", "30"]) == 0
    assert "Paired bootstrap" in capsys.readouterr().out
    assert len(pd.read_csv(runs[0] / "compare.csv")) == 4


def test_compare_takes_a_predictions_csv(ham_runs, tmp_path):
    """A K-fold run's predictions_test_ensemble.csv (any predictions CSV) is compared like
    a run: headline from the CSV itself, paired on the shared images."""
    runs, test, _ = ham_runs
    pred = pd.read_csv(runs[1] / "predictions_test.csv")
    csv = tmp_path / "predictions_test_ensemble.csv"
    write_csv(csv, pred)
    side, diff = compare.compare_runs([runs[1], csv], n_bootstrap=20)
    assert list(side.columns) == [runs[1].name, f"{tmp_path.name}/predictions_test_ensemble"]
    assert (diff["diff"].abs() < 1e-12).all() and (diff["n_shared"] == len(test)).all()
    y, p = compare._arrays(pred, compare.load_run(runs[1])["classes"])
    ba = side.loc["balanced_accuracy"].iloc[1]
    assert ba == pytest.approx(bootstrap.HEADLINE["balanced_accuracy"](y, p))
    write_csv(tmp_path / "bad.csv", pred.drop(columns=["relpath"]))
    with pytest.raises(compare.CompareError, match="not a predictions CSV"):
        compare.load_run(tmp_path / "bad.csv")


def test_compare_refuses_other_classes_and_disjoint_tests(ham_runs, tmp_path, capsys):
    runs, _, _ = ham_runs
    pred = pd.read_csv(runs[1] / "predictions_test.csv")
    other = tmp_path / "other"
    write_csv(other / "predictions_test.csv", pred.rename(columns={"p_vasc": "p_vascular"}))
    with pytest.raises(compare.CompareError, match="different classes"):
        compare.compare_runs([runs[0], other])
    disjoint = tmp_path / "disjoint"
    write_csv(disjoint / "predictions_test.csv", pred.assign(relpath="x/" + pred["relpath"]))
    with pytest.raises(compare.CompareError, match="share no test image"):
        compare.compare_runs([runs[0], disjoint])
    assert compare.main([str(runs[0]), str(disjoint)]) == 2
    assert "share no test image" in capsys.readouterr().err


def test_log_hparams_writes_tensorboard_events(ham_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = ham_runs[0][0]
    tb = compare.log_hparams(run, metrics={"balanced_accuracy": 0.5, "macro_auc": 0.7})
    assert list(Path(tb).glob("events.out.tfevents.*"))  # the hparams summary
    acc = EventAccumulator(str(Path(tb) / "hparams"))  # the metrics, as scalars
    acc.Reload()
    assert "hparam/balanced_accuracy" in acc.Tags()["scalars"]
    assert acc.Scalars("hparam/balanced_accuracy")[0].value == pytest.approx(0.5)


def test_compare_refuses_too_few_shared_lesions_and_says_the_splits_differ(
    ham_runs, tmp_path, capsys
):
    """Two smoke runs with seeds 0 and 1 shared one test image and compare printed 0.0
    (0.0-0.0): now it refuses below --min-shared lesions, naming the numbers, and says
    how the runs' splits differ."""
    runs, test, _ = ham_runs
    pred = pd.read_csv(runs[1] / "predictions_test.csv")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_csv(a / "predictions_test.csv", pd.read_csv(runs[0] / "predictions_test.csv"))
    few = pred.assign(relpath=["x/" + r if i >= 5 else r for i, r in enumerate(pred["relpath"])])
    write_csv(b / "predictions_test.csv", few)
    write_csv(c / "predictions_test.csv", pred)
    split = {
        "dataset": "ham10000",
        "seed": 0,
        "test_method": "StratifiedGroupKFold",
        "val_size": 0.2,
        "test_size": 0.4,
        "n_folds": 0,
        "test_fingerprint": "aaaa",
    }
    write_json(a / "split.json", split)
    write_json(b / "split.json", {**split, "seed": 1, "test_fingerprint": "bbbb"})
    write_json(c / "split.json", {**split, "seed": 1})
    n_les = pred["group"].head(5).nunique()
    with pytest.raises(compare.CompareError) as e:
        compare.compare_runs([a, b])
    msg = str(e.value)
    assert f"share 5 test image(s) of {n_les} lesion(s) (of {len(test)} and {len(test)}" in msg
    assert "fewer than the 30 shared lesion(s)" in msg
    assert "split seed 0 vs 1; different test images" in msg and "split_seed" in msg
    assert compare.main([str(a), str(b), "--n-bootstrap", "20"]) == 2
    assert "fewer than the 30" in capsys.readouterr().err
    # a lower minimum, asked for, is honoured
    _, diff = compare.compare_runs([a, b], n_bootstrap=20, min_shared=n_les)
    assert (diff["n_shared"] == 5).all() and (diff["n_groups"] == n_les).all()
    # the same test images under another split seed (a shipped test set, say): compared,
    # with a note
    _, diff = compare.compare_runs([a, c], n_bootstrap=20)
    assert (diff["split"] == "split seed 0 vs 1").all()
    assert diff.attrs["splits"] == {"c": ["split seed 0 vs 1"]}
    assert compare.main([str(a), str(c), "--n-bootstrap", "20"]) == 0
    assert "Note: the splits of a and c differ (split seed 0 vs 1)" in capsys.readouterr().out
    assert compare.split_differences(split, dict(split)) == []
    assert compare.split_differences(split, None) == [
        "unknown (no split.json beside one of the predictions)"
    ]
