"""Intervals that respect lesions and small groups, on synthetic predictions (no real data):
the subgroup table's minimums and Wilson intervals, one interval per number across the
operating points, the headline and the subgroups, compare's groups, the model card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from skinhelpers.evaluate import (
    bootstrap,
    calibration,
    compare,
    decision,
    scores,
    subgroups,
    thresholds,
)
from skinhelpers.files import write_csv, write_json
from skinhelpers.share.model_card import model_card_text

CLASSES = ["akiec", "mel", "nv"]


def _test_set(n_lesions=260, seed=0):
    """A test split of lesions with one to three images each (one label per lesion),
    metadata whose groups range from large to tiny, and probabilities of a fair model
    (images of one lesion alike)."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 2, 3], n_lesions, p=[0.6, 0.25, 0.15])
    lesion_label = rng.choice(3, n_lesions, p=[0.15, 0.25, 0.6])
    lesion_sex = rng.choice(["female", "male"], n_lesions)
    lesion_site = rng.choice(["back", "face", "ear"], n_lesions, p=[0.8, 0.17, 0.03])
    rows, logits = [], []
    for i, (k, lab) in enumerate(zip(sizes, lesion_label)):
        base = rng.normal(0, 1, 3)
        base[lab] += 1.6
        for j in range(k):
            rows.append(
                {
                    "image_id": f"im{i}_{j}",
                    "relpath": f"x/im{i}_{j}.jpg",
                    "group": f"L{i:04d}",
                    "label": CLASSES[lab],
                    "sex": lesion_sex[i],
                    "localization": lesion_site[i],
                    "age": 20 + (i % 50),
                }
            )
            logits.append(base + rng.normal(0, 0.3, 3))
    df = pd.DataFrame(rows)
    df.loc[df.index[:5], "age"] = 85  # a tiny "75+" band: five images
    return df, calibration.softmax(np.array(logits))


@pytest.fixture(scope="module")
def table():
    df, probs = _test_set()
    thr = float(np.quantile(probs[:, 1], 0.75))
    t = subgroups.subgroup_table(df, probs, CLASSES, "mel", thr, n_bootstrap=200, seed=0)
    return df, probs, thr, t


def test_subgroup_table_counts_and_minimums(table):
    df, probs, thr, t = table
    assert set(subgroups.COLUMNS) <= set(t.columns)
    assert (t["n_pos"] + t["n_neg"] == t["n"]).all()
    y = df["label"].to_numpy()
    whole = t[t["attribute"] == "all"].iloc[0]
    assert whole["n_pos"] == (y == "mel").sum() and whole["n_lesions"] == df["group"].nunique()
    # no interval of width zero anywhere
    has_ci = t["ci_low"].notna()
    assert (t.loc[has_ci, "ci_high"] > t.loc[has_ci, "ci_low"]).all()
    # the five-image age band: a value without interval, AUC not reported, never ranked
    old = t[(t["attribute"] == "age_band") & (t["group"] == "75+")].set_index("metric")
    assert (old["n"] == 5).all()
    assert np.isnan(old.loc["balanced_accuracy", "ci_low"])
    assert np.isfinite(old.loc["balanced_accuracy", "value"])
    assert "no interval" in old.loc["balanced_accuracy", "note"]
    assert np.isnan(old.loc["melanoma_auc", "value"])
    assert "AUC not reported" in old.loc["melanoma_auc", "note"]
    assert not old["ranked"].any() and old["rank"].isna().all()
    # the AUC is reported exactly where both counts reach the minimum
    auc = t[t["metric"] == "melanoma_auc"]
    enough = (auc["n_pos"] >= 10) & (auc["n_neg"] >= 10)
    assert auc.loc[enough, "value"].notna().all() and auc.loc[~enough, "value"].isna().all()
    # ranks only among groups that meet their metric's minimum
    ranked = t[t["ranked"]]
    assert len(ranked) and (ranked["attribute"] != "all").all()
    sens = ranked[ranked["metric"] == "sensitivity"]
    assert (sens["n_pos"] >= 10).all()
    assert (ranked["n"] >= 30).all()  # below min_n images nothing is ranked
    assert t.loc[~t["ranked"], "rank"].isna().all()
    # sensitivity: Wilson, shown even for small groups, inside [0, 1] and around the value
    s = t[t["metric"] == "sensitivity"].dropna(subset=["value"])
    assert (s["ci_method"].str.startswith("wilson")).all()
    assert ((s["ci_low"] <= s["value"]) & (s["value"] <= s["ci_high"])).all()
    # the forest plot draws values without intervals, unreported ones, and a percentile
    # interval that misses its estimate (possible for a bootstrap of few lesions)
    import matplotlib

    matplotlib.use("Agg")
    odd = t.copy()
    odd.loc[odd.index[0], "ci_low"] = odd.loc[odd.index[0], "value"] + 0.01
    fig = subgroups.plot_forest(odd)
    assert len(fig.axes) == 4


def test_one_interval_per_number(table):
    """The whole test set's numbers carry the same interval in the subgroup table as in
    the operating points and the headline metrics."""
    df, probs, thr, t = table
    y = df["label"].map(CLASSES.index).to_numpy()
    groups = df["group"].to_numpy()
    whole = t[t["attribute"] == "all"].set_index("metric")
    ci = thresholds.operating_point_ci(y == 1, probs[:, 1], thr, groups)
    for k in ("sensitivity", "specificity"):
        assert whole.loc[k, "ci_low"] == ci[k]["ci_low"]
        assert whole.loc[k, "ci_high"] == ci[k]["ci_high"]
    head = scores.evaluate_predictions(y, probs, CLASSES, 200, 0, groups=groups)
    ba = head["headline"]["balanced_accuracy"]
    assert (
        whole.loc["balanced_accuracy", "ci_low"],
        whole.loc["balanced_accuracy", "ci_high"],
    ) == (
        ba["ci_low"],
        ba["ci_high"],
    )
    assert head["bootstrap"] == {"bootstrap_unit": "group", "n_units": 260, "n_bootstrap": 200}
    pc = thresholds.positive_class_analysis(y, probs, y, probs, 1, n_bootstrap=200, groups=groups)
    assert whole.loc["melanoma_auc", "ci_low"] == pc["auc"]["ci_low"]
    assert whole.loc["melanoma_auc", "value"] == pytest.approx(
        skm.roc_auc_score(y == 1, probs[:, 1])
    )


def test_subgroups_without_groups_say_images(table):
    df, probs, thr, _ = table
    t = subgroups.subgroup_table(
        df.drop(columns=["group"]), probs, CLASSES, "mel", thr, n_bootstrap=50
    )
    boot = t[t["metric"].isin(["balanced_accuracy", "melanoma_auc"]) & t["ci_low"].notna()]
    assert (boot["ci_method"] == "image bootstrap").all()
    assert (t["n_lesions"] == t["n"]).all()


def test_lever_table_resamples_lesions(table):
    df, probs, _, _ = table
    y = df["label"].map(CLASSES.index).to_numpy()
    prior = decision.class_prior(y, 3)
    steps = [("image", probs), ("prior", decision.prior_correction(probs, prior, 0.5))]
    t = decision.lever_table(y, steps, n_bootstrap=60, groups=df["group"])
    assert t.attrs["bootstrap_unit"] == "group"
    d = bootstrap.paired_bootstrap_diff(
        y,
        probs,
        steps[1][1],
        {"b": bootstrap.HEADLINE["balanced_accuracy"]},
        60,
        groups=df["group"],
    )
    row = t[t["metric"] == "balanced_accuracy"].iloc[0]
    assert row["ci_low"] == d.loc["b", "ci_low"]


def _run(path, df, probs, with_group=True, split=False):
    pred = df[["image_id", "relpath", "label"]].copy()
    for i, c in enumerate(CLASSES):
        pred[f"p_{c}"] = probs[:, i]
    pred["pred"] = [CLASSES[i] for i in probs.argmax(1)]
    if with_group:
        pred["group"] = df["group"].to_numpy()
    write_csv(path / "predictions_test.csv", pred)
    if split:
        write_csv(path / "split.csv", df[["relpath", "image_id", "group", "label"]])
    return path


def test_compare_resamples_lesions_and_falls_back(table, tmp_path, capsys):
    df, probs, _, _ = table
    rng = np.random.default_rng(1)
    other = calibration.softmax(np.log(probs) + rng.normal(0, 0.5, probs.shape))
    a = _run(tmp_path / "a", df, probs)
    b = _run(tmp_path / "b", df, other)
    _, diff = compare.compare_runs([a, b], n_bootstrap=80)
    assert (diff["bootstrap_unit"] == "group").all() and (diff["n_groups"] == 260).all()
    y = df["label"].map(CLASSES.index).to_numpy()
    ref = bootstrap.paired_bootstrap_diff(y, probs, other, n_bootstrap=80, groups=df["group"])
    got = diff.set_index("metric")
    assert np.allclose(got.loc[ref.index, "ci_low"].astype(float), ref["ci_low"])
    # an older predictions CSV without groups: the run's split.csv gives them by relpath
    c = _run(tmp_path / "c", df, probs, with_group=False, split=True)
    d = _run(tmp_path / "d", df, other, with_group=False)
    _, diff2 = compare.compare_runs([c, d], n_bootstrap=80)
    assert compare.load_run(c)["groups_source"] == "split.csv"
    assert np.allclose(diff2["ci_low"].astype(float), diff["ci_low"].astype(float))
    # no groups anywhere: images, and said so
    e = _run(tmp_path / "e", df, probs, with_group=False)
    _, diff3 = compare.compare_runs([e, d], n_bootstrap=80)
    assert (diff3["bootstrap_unit"] == "image").all() and diff3["n_groups"].isna().all()
    assert compare.main([str(e), str(d), "--n-bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "resampling images" in out and "too narrow" in out
    assert compare.main([str(a), str(b), "--n-bootstrap", "20"]) == 0
    assert "resampling their lesions" in capsys.readouterr().out


def test_model_card_shows_one_interval_per_number(table, tmp_path):
    """The card: headline intervals said to resample lesions, the operating point's test
    sensitivity with the interval the subgroup table's whole-set row has, small groups
    marked and never with an interval of width zero."""
    df, probs, thr, t = table
    y = df["label"].map(CLASSES.index).to_numpy()
    groups = df["group"].to_numpy()
    pc = thresholds.positive_class_analysis(
        y, probs, y, probs, 1, targets=(0.9,), n_bootstrap=100, groups=groups
    )
    op = pc["operating_points"][0]
    tab = subgroups.subgroup_table(df, probs, CLASSES, "mel", op["threshold"], n_bootstrap=100)
    write_csv(tmp_path / "subgroups.csv", tab)
    res = scores.evaluate_predictions(y, probs, CLASSES, 100, 0, groups=groups)
    write_json(
        tmp_path / "metrics.json",
        {
            "dataset": "demo",
            "synthetic": True,
            "classes": CLASSES,
            "n_test": len(df),
            "n_test_groups": 260,
            "n_bootstrap": 100,
            "bootstrap_unit": "group",
            "primary": "best_ema",
            "models": {"best_ema": {"arch": "x", "epoch": 1, **res}},
            "positive_class": json.loads(json.dumps(pc)),
        },
    )
    card = model_card_text(tmp_path)
    assert f"n = {len(df)} images of 260 lesions" in card
    assert "resamples of the test lesions" in card
    s = op["test_ci"]["sensitivity"]
    assert f"{100 * s['ci_low']:.1f}%–{100 * s['ci_high']:.1f}%" in card  # operating points
    whole = tab[(tab["attribute"] == "all") & (tab["metric"] == "sensitivity")].iloc[0]
    assert f"({whole['ci_low']:.3f}–{whole['ci_high']:.3f})" in card  # subgroups, same interval
    assert whole["ci_low"] == s["ci_low"] and whole["ci_high"] == s["ci_high"]
    assert "Wilson score intervals that count lesions" in card
    sub = card[card.index("## Subgroups") :]
    assert "not reported" in sub and "(no interval) †" in sub
    for lo_hi in __import__("re").findall(r"\((\d\.\d{3})–(\d\.\d{3})\)", sub):
        assert lo_hi[0] != lo_hi[1]  # no interval of width zero
    # a card of a run evaluated before: its intervals are called image-level
    m = json.loads((tmp_path / "metrics.json").read_text())
    del m["bootstrap_unit"], m["n_test_groups"]
    write_json(tmp_path / "metrics.json", m)
    assert "image-level" in model_card_text(tmp_path)
