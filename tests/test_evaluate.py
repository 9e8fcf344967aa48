"""Evaluation metrics, bootstrap CIs, clinical operating points and calibration."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from skinhelpers.evaluate import scores as ev
from skinhelpers.model.metrics import classification_metrics


def _toy(n=600, c=4, seed=0, sharp=2.0):
    """Labels and probabilities of a decent but imperfect classifier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += sharp
    return y, ev.softmax(logits), logits


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
    rep = ev.per_class_report(y, p, ["a", "b", "c", "d"])
    assert rep.loc["c", "recall"] == pytest.approx(skm.recall_score(y == 2, pred == 2))
    assert rep.loc["b", "roc_auc"] == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]))
    assert rep.loc["d", "pr_auc"] == pytest.approx(skm.average_precision_score(y == 3, p[:, 3]))
    assert rep["support"].sum() == len(y)
    cm = ev.confusion(y, p, normalize="true")
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
    t = ev.bootstrap_ci(y, p, n_bootstrap=200, seed=1)
    assert set(t.index) == set(ev.HEADLINE)
    assert ((t["ci_low"] <= t["value"]) & (t["value"] <= t["ci_high"])).all()
    assert (t["ci_high"] - t["ci_low"] > 0).all()
    assert t.loc["accuracy", "value"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    y2, p2, _ = _toy(n=4000)
    t2 = ev.bootstrap_ci(y2, p2, {"accuracy": ev.HEADLINE["accuracy"]}, n_bootstrap=200, seed=1)
    w = (t["ci_high"] - t["ci_low"])["accuracy"]
    w2 = (t2["ci_high"] - t2["ci_low"])["accuracy"]
    assert w2 < w * 0.6  # ~ 1/sqrt(10)
    # reproducible
    assert ev.bootstrap_ci(y, p, n_bootstrap=50, seed=3).equals(
        ev.bootstrap_ci(y, p, n_bootstrap=50, seed=3)
    )


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_vectorised_headline_equals_each_metric_on_each_resample(classes):
    """The bootstrap scores HEADLINE on all resamples at once; it must give what each
    scikit-learn metric gives on each resample, also with tied scores, classes missing
    from a resample (plain, not stratified), a class never predicted, and tiny sets."""
    rng = np.random.default_rng(classes)
    for n, stratified in ((300, True), (300, False), (9, False)):
        y = rng.integers(0, classes, n)
        y[: classes - 1] = np.arange(classes - 1)  # the last class may be absent
        probs = rng.dirichlet(np.ones(classes), n).round(1)  # many ties
        probs[:, -1] *= 0.1  # the last class is rarely predicted
        probs /= probs.sum(1, keepdims=True)
        idx = ev.bootstrap_indices(y, 60, seed=1, stratified=stratified)
        idx[-1] = 0  # one image repeated: a single class, the AUC undefined
        fast = ev.headline_resampled(y, probs, idx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slow = np.array([[f(y[i], probs[i]) for f in ev.HEADLINE.values()] for i in idx])
        assert fast.shape == slow.shape == (60, len(ev.HEADLINE))
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9, equal_nan=True)
        assert np.isnan(slow[-1, 3]) and np.isfinite(slow[:-1, :3]).all()


def test_stratified_bootstrap_keeps_class_counts():
    y = np.array([0] * 50 + [1] * 3 + [2] * 7)
    idx = ev.bootstrap_indices(y, 20, seed=0)
    for row in idx:
        assert np.array_equal(np.bincount(y[row], minlength=3), np.bincount(y))


def test_thresholds_meet_targets_on_the_data_they_were_chosen_on():
    rng = np.random.default_rng(0)
    yp = rng.random(2000) < 0.2
    s = np.clip(rng.normal(0.35 + 0.3 * yp, 0.15), 0, 1)
    t = ev.threshold_for_specificity(yp, s, 0.95)
    op = ev.operating_point(yp, s, t)
    assert op["specificity"] >= 0.95
    # the most sensitive such threshold: catching one more melanoma breaks the target
    lower = s[(s < t) & yp].max()  # the next positive below the threshold
    assert ev.operating_point(yp, s, lower)["specificity"] < 0.95
    t2 = ev.threshold_for_sensitivity(yp, s, 0.9)
    op2 = ev.operating_point(yp, s, t2)
    assert op2["sensitivity"] >= 0.9
    assert ev.operating_point(yp, s, s[(s > t2) & yp].min())["sensitivity"] < 0.9
    assert op["tp"] + op["fn"] == yp.sum()
    tn, fp, fn, tp = skm.confusion_matrix(yp, s >= t).ravel()
    assert (op["tn"], op["fp"], op["fn"], op["tp"]) == (tn, fp, fn, tp)
    assert op["sensitivity"] == pytest.approx(skm.recall_score(yp, s >= t))
    assert op["ppv"] == pytest.approx(skm.precision_score(yp, s >= t))


def test_positive_class_analysis_words_and_numbers():
    y, p, _ = _toy(n=800, c=3, seed=2)
    yv, pv, _ = _toy(n=800, c=3, seed=3)
    out = ev.positive_class_analysis(
        yv, pv, y, p, pos=1, name="melanoma", targets=(0.95,), n_bootstrap=100
    )
    assert out["auc"]["value"] == pytest.approx(skm.roc_auc_score(y == 1, p[:, 1]))
    assert out["auc"]["ci_low"] <= out["auc"]["value"] <= out["auc"]["ci_high"]
    assert len(out["operating_points"]) == 2
    spec_pt = out["operating_points"][0]
    assert spec_pt["validation"]["specificity"] >= 0.95
    sens = spec_pt["test"]["sensitivity"]
    assert f"{100 * sens:.1f}%" in out["sentences"][1]
    assert "melanoma" in out["sentences"][1] and "validation" in out["sentences"][1]


def test_ece_and_temperature_scaling():
    rng = np.random.default_rng(0)
    n, c = 3000, 5
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), y] += 1.5
    over = logits * 4.0  # an over-confident model: same ranking, logits too large
    yv, lv = y[:1500], over[:1500]
    yt, lt = y[1500:], over[1500:]
    ece_before = ev.expected_calibration_error(yt, ev.softmax(lt))
    temp = ev.fit_temperature(lv, yv)
    # Bayes posterior here is softmax(1.5 * logits): the right temperature is 4 / 1.5
    assert temp == pytest.approx(4.0 / 1.5, rel=0.05)
    ece_after = ev.expected_calibration_error(yt, ev.apply_temperature(lt, temp))
    assert ece_after < ece_before / 2
    summ = ev.calibration_summary(yv, lv, yt, lt)
    assert summ["after"]["nll"] < summ["before"]["nll"]
    # accuracy is unchanged by a temperature
    assert (ev.apply_temperature(lt, temp).argmax(1) == lt.argmax(1)).all()
    # a perfectly calibrated toy: confidence 0.8, right 80% of the time
    yc = np.array([0] * 80 + [1] * 20)
    pc = np.tile([0.8, 0.2], (100, 1))
    assert ev.expected_calibration_error(yc, pc) == pytest.approx(0.0, abs=1e-12)
    assert ev.expected_calibration_error(np.ones(100, int), pc) == pytest.approx(0.8)


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
    f = ev.prediction_frame(df, p, ["mel", "nv"])
    assert list(f["pred"]) == ["mel", "mel", "nv"]
    assert list(f.columns[:5]) == ["image_id", "relpath", "label", "p_mel", "p_nv"]
    w = ev.worst_errors(f, ["mel", "nv"])
    assert list(w["image_id"]) == ["b"] and w["p_true"].iloc[0] == pytest.approx(0.3)


def test_plots_render(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    y, p, _ = _toy(n=200, c=3)
    classes = ["a", "b", "c"]
    for fig in (
        ev.plot_confusion_matrices(y, p, classes),
        ev.plot_roc_pr_curves(y, p, classes),
        ev.plot_reliability(y, {"raw": p}),
        ev.plot_roc_pr_curves(y % 2, np.stack([1 - p[:, 0], p[:, 0]], 1), ["n", "p"]),
    ):
        fig.savefig(tmp_path / "x.png")
        assert (tmp_path / "x.png").stat().st_size > 5000


def test_paired_bootstrap_difference():
    y, p, logits = _toy(n=500, seed=4)
    worse = ev.softmax(logits + np.random.default_rng(9).normal(0, 2.0, logits.shape))
    t = ev.paired_bootstrap_diff(y, worse, p, n_bootstrap=200)
    acc = t.loc["accuracy"]
    assert acc["diff"] == pytest.approx(
        skm.accuracy_score(y, p.argmax(1)) - skm.accuracy_score(y, worse.argmax(1))
    )
    assert acc["ci_low"] > 0 and acc["p_better"] > 0.95  # clearly better, beyond noise
    same = ev.paired_bootstrap_diff(y, p, p.copy(), n_bootstrap=50)
    assert (
        (same["diff"] == 0).all() and (same["ci_low"] == 0).all() and (same["ci_high"] == 0).all()
    )


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
    rep = ev.per_class_report(y, p, ["a", "b", "c"])
    assert rep.loc["c", "support"] == 0 and np.isnan(rep.loc["c", "recall"])
    assert rep.loc["a", "recall"] == pytest.approx(0.5)
