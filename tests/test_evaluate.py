"""Evaluation metrics, bootstrap CIs, clinical operating points and calibration."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn
from sklearn import metrics as skm

from skinhelpers.evaluate import bootstrap, calibration, score_plots, scores, thresholds
from skinhelpers.model.metrics import classification_metrics


def _toy(n=600, c=4, seed=0, sharp=2.0):
    """Labels and probabilities of a decent but imperfect classifier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += sharp
    return y, calibration.softmax(logits), logits


def test_metrics_match_sklearn():
    y, p, _ = _toy()
    pred = p.argmax(1)
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        assert m[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg))
        assert m[f"precision_{avg}"] == pytest.approx(skm.precision_score(y, pred, average=avg))
        assert m[f"recall_{avg}"] == pytest.approx(skm.recall_score(y, pred, average=avg))
    assert m["roc_auc_macro_ovr"] == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    )
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    rep = scores.per_class_report(y, p, ["a", "b", "c", "d"])
    assert rep.loc["c", "recall"] == pytest.approx(skm.recall_score(y == 2, pred == 2))
    assert rep.loc["b", "roc_auc"] == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]))
    assert rep.loc["d", "pr_auc"] == pytest.approx(skm.average_precision_score(y == 3, p[:, 3]))
    assert rep["support"].sum() == len(y)
    cm = scores.confusion(y, p, normalize="true")
    assert np.allclose(cm.sum(1), 1)
    assert np.allclose(np.diag(cm), rep["recall"].to_numpy())


def test_known_values_and_binary():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["roc_auc_macro_ovr"] == pytest.approx(1.0)  # every positive outranks negatives
    assert m["recall_macro"] == pytest.approx(0.75)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="rows"):
        classification_metrics([0, 1], np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics([0, 5], np.full((2, 2), 0.5))


def test_bootstrap_ci_contains_estimate_and_shrinks_with_n():
    y, p, _ = _toy(n=400)
    t = bootstrap.bootstrap_ci(y, p, n_bootstrap=200, seed=1)
    assert set(t.index) == set(bootstrap.HEADLINE)
    assert ((t["ci_low"] <= t["value"]) & (t["value"] <= t["ci_high"])).all()
    assert (t["ci_high"] - t["ci_low"] > 0).all()
    assert t.loc["accuracy", "value"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    y2, p2, _ = _toy(n=4000)
    t2 = bootstrap.bootstrap_ci(
        y2, p2, {"accuracy": bootstrap.HEADLINE["accuracy"]}, n_bootstrap=200, seed=1
    )
    w = (t["ci_high"] - t["ci_low"])["accuracy"]
    w2 = (t2["ci_high"] - t2["ci_low"])["accuracy"]
    assert w2 < w * 0.6  # ~ 1/sqrt(10)
    # reproducible
    assert bootstrap.bootstrap_ci(y, p, n_bootstrap=50, seed=3).equals(
        bootstrap.bootstrap_ci(y, p, n_bootstrap=50, seed=3)
    )


def _lesions(n, rng, share=0.4):
    """Group ids where about ``share`` of the images repeat the lesion before them."""
    g = np.arange(n)
    for i in range(1, n):
        if rng.random() < share:
            g[i] = g[i - 1]
    return g


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_vectorised_headline_equals_each_metric_on_each_resample(classes):
    """The bootstrap scores HEADLINE on all resamples at once; it must give what each
    scikit-learn metric gives on each resample written out, for image and for group
    (lesion) resamples, also with tied scores, classes missing from a resample (plain,
    not stratified), a class never predicted, and tiny sets."""
    rng = np.random.default_rng(classes)
    for n, stratified, grouped in (
        (300, True, False),
        (300, False, False),
        (9, False, False),
        (300, True, True),
        (300, False, True),
        (12, True, True),
    ):
        y = rng.integers(0, classes, n)
        y[: classes - 1] = np.arange(classes - 1)  # the last class may be absent
        groups = _lesions(n, rng) if grouped else None
        if grouped:
            y = y[np.searchsorted(np.unique(groups), groups)]  # one label per lesion
        probs = rng.dirichlet(np.ones(classes), n).round(1)  # many ties
        probs[:, -1] *= 0.1  # the last class is rarely predicted
        probs /= probs.sum(1, keepdims=True)
        w = bootstrap.bootstrap_weights(y, 60, seed=1, stratified=stratified, groups=groups)
        w[-1] = 0
        w[-1, 0] = 3  # one image repeated: a single class, the AUC undefined
        idx = bootstrap.indices_from_weights(w)
        fast = bootstrap.headline_weighted(y, probs, w)
        assert np.array_equal(bootstrap.headline_resampled(y, probs, idx), fast, equal_nan=True)
        with warnings.catch_warnings(), sklearn.config_context(skip_parameter_validation=True):
            warnings.simplefilter("ignore")
            slow = np.array([[f(y[i], probs[i]) for f in bootstrap.HEADLINE.values()] for i in idx])
        assert fast.shape == slow.shape == (60, len(bootstrap.HEADLINE))
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9, equal_nan=True)
        assert np.isnan(slow[-1, 3]) and np.isfinite(slow[:-1, :3]).all()
        if grouped:  # group resamples vary in size: the test is not vacuous
            assert len({len(i) for i in idx[:-1]}) > 1


def test_bootstrap_ci_by_group_equals_sklearn_on_the_same_resamples():
    """bootstrap_ci with groups: its quantiles are those of scikit-learn's metrics on the
    group resamples written out (bootstrap_indices with the same seed)."""
    rng = np.random.default_rng(5)
    y, p, _ = _toy(n=240, c=3, seed=5)
    groups = _lesions(len(y), rng)
    y = y[np.searchsorted(np.unique(groups), groups)]
    t = bootstrap.bootstrap_ci(y, p, n_bootstrap=80, seed=2, groups=groups)
    idx = bootstrap.bootstrap_indices(y, 80, seed=2, groups=groups)
    for k, f in bootstrap.HEADLINE.items():
        vals = [f(y[i], p[i]) for i in idx]
        lo, hi = np.quantile(vals, [0.025, 0.975])
        assert t.loc[k, "ci_low"] == pytest.approx(lo, abs=1e-9)
        assert t.loc[k, "ci_high"] == pytest.approx(hi, abs=1e-9)
    assert t.attrs == {"bootstrap_unit": "group", "n_units": len(np.unique(groups))}
    assert bootstrap.bootstrap_ci(y, p, n_bootstrap=5).attrs["bootstrap_unit"] == "image"


def test_two_images_of_one_lesion_always_travel_together():
    """Group resamples draw whole lesions: the images of a lesion appear equally often in
    every resample (the image bootstrap breaks this at once), each class keeps its number
    of lesions, and a lesion's class is its most common label."""
    y = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 2, 1, 1])
    groups = np.array(["a", "a", "b", "b", "c", "d", "d", "e", "f", "g", "h", "h"])
    for g, together in ((groups, True), (None, False)):
        w = bootstrap.bootstrap_weights(y, 400, seed=0, groups=g)
        pairs = [(0, 1), (2, 3), (5, 6), (10, 11)]  # images of one lesion
        same = all(np.array_equal(w[:, i], w[:, j]) for i, j in pairs)
        assert same == together
    w = bootstrap.bootstrap_weights(y, 400, seed=0, groups=groups)
    lesion_w = w[:, [0, 2, 4, 5, 7, 8, 9, 10]]  # one image per lesion
    lesion_class = np.array([0, 1, 1, 2, 0, 1, 2, 1])
    for c in range(3):  # stratified by lesion class: as many lesions drawn as it has
        assert (lesion_w[:, lesion_class == c].sum(1) == (lesion_class == c).sum()).all()
    assert (w.sum(1) != len(y)).any()  # so the number of images varies
    # a lesion of two labels counts as its most common one
    mixed = bootstrap.bootstrap_weights([0, 1, 1, 0], 50, seed=1, groups=["x", "x", "x", "y"])
    assert (mixed[:, 0] == mixed[:, 1]).all() and (mixed[:, 0] == 1).all()


def test_wilson_interval_known_values():
    """8 of 10 at 95%: 0.4902-0.9433 (the textbook value; scipy's binomtest agrees), and
    never a zero-width interval at 0 or 100%."""
    from scipy.stats import binomtest

    lo, hi = bootstrap.wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    for k, n in ((0, 7), (7, 7), (3, 41), (120, 130)):
        ref = binomtest(k, n).proportion_ci(method="wilson")
        assert bootstrap.wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert bootstrap.wilson_interval(7, 7)[0] < 0.7 and bootstrap.wilson_interval(0, 7)[1] > 0.3
    assert np.isnan(bootstrap.wilson_interval(0, 0)).all()


def test_proportion_ci_counts_lesions_not_repeated_images():
    """Each lesion photographed twice with the same outcome carries the information of one
    image: 16 of 20 images in 10 such lesions get the interval of 8 of 10; one image per
    lesion is the plain Wilson interval."""
    plain = bootstrap.proportion_ci([True] * 8 + [False] * 2)
    assert (plain["ci_low"], plain["ci_high"]) == pytest.approx(bootstrap.wilson_interval(8, 10))
    twice = bootstrap.proportion_ci([True] * 16 + [False] * 4, np.repeat(np.arange(10), 2))
    assert twice["value"] == 0.8 and twice["n"] == 20
    assert twice["n_effective"] == pytest.approx(10)
    assert (twice["ci_low"], twice["ci_high"]) == pytest.approx(bootstrap.wilson_interval(8, 10))
    single = bootstrap.proportion_ci([True] * 8 + [False] * 2, np.arange(10))
    assert single["ci_low"] == pytest.approx(plain["ci_low"])
    # all agree: the design effect is not estimable; the lesions are counted
    allhit = bootstrap.proportion_ci([True] * 6, ["a", "a", "b", "b", "c", "c"])
    assert (allhit["ci_low"], allhit["ci_high"]) == pytest.approx(bootstrap.wilson_interval(3, 3))


def test_stratified_bootstrap_keeps_class_counts():
    y = np.array([0] * 50 + [1] * 3 + [2] * 7)
    idx = bootstrap.bootstrap_indices(y, 20, seed=0)
    for row in idx:
        assert np.array_equal(np.bincount(y[row], minlength=3), np.bincount(y))


def test_thresholds_meet_targets_on_the_data_they_were_chosen_on():
    rng = np.random.default_rng(0)
    yp = rng.random(2000) < 0.2
    s = np.clip(rng.normal(0.35 + 0.3 * yp, 0.15), 0, 1)
    t = thresholds.threshold_for_specificity(yp, s, 0.95)
    op = thresholds.operating_point(yp, s, t)
    assert op["specificity"] >= 0.95
    # the most sensitive such threshold: catching one more melanoma breaks the target
    lower = s[(s < t) & yp].max()  # the next positive below the threshold
    assert thresholds.operating_point(yp, s, lower)["specificity"] < 0.95
    t2 = thresholds.threshold_for_sensitivity(yp, s, 0.9)
    op2 = thresholds.operating_point(yp, s, t2)
    assert op2["sensitivity"] >= 0.9
    assert thresholds.operating_point(yp, s, s[(s > t2) & yp].min())["sensitivity"] < 0.9
    assert op["tp"] + op["fn"] == yp.sum()
    tn, fp, fn, tp = skm.confusion_matrix(yp, s >= t).ravel()
    assert (op["tn"], op["fp"], op["fn"], op["tp"]) == (tn, fp, fn, tp)
    assert op["sensitivity"] == pytest.approx(skm.recall_score(yp, s >= t))
    assert op["ppv"] == pytest.approx(skm.precision_score(yp, s >= t))


def test_positive_class_analysis_words_and_numbers():
    y, p, _ = _toy(n=800, c=3, seed=2)
    yv, pv, _ = _toy(n=800, c=3, seed=3)
    out = thresholds.positive_class_analysis(
        yv, pv, y, p, pos=1, name="melanoma", targets=(0.95,), n_bootstrap=100
    )
    assert out["auc"]["value"] == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]))
    assert out["auc"]["ci_low"] <= out["auc"]["value"] <= out["auc"]["ci_high"]
    assert out["bootstrap_unit"] == "image"
    assert len(out["operating_points"]) == 2
    spec_pt = out["operating_points"][0]
    assert spec_pt["validation"]["specificity"] >= 0.95
    sens = spec_pt["test"]["sensitivity"]
    assert f"{100 * sens:.1f}%" in out["sentences"][1]
    assert "melanoma" in out["sentences"][1] and "validation" in out["sentences"][1]
    # sensitivity: a Wilson interval of the test melanomas found
    t = spec_pt["test"]
    ci = spec_pt["test_ci"]["sensitivity"]
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx(
        bootstrap.wilson_interval(t["tp"], t["tp"] + t["fn"])
    )


def test_positive_class_analysis_by_lesion():
    """With the test lesions: the AUC resamples lesions, the operating points count them,
    and the record says so."""
    rng = np.random.default_rng(7)
    y, p, _ = _toy(n=600, c=3, seed=7)
    groups = _lesions(len(y), rng, share=0.5)
    y = y[np.searchsorted(np.unique(groups), groups)]
    yv, pv, _ = _toy(n=400, c=3, seed=8)
    out = thresholds.positive_class_analysis(
        yv, pv, y, p, 1, targets=(0.9,), n_bootstrap=60, groups=groups
    )
    assert out["bootstrap_unit"] == "group" and out["n_units"] == len(np.unique(groups))
    assert out["n_test_pos_groups"] == len(np.unique(groups[y == 1]))
    t = bootstrap.bootstrap_ci(
        (y == 1).astype(int),
        np.stack([1 - p[:, 1], p[:, 1]], 1),
        thresholds.binary_auc_fns(),
        60,
        groups=groups,
    )
    assert out["auc"]["ci_low"] == t.loc["auc", "ci_low"]
    op = out["operating_points"][0]
    assert op["test_ci"] == thresholds.operating_point_ci(y == 1, p[:, 1], op["threshold"], groups)
    assert op["test_ci"]["sensitivity"]["n_effective"] <= op["test"]["tp"] + op["test"]["fn"]


def test_ece_and_temperature_scaling():
    rng = np.random.default_rng(0)
    n, c = 3000, 5
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.5
    over = logits * 4.0  # an over-confident model: same ranking, logits too large
    yv, lv = y[:1500], over[:1500]
    yt, lt = y[1500:], over[1500:]
    ece_before = calibration.expected_calibration_error(yt, calibration.softmax(lt))
    temp = calibration.fit_temperature(lv, yv)
    # Bayes posterior here is softmax(1.5 * logits): the right temperature is 4 / 1.5
    assert temp == pytest.approx(4.0 / 1.5, rel=0.05)
    ece_after = calibration.expected_calibration_error(yt, calibration.apply_temperature(lt, temp))
    assert ece_after < ece_before / 2
    summ = calibration.calibration_summary(yv, lv, yt, lt)
    assert summ["after"]["nll"] < summ["before"]["nll"]
    # accuracy is unchanged by a temperature
    assert (calibration.apply_temperature(lt, temp).argmax(1) == lt.argmax(1)).all()
    # a perfectly calibrated toy: confidence 0.8, right 80% of the time
    yc = np.array([0] * 80 + [1] * 20)
    pc = np.tile([0.8, 0.2], (100, 1))
    assert calibration.expected_calibration_error(yc, pc) == pytest.approx(0.0, abs=1e-12)
    assert calibration.expected_calibration_error(np.ones(100, int), pc) == pytest.approx(0.8)


def test_prediction_frame_and_worst_errors():
    import pandas as pd

    df = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "relpath": ["x/a", "x/b", "x/c"],
            "label": ["mel", "nv", "nv"],
        }
    )
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    f = scores.prediction_frame(df, p, ["mel", "nv"])
    assert list(f["pred"]) == ["mel", "mel", "nv"]
    assert list(f.columns[:5]) == ["image_id", "relpath", "label", "p_mel", "p_nv"]
    assert "group" not in f.columns  # only when the frame has the lesions
    assert list(
        scores.prediction_frame(df.assign(group=["g1", "g1", "g2"]), p, ["mel", "nv"])["group"]
    ) == ["g1", "g1", "g2"]
    w = scores.worst_errors(f, ["mel", "nv"])
    assert list(w["image_id"]) == ["b"] and w["p_true"].iloc[0] == pytest.approx(0.3)


def test_plots_render(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    y, p, _ = _toy(n=200, c=3)
    classes = ["a", "b", "c"]
    for fig in (
        score_plots.plot_confusion_matrices(y, p, classes),
        score_plots.plot_roc_pr_curves(y, p, classes),
        score_plots.plot_reliability(y, {"raw": p}),
        score_plots.plot_roc_pr_curves(y % 2, np.stack([1 - p[:, 0], p[:, 0]], 1), ["n", "p"]),
    ):
        fig.savefig(tmp_path / "x.png")
        assert (tmp_path / "x.png").stat().st_size > 5000


def test_paired_bootstrap_difference():
    y, p, logits = _toy(n=500, seed=4)
    worse = calibration.softmax(logits + np.random.default_rng(9).normal(0, 2.0, logits.shape))
    t = bootstrap.paired_bootstrap_diff(y, worse, p, n_bootstrap=200)
    acc = t.loc["accuracy"]
    assert acc["diff"] == pytest.approx(
        skm.accuracy_score(y, p.argmax(1)) - skm.accuracy_score(y, worse.argmax(1))
    )
    assert acc["ci_low"] > 0 and acc["p_better"] > 0.95  # clearly better, beyond noise
    same = bootstrap.paired_bootstrap_diff(y, p, p.copy(), n_bootstrap=50)
    assert (
        (same["diff"] == 0).all() and (same["ci_low"] == 0).all() and (same["ci_high"] == 0).all()
    )
    # by lesion: each image its own lesion gives the image bootstrap's resamples exactly
    by_image = bootstrap.paired_bootstrap_diff(y, worse, p, n_bootstrap=100, seed=3)
    singletons = bootstrap.paired_bootstrap_diff(
        y, worse, p, n_bootstrap=100, seed=3, groups=np.arange(len(y)) + 1000
    )
    assert np.allclose(by_image.to_numpy(), singletons.to_numpy())
    assert singletons.attrs["bootstrap_unit"] == "group" and by_image.attrs["n_units"] == len(y)
    # lesions of four images each: fewer independent units, a wider interval
    y4 = np.repeat(y[:125], 4)
    p4, w4 = np.repeat(p[:125], 4, axis=0), np.repeat(worse[:125], 4, axis=0)
    g4 = np.repeat(np.arange(125), 4)
    narrow = bootstrap.paired_bootstrap_diff(
        y4, w4, p4, {"accuracy": bootstrap.HEADLINE["accuracy"]}, 300
    )
    wide = bootstrap.paired_bootstrap_diff(
        y4, w4, p4, {"accuracy": bootstrap.HEADLINE["accuracy"]}, 300, groups=g4
    )
    width = lambda t: float(t["ci_high"].iloc[0] - t["ci_low"].iloc[0])  # noqa: E731
    assert width(wide) > 1.5 * width(narrow)  # ~ sqrt(4) = 2


def test_absent_classes_are_left_out_not_scored_zero():
    """A class with no test image that is never predicted must not drag macro F1 down;
    its per-class recall is undefined (NaN)."""
    y = np.array([0, 0, 1, 1, 1])
    p = np.array(
        [[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]]
    )
    m = classification_metrics(y, p)
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, p.argmax(1), average="macro"))
    assert m["f1_macro"] == pytest.approx(
        skm.f1_score(y, p.argmax(1), average="macro", labels=[0, 1])
    )
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["roc_auc_macro_ovr"] == pytest.approx(
        np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in (0, 1)])
    )
    rep = scores.per_class_report(y, p, ["a", "b", "c"])
    assert rep.loc["c", "support"] == 0 and np.isnan(rep.loc["c", "recall"])
    assert rep.loc["a", "recall"] == pytest.approx(0.5)
