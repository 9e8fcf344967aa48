"""Results per source (skinhelpers.evaluate.by_source), on small synthetic predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from skinhelpers.evaluate import by_source, calibration, thresholds


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    # source a: classes 0/1/2 with 60/40/30 images; source b: 50 of class 0, 3 of class 2
    y = np.r_[np.repeat([0, 1, 2], [60, 40, 30]), np.repeat([0, 2], [50, 3])]
    src = np.r_[["a"] * 130, ["b"] * 53]
    logits = rng.normal(size=(len(y), 3))
    logits[np.arange(len(y)), y] += 1.5
    probs = calibration.softmax(logits)
    df = pd.DataFrame(
        {"label_idx": y, "source": src, "group": [f"g{i // 2}" for i in range(len(y))]}
    )
    return df, probs


def test_balanced_accuracy_averages_only_the_large_classes():
    df, probs = _frame()
    res = by_source.per_source(df, probs, ["x", "y", "z"], pos=1, n_bootstrap=50)
    assert list(res) == ["a", "b"]
    a, b = res["a"], res["b"]
    m = (df["source"] == "a").to_numpy()
    assert a["balanced_accuracy"]["value"] == pytest.approx(
        skm.balanced_accuracy_score(df["label_idx"][m], probs[m].argmax(1))
    )
    assert a["classes_averaged"] == ["x", "y", "z"]
    # b: class z has 3 images, shown with its recall but not averaged
    mb = ~m
    pred_b = probs[mb].argmax(1)
    assert b["classes_averaged"] == ["x"]
    assert b["balanced_accuracy"]["value"] == pytest.approx((pred_b[:50] == 0).mean())
    assert b["class_counts"] == {"x": 50, "z": 3}
    assert b["recall"]["z"] == pytest.approx((pred_b[50:] == 2).mean())
    # b has no positive (class 1): no AUC, no operating point
    assert "melanoma_auc" not in b and "operating_points" not in b
    assert a["melanoma_auc"]["ci_low"] <= a["melanoma_auc"]["value"] <= a["melanoma_auc"]["ci_high"]


def test_operating_points_match_the_counts():
    df, probs = _frame(1)
    thr = 0.4
    res = by_source.per_source(
        df, probs, ["x", "y", "z"], pos=1, thresholds=[("t", thr)], n_bootstrap=20
    )
    op = res["a"]["operating_points"][0]
    m = (df["source"] == "a").to_numpy()
    direct = thresholds.operating_point(df["label_idx"][m] == 1, probs[m, 1], thr)
    assert op["sensitivity"]["value"] == pytest.approx(direct["sensitivity"])
    assert op["specificity"]["value"] == pytest.approx(direct["specificity"])
    table = by_source.source_table(res)
    assert list(table.index) == ["a", "b"] and "sensitivity @ t" in table.columns
    assert by_source.recall_table(res).loc["b", "y"] == "–"
