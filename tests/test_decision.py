"""Post-hoc levers (prior correction, late fusion, checkpoint averaging) and the metadata
model: identities at their neutral values, recovery of a planted bias, and what HAM10000's
real metadata alone predicts on lesion-disjoint images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

from skinhelpers.evaluate import decision
from skinhelpers.model import metadata


def _biased_probs(n: int, seed: int, bias: float = 2.0):
    """3 classes, class 2 rare (5%); the model's scores are informative but biased
    against class 2 by ``bias`` in log space."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.6, 0.35, 0.05])
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 2.0
    logits[:, 2] -= bias
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_neutral_values_change_nothing():
    y, p = _biased_probs(200, 0)
    prior = decision.class_prior(y, 3)
    np.testing.assert_allclose(decision.prior_correction(p, prior, 0.0), p, atol=1e-6)
    np.testing.assert_allclose(decision.late_fusion(p, np.full_like(p, 0.2), 0.0), p, atol=1e-6)
    np.testing.assert_allclose(decision.average(p, p), p)


def test_prior_correction_favours_rare_classes_and_is_a_distribution():
    y, p = _biased_probs(300, 1)
    prior = decision.class_prior(y, 3)
    q = decision.prior_correction(p, prior, 1.0)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-9)
    assert (q[:, 2] > p[:, 2]).all() and (q[:, 0] < p[:, 0]).all()


def test_delta_fitted_on_validation_recovers_a_planted_bias_on_test():
    y_val, p_val = _biased_probs(3000, 2)
    y_test, p_test = _biased_probs(3000, 3)
    prior = decision.class_prior(y_val, 3)
    delta, table = decision.fit_prior_correction(y_val, p_val, prior)
    assert delta > 0.2 and table["chosen"].sum() == 1
    before = balanced_accuracy_score(y_test, p_test.argmax(1))
    after = balanced_accuracy_score(
        y_test, decision.prior_correction(p_test, prior, delta).argmax(1)
    )
    assert after > before + 0.05


def test_choice_ties_go_to_the_neutral_value():
    y = np.array([0, 1, 0, 1])
    same = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    value, _ = decision.choose_on_validation(y, {-0.5: same, 0.0: same, 0.5: same}, neutral=0.0)
    assert value == 0.0


def test_fusion_with_an_informative_second_model_helps_and_weight_is_chosen():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 4000)

    def noisy(scale):
        lg = rng.normal(size=(len(y), 3))
        lg[np.arange(len(y)), y] += scale
        p = np.exp(lg)
        return p / p.sum(1, keepdims=True)

    img, meta = noisy(1.0), noisy(1.0)  # two independent, equally informative views
    w, _ = decision.fit_fusion_weight(y[:2000], img[:2000], meta[:2000])
    assert w > 0.3
    fused = decision.late_fusion(img[2000:], meta[2000:], w)
    assert (
        balanced_accuracy_score(y[2000:], fused.argmax(1))
        > balanced_accuracy_score(y[2000:], img[2000:].argmax(1)) + 0.03
    )


def test_lever_table_pairs_each_step_with_the_one_before():
    y, p = _biased_probs(400, 5)
    prior = decision.class_prior(y, 3)
    steps = [
        ("image", p),
        ("prior", decision.prior_correction(p, prior, 0.8)),
        ("avg", decision.average(p, decision.prior_correction(p, prior, 0.8))),
    ]
    t = decision.lever_table(y, steps, n_bootstrap=50)
    assert list(t["step"].unique()) == ["prior", "avg", "all levers"]
    row = t[(t["step"] == "prior") & (t["metric"] == "balanced_accuracy")].iloc[0]
    assert row["before"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]


def test_bad_inputs_are_refused():
    p = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="prior has"):
        decision.prior_correction(p, [0.5, 0.5], 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        decision.late_fusion(p, np.full((4, 2), 0.5), 1.0)
    with pytest.raises(ValueError, match="finite"):
        decision.average(p, np.full((4, 3), np.nan))


# ----------------------------------------------------------------------------- metadata
def test_metadata_model_refuses_leaky_columns_and_handles_unknowns():
    df = pd.DataFrame(
        {
            "age": [30, np.nan, 50, 70] * 10,
            "sex": ["male", "female", "unknown", None] * 10,
            "localization": ["back", "face", "back", "trunk"] * 10,
            "dx_type": ["histo"] * 40,
        }
    )
    y = np.array([0, 1, 0, 2] * 10)
    assert metadata.metadata_columns(df) == ["age", "sex", "localization"]
    with pytest.raises(ValueError, match="leak the label"):
        metadata.fit_metadata_model(df, y, 3, columns=["age", "dx_type"])
    m = metadata.fit_metadata_model(df, y, 4)  # class 3 never seen: probability 0
    new = pd.DataFrame({"age": [40], "sex": ["other"], "localization": ["acral"]})
    p = metadata.predict_metadata(m, new)
    assert p.shape == (1, 4) and p[0, 3] == 0 and p.sum() == pytest.approx(1.0)
    assert metadata.fit_metadata_model(pd.DataFrame({"x": [1, 2]}), [0, 1], 2) is None


def test_metadata_alone_predicts_ham10000_diagnoses_above_chance(ham_manifest):
    """Age, sex and body site of HAM10000, split by lesion: well above chance (1/7),
    far below an image model."""
    df = ham_manifest
    classes = sorted(df["label"].unique())
    y = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    tr, te = next(GroupShuffleSplit(1, test_size=0.25, random_state=0).split(df, y, df["group"]))
    m = metadata.fit_metadata_model(df.iloc[tr], y[tr], len(classes))
    assert m.columns_ == ["age", "sex", "localization"]
    p = metadata.predict_metadata(m, df.iloc[te])
    ba = balanced_accuracy_score(y[te], p.argmax(1))
    auc = roc_auc_score(y[te], p, multi_class="ovr")
    assert 0.25 < ba < 0.6 and auc > 0.7


def test_stack_levers_applies_each_lever_in_order_and_chooses_on_validation_only():
    y_val, p_val = _biased_probs(2000, 6)
    y_test, p_test = _biased_probs(2000, 7)
    _, q_val = _biased_probs(2000, 6, bias=1.0)  # a second checkpoint, same images
    _, q_test = _biased_probs(2000, 7, bias=1.0)
    prior = decision.class_prior(y_val, 3)
    meta_val, meta_test = np.full_like(p_val, 1 / 3), np.full_like(p_test, 1 / 3)
    out = decision.stack_levers(
        y_val,
        {"best": p_val, "ema": q_val},
        {"best": p_test, "ema": q_test},
        "ema",
        prior,
        meta_val,
        meta_test,
    )
    names = [n for n, _ in out["steps"]]
    assert names[0] == "ema" and names[2].startswith("prior correction")
    assert names[3].startswith("metadata fusion") and len(names) == 4
    assert out["chosen"]["prior_correction_delta"] > 0  # the planted bias
    # a flat metadata model carries no information: fusing it changes no decision
    np.testing.assert_array_equal(out["test"].argmax(1), out["steps"][2][1].argmax(1))
    # without metadata the same choices, and no fusion step
    again = decision.stack_levers(
        y_val, {"best": p_val, "ema": q_val}, {"best": p_test, "ema": q_test}, "ema", prior
    )
    assert again["chosen"]["prior_correction_delta"] == out["chosen"]["prior_correction_delta"]
    assert len(again["steps"]) == 3  # no metadata: no fusion step
    with pytest.raises(ValueError, match="same checkpoints"):
        decision.stack_levers(y_val, {"best": p_val}, {"ema": p_test}, "best", prior)
