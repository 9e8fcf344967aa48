"""What a dermatologist looks for, piece by piece (notebook 08 runs them together on real
images in tests/test_notebook_08.py): the reported checkpoint fixed on validation, results
per lesion, histopathology-confirmed cases, the missed melanomas and main confusions, the
malignant-vs-benign classes, the published comparison, what next, the glossary, and
Grad-CAM's minimum feature map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from skinhelpers.evaluate import (
    cases,
    confirmed,
    explain,
    glossary,
    lesions,
    malignant,
    next_steps,
    published,
    summary,
)
from skinhelpers.share.export import operating_point_choices

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _preds(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), y] += 1.5  # better than chance
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    groups = np.array([f"L{i // 2}" for i in range(n)])  # two images per lesion
    return y, p, groups


# ----------------------------------------------------------------------------- checkpoint


def test_validation_chooses_the_reported_checkpoint(tmp_path):
    y, p, _ = _preds()
    worse = np.roll(p, 1, axis=1)
    primary, rec = summary.choose_checkpoint(None, "validation", y, {"best": worse, "best_ema": p})
    assert primary == "best_ema" and rec["rule"] == "validation"
    assert rec["validation"]["best_ema"] == pytest.approx(
        skm.balanced_accuracy_score(y, p.argmax(1))
    )
    assert "chosen on validation" in rec["sentence"]
    # a tie goes to the first name; a named checkpoint stays whatever validation says
    assert summary.choose_checkpoint(None, "validation", y, {"a": p, "b": p})[0] == "a"
    primary, rec = summary.choose_checkpoint("best", "best", y, {"best": worse, "best_ema": p})
    assert primary == "best" and rec["rule"] == "parameter"
    assert "choosing on test" in rec["not_for_choosing"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        summary.resolve_checkpoints(tmp_path, "validation")
    (tmp_path / "checkpoints").mkdir()
    for n in ("best", "final_ema"):
        (tmp_path / "checkpoints" / f"{n}.pt").write_bytes(b"x")
    primary, found = summary.resolve_checkpoints(tmp_path, "validation")
    assert primary is None and list(found) == ["best", "final_ema"]


# ----------------------------------------------------------------------------- per lesion


def test_per_lesion_averages_a_lesions_images_and_counts_it_once():
    y, p, groups = _preds()
    les = lesions.lesion_predictions(groups, y, p)
    assert len(les) == 60 and (les["n_images"] == 2).all()
    first = les.iloc[0]
    assert np.allclose(first[[f"p{i}" for i in range(7)]].to_numpy(float), p[:2].mean(0))
    conflicts = les["conflict"].sum()
    assert conflicts == sum(y[2 * i] != y[2 * i + 1] for i in range(60))
    rec = lesions.per_lesion(groups, y, p, CLASSES, pos=4, threshold=0.3, n_bootstrap=50)
    pl = les[[f"p{i}" for i in range(7)]].to_numpy()
    assert rec["result"]["headline"]["balanced_accuracy"]["value"] == pytest.approx(
        skm.balanced_accuracy_score(les["y"].astype(int), pl.argmax(1))
    )
    assert rec["result"]["bootstrap"]["n_units"] == 60 and rec["label_conflicts"] == conflicts
    is_mel = les["y"].to_numpy() == 4
    assert rec["auc"]["value"] == pytest.approx(skm.roc_auc_score(is_mel, pl[:, 4]))
    op = rec["operating_point"]["sensitivity"]
    assert op["n"] == is_mel.sum() and op["k"] == (pl[is_mel, 4] >= 0.3).sum()
    image = {"headline": {"balanced_accuracy": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}}}
    t = lesions.image_vs_lesion_table(image, rec)
    assert t.loc["n", "per lesion"] == "60" and t.loc["balanced_accuracy", "per image"] != "–"


# ----------------------------------------------------------------------------- confirmed


def test_confirmed_cases_only_where_dx_type_says_histo():
    y, p, groups = _preds()
    df = pd.DataFrame({"label": [CLASSES[i] for i in y], "group": groups})
    assert confirmed.confirmed_results(df, p, CLASSES) is None  # no dx_type: nothing
    df["dx_type"] = np.where(np.arange(len(y)) % 3 == 0, "histo", "follow_up")
    rec = confirmed.confirmed_results(df, p, CLASSES, pos=4, threshold=0.3, n_bootstrap=30)
    m = (df["dx_type"] == "histo").to_numpy()
    assert rec["n_images"] == m.sum() and rec["n_test"] == len(df)
    assert rec["result"]["headline"]["balanced_accuracy"]["value"] == pytest.approx(
        skm.balanced_accuracy_score(y[m], p[m].argmax(1))
    )
    assert sum(v["histo"] for v in rec["counts"].values()) == m.sum()
    assert "never a model input" in rec["note"] and "auc" in rec
    few = confirmed.confirmed_results(df, p, CLASSES, min_n=1000)
    assert few["result"] is None and "fewer than 1000" in few["why_none"]
    assert list(confirmed.counts_table(rec).columns) == [
        "confirmed (histo)",
        "all",
        "share confirmed",
    ]


# ----------------------------------------------------------------------------- cases


def _frame(y, p):
    return pd.DataFrame(
        {
            "image_id": [f"I{i}" for i in range(len(y))],
            "relpath": [f"r{i}.jpg" for i in range(len(y))],
            "label": [CLASSES[i] for i in y],
            **{f"p_{c}": p[:, j] for j, c in enumerate(CLASSES)},
            "pred": [CLASSES[i] for i in p.argmax(1)],
        }
    )


def test_missed_melanomas_and_the_main_confusions():
    y, p, _ = _preds(300, seed=1)
    pred = _frame(y, p)
    missed = cases.missed_positives(pred, "mel", 0.4, k=5)
    mel = pred["label"] == "mel"
    assert missed.attrs["n_missed"] == (mel & (pred["p_mel"] < 0.4)).sum()
    assert missed.attrs["n_positive"] == mel.sum() and len(missed) == 5
    assert (missed["label"] == "mel").all() and missed["score"].is_monotonic_increasing
    pairs = cases.confusion_pairs(pred, CLASSES)
    assert [(t, s) for t, s, _ in pairs] == [("mel", "nv"), ("bkl", "mel")]
    assert pairs[0][2] == ((pred["label"] == "mel") & (pred["pred"] == "nv")).sum()
    rows = cases.confusion_cases(pred, "mel", "nv", k=3)
    assert (rows["label"] == "mel").all() and (rows["pred"] == "nv").all()
    assert rows["p_nv"].is_monotonic_decreasing
    # a dataset without those classes: its most frequent confusions
    binary = pred.assign(
        label=np.where(pred["label"] == "mel", "malignant", "benign"),
        pred=np.where(pred["pred"] == "mel", "malignant", "benign"),
    )
    got = cases.confusion_pairs(binary, ["benign", "malignant"])
    assert {(t, s) for t, s, _ in got} <= {("benign", "malignant"), ("malignant", "benign")}
    titles = cases.case_titles(missed.assign(dx_type="histo"), "mel", ["dx_type", "age"])
    assert titles[0].startswith("I") and "p(mel)=" in titles[0] and "histo" in titles[0]


# ----------------------------------------------------------------------------- malignant


def test_malignant_classes_and_analysis():
    kept, note = malignant.malignant_classes("mel,bcc,akiec", CLASSES, "mel")
    assert kept == ["akiec", "bcc", "mel"] and "benign: every other class" in note
    for spec, classes, pos, why in (
        ("", CLASSES, "mel", "empty"),
        ("mel,bcc,akiec", ["benign", "malignant"], "malignant", "none of malignant_classes"),
        ("mel", CLASSES, "mel", "positive class"),
        ("a,b", ["a", "b"], None, "every class"),
    ):
        k, n = malignant.malignant_classes(spec, classes, pos)
        assert k == [] and why in n, spec
    assert "scc not in this dataset" in malignant.malignant_classes("mel,scc", CLASSES, None)[1]
    y, p, groups = _preds(300, seed=2)
    rec = malignant.malignant_analysis(
        y[:150], p[:150], y[150:], p[150:], CLASSES, kept, n_bootstrap=30, groups=groups[150:]
    )
    idx = [CLASSES.index(c) for c in kept]
    s = p[150:, idx].sum(1)
    assert rec["auc"]["value"] == pytest.approx(skm.roc_auc_score(np.isin(y[150:], idx), s))
    assert rec["classes"] == kept and len(rec["operating_points"]) == 4
    # the thresholds were chosen on the validation half
    op = rec["operating_points"][0]
    yv = np.isin(y[:150], idx)
    assert 1 - ((p[:150, idx].sum(1) >= op["threshold"]) & ~yv).sum() / (~yv).sum() >= 0.95


# ----------------------------------------------------------------------------- the rest


def test_published_comparison_what_next_and_glossary():
    assert published.comparable_dataset(CLASSES)
    assert not published.comparable_dataset(["benign", "malignant"])
    t = published.comparison_table({"value": 0.78, "ci_low": 0.74, "ci_high": 0.82}, "ours")
    assert list(t["balanced_accuracy"]) == [0.885, 0.882, 0.871, 0.856, 0.78]
    why = published.reasons("160 px", 1430)
    assert any("600x450" in w and "160 px" in w for w in why)
    assert any("1,512" in w for w in why) and any("ensemble" in w for w in why)
    m = {
        "synthetic": True,
        "primary": "best_ema",
        "models": {"best_ema": {"headline": {}, "per_class": {"df": {"recall": 0.2}}}},
        "gradcam_skipped": "Grad-CAM skipped",
    }
    steps = next_steps.what_next(m)
    assert "SYNTHETIC" in steps[0] and any("df" in s for s in steps)
    assert any("128 px" in s for s in steps) and any("notebook 09" in s for s in steps)
    assert not any("notebook 09" in s for s in next_steps.what_next(m, external_done=True))
    assert "not a diagnostic device" in steps[-1]
    for term in (
        "balanced accuracy",
        "ROC-AUC",
        "bootstrap",
        "lesion-grouped split",
        "StratifiedGroupKFold",
        "EMA",
        "logit adjustment",
        "bfloat16",
        "TTA",
        "Grad-CAM",
        "Wilson interval",
        "calibration, ECE",
    ):
        assert term in glossary.GLOSSARY, term
        assert f"**{term}**" in glossary.glossary_markdown()
    assert glossary.glossary_html().startswith("<dl>")


def test_gradcam_needs_a_feature_map_of_four_by_four():
    why = explain.cam_too_coarse((1, 1280, 2, 2), "64 px")
    assert "2x2 for 64 px images" in why and "below 4x4" in why
    assert explain.cam_too_coarse((1, 256, 4, 4)) is None
    assert explain.cam_too_coarse((1, 256, 5, 3)) is not None


def test_operating_point_choices_for_the_demo_and_the_export():
    op = {
        "target": "sensitivity",
        "target_value": 0.95,
        "threshold": 0.012,
        "validation": {"sensitivity": 0.95, "specificity": 0.4},
    }
    t = {
        "class": "mel",
        "class_index": 4,
        "name": "melanoma",
        "operating_points": [{**op, "target": "specificity"}, op],
        "malignant": {"name": "malignant", "class_indices": [0, 1, 4], "operating_points": [op]},
    }
    ch = operating_point_choices(t)
    assert [c["class_indices"] for c in ch] == [[4], [4], [0, 1, 4]]
    assert ch[1]["label"] == "melanoma: sensitivity ≥ 95% (threshold 0.012)"
    assert operating_point_choices(None) == []
