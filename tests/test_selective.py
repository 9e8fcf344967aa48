"""Selective prediction (skinhelpers.evaluate.selective): risk-coverage and conformal sets,
on synthetic predictions whose difficulty is known."""

from __future__ import annotations

import numpy as np
import pytest

from skinhelpers.evaluate import calibration, selective


def _preds(n, seed, c=4, signal=1.2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += signal * rng.uniform(0, 3, n)  # some easy, some hard
    return y, calibration.softmax(logits)


def test_risk_falls_as_coverage_falls_and_aurc_matches_its_definition():
    y, p = _preds(800, 0)
    table, aurc = selective.risk_coverage(y, p, pos=1)
    full = table.iloc[-1]
    assert full["coverage"] == pytest.approx(1.0)
    assert full["risk"] == pytest.approx(1 - (p.argmax(1) == y).mean())
    low = table[table["coverage"] <= 0.2]["risk"].mean()
    assert low < full["risk"] / 2  # the confident fifth is much more often right
    # AURC by its definition: mean error of the k most confident, k = 1..n
    order = np.argsort(-p.max(1), kind="stable")
    right = (p.argmax(1)[order] == y[order]).astype(float)
    direct = np.mean([1 - right[:k].mean() for k in range(1, len(y) + 1)])
    assert aurc == pytest.approx(direct)
    assert "sensitivity" in table and table["positives_kept"].iloc[-1] == (y == 1).sum()


@pytest.mark.parametrize("class_conditional", [True, False])
def test_conformal_sets_cover_at_the_asked_rate(class_conditional):
    y_cal, p_cal = _preds(1500, 1)
    y_test, p_test = _preds(3000, 2)
    sets = selective.conformal_sets(p_cal, y_cal, p_test, 0.9, class_conditional, seed=0)
    report = selective.conformal_report(sets, y_test, ["a", "b", "c", "d"])
    assert 0.88 <= report.loc["all", "coverage"] <= 0.93
    if class_conditional:  # every class gets its coverage, not just on average
        assert (report.drop(index="all")["coverage"] >= 0.86).all()
    assert 1 <= report.loc["all", "mean_set_size"] < 4
    tighter = selective.conformal_sets(p_cal, y_cal, p_test, 0.7, class_conditional, seed=0)
    assert tighter.sum(1).mean() < sets.sum(1).mean()


def test_conformal_refuses_a_missing_class_and_a_bad_coverage():
    y, p = _preds(100, 3)
    with pytest.raises(ValueError, match="coverage"):
        selective.conformal_sets(p, y, p, 1.5)
    with pytest.raises(ValueError, match="every class"):
        selective.conformal_sets(p[y != 2], y[y != 2], p, 0.9)
