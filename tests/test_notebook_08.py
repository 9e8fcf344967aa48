"""Notebook 08 end to end, on a prepared run folder (manifest, split, checkpoints).

Two runs: real HAM10000 images (7 classes, lesion masks, TTA, both checkpoints) and a
binary melanoma10k-layout tree (no masks, no TTA, no EMA checkpoint). The numbers the
notebook writes are checked against scikit-learn on the predictions it saved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_run import run_notebook
from short_checkpoint import train_short_checkpoint
from sklearn import metrics as skm

from skinhelpers.data import manifest as datasets
from skinhelpers.files import write_json
from skinhelpers.run.report import render_report
from skinhelpers.split import grouped, store

pytestmark = pytest.mark.slow  # two notebook executions, ~90 s on 2 cores

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "08_evaluation.ipynb"


def prepare_run(run: Path, df: pd.DataFrame, ema: bool = True, size: int = 32) -> None:
    """What notebooks 01, 02, 04 and 07 leave in a run folder, made directly (also used by
    tests/test_notebook_09.py)."""
    datasets.save_manifest(df, run)
    split = grouped.grouped_split(df, val_size=0.25, test_size=0.3, seed=0)
    store.save_split(split, run)
    write_json(run / "preprocessing.json", {"preprocess": "none", "resize_mode": "squash"})
    full = store.read_split(run)
    train = full[full["split"] == "train"].reset_index(drop=True)
    train.attrs = full.attrs
    # the logit-adjusted loss (tau 1), as the trainer trains: checkpoints carry the prior
    for name, steps, seed, epoch in (("best", 10, 0, 2), ("best_ema", 14, 1, 3))[: 1 + ema]:
        path = run / "checkpoints" / f"{name}.pt"
        train_short_checkpoint(
            train, path, size, steps, seed=seed, epoch=epoch, logit_adjust_tau=1.0
        )


def _execute(run: Path, dataset: str, data_dir, **params) -> None:
    run_notebook(
        NB,
        run / "08_evaluation.ipynb",
        {
            "dataset": dataset,
            "data_dir": str(data_dir),
            "run_dir": str(run),
            "seed": 0,
            "batch_size": 32,
            "workers": 0,
            **params,
        },
    )


def small_evaluated_run(parent: Path, df: pd.DataFrame, dataset: str, data_dir) -> Path:
    """A run folder made by :func:`prepare_run` and evaluated by notebook 08 at the
    smallest useful settings (the tests of what leaves the suite: predict, export, the model
    card, the demo page)."""
    run = parent / dataset
    run.mkdir()
    prepare_run(run, df)
    _execute(run, dataset, data_dir, n_bootstrap=30, tta_views=2, gradcam_per_class=1,
             cam_max_images=12, worst_errors_shown=3)  # fmt: skip
    return run


def _check_consistency(run: Path, classes: list[str]) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    pred = pd.read_csv(run / "predictions_test.csv")
    split = store.read_split(run)
    assert len(pred) == (split["split"] == "test").sum() == m["n_test"]
    pcols = [f"p_{c}" for c in classes]
    assert list(pred.columns) == [
        "image_id",
        "relpath",
        "label",
        *pcols,
        "pred",
        "group",
        "ood_score",
        "in_distribution",
    ]
    test = split[split["split"] == "test"]
    lesion = dict(zip(test["relpath"], test["group"].astype(str)))
    assert pred["group"].astype(str).tolist() == [lesion[r] for r in pred["relpath"]]
    # every interval resampled the test lesions, and metrics.json says so
    assert m["bootstrap_unit"] == "group"
    assert m["n_test_groups"] == m["n_bootstrap_units"] == test["group"].nunique()
    assert m["models"][m["primary"]]["bootstrap"]["bootstrap_unit"] == "group"
    p = pred[pcols].to_numpy()
    assert np.allclose(p.sum(1), 1, atol=1e-6)
    y = pred["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    head = m["models"][m["primary"]]["headline"]
    assert head["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    assert head["balanced_accuracy"]["value"] == pytest.approx(
        skm.balanced_accuracy_score(y, p.argmax(1))
    )
    for v in head.values():
        assert v["ci_low"] - 1e-9 <= v["value"] <= v["ci_high"] + 1e-9
    assert m["calibration"]["temperature"] > 0
    return m


@pytest.fixture(scope="module")
def ham_run(ham_manifest, ham_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("nb08") / "ham"
    run.mkdir()
    df = datasets.subsample(ham_manifest, 110, seed=0)
    prepare_run(run, df)
    _execute(
        run,
        "ham10000",
        ham_dir.parent,
        n_bootstrap=40,
        tta_views=2,
        gradcam_per_class=1,
        cam_max_images=24,
        worst_errors_shown=6,
    )
    return run


def test_ham10000_evaluation(ham_run, ham_manifest):
    m = _check_consistency(ham_run, list(ham_manifest.attrs["classes"]))
    assert set(m["models"]) == {"best", "best_ema"} and m["primary"] == "best_ema"
    assert m["tta_views"] == ["identity", "hflip"]
    assert "balanced_accuracy" in m["tta"]["diff"]
    # precision "auto": bfloat16 autocast where this CPU runs it natively (the notebook's
    # own check then held predict_images to the evaluation within 5e-2), else float32
    from skinhelpers.device import cpu_has_native_bf16

    assert m["precision"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    pc = m["positive_class"]
    assert pc["class"] == "melanoma" and len(pc["operating_points"]) == 4
    assert any("of the melanoma cases in the test set" in s for s in pc["sentences"])
    les = m["gradcam_in_lesion"]
    assert les["images"] > 0 and 0 <= les["cam_inside_mean"] <= 1
    assert 0 < les["lesion_area_mean"] < 1
    per_class = m["models"]["best"]["per_class"]
    assert set(per_class) == set(ham_manifest.attrs["classes"])


def test_ham10000_no_choosing_on_test_and_probabilities_said_right(ham_run):
    """The reported checkpoint was fixed by the parameter before test; the other one's test
    numbers sit in the appendix; calibration is measured on the probabilities a user gets
    (the training data's class mix, from the checkpoint's train_prior)."""
    from skinhelpers.evaluate import calibration, priors
    from skinhelpers.model.checkpoints import load_checkpoint, train_prior

    m = json.loads((ham_run / "metrics.json").read_text())
    sel = m["selection"]
    assert sel["rule"] == "parameter" and sel["checkpoint"] == m["primary"] == "best_ema"
    assert set(sel["validation"]) == {"best", "best_ema"}
    assert m["not_for_choosing"]["checkpoints"] == ["best"]
    assert "balanced_accuracy" in m["not_for_choosing"]["ema_vs_raw"]
    rec = train_prior(load_checkpoint(ham_run / "checkpoints" / "best_ema.pt"))
    assert m["probabilities"]["prior"] == "data" and m["probabilities"]["known"]
    assert m["calibration"]["probabilities"] == m["probabilities"]
    pred = pd.read_csv(ham_run / "predictions_test.csv")
    classes = m["classes"]
    balanced = pred[[f"p_{c}" for c in classes]].to_numpy()
    user = priors.prior_shift(rec, classes).apply(balanced)
    assert np.allclose(list(m["probabilities"]["target"].values()), rec["data"])
    y = pred["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    ece = calibration.expected_calibration_error(y, user, m["calibration"]["n_bins"])
    assert m["calibration"]["before"]["ece"] == pytest.approx(ece, abs=1e-9)
    assert m["calibration"]["balanced_scores_ece"] == pytest.approx(
        calibration.expected_calibration_error(y, balanced, m["calibration"]["n_bins"]), abs=1e-9
    )
    assert "training data's class mix" in " ".join(m["sentences"])


def test_ham10000_what_a_dermatologist_looks_for(ham_run, ham_manifest):
    """Per lesion, histopathology-confirmed, malignant vs benign, the missed melanomas and
    confusions, the published comparison: each checked against its direct computation on
    the saved predictions."""
    m = json.loads((ham_run / "metrics.json").read_text())
    classes = m["classes"]
    pred = pd.read_csv(ham_run / "predictions_test.csv")
    pcols = [f"p_{c}" for c in classes]
    y = pred["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    # per lesion: each lesion's images averaged, counted once
    les = pred.groupby("group")[pcols].mean()
    lab = pred.groupby("group")["label"].first().map({c: i for i, c in enumerate(classes)})
    pl = m["per_lesion"]
    assert pl["n_lesions"] == len(les) == m["n_test_groups"] and pl["n_images"] == len(pred)
    ba = pl["result"]["headline"]["balanced_accuracy"]
    assert ba["value"] == pytest.approx(
        skm.balanced_accuracy_score(lab.loc[les.index], les.to_numpy().argmax(1))
    )
    assert pl["result"]["bootstrap"]["n_units"] == len(les)
    # histopathology-confirmed only
    dx = pred.merge(ham_manifest[["image_id", "dx_type"]], on="image_id")["dx_type"]
    histo = (dx == "histo").to_numpy()
    c = m["confirmed"]
    assert c["n_images"] == histo.sum() and c["n_test"] == len(pred)
    assert c["result"]["headline"]["balanced_accuracy"]["value"] == pytest.approx(
        skm.balanced_accuracy_score(y[histo], pred[pcols].to_numpy()[histo].argmax(1))
    )
    assert "never a model input" in c["note"]
    # malignant vs benign: the summed balanced scores of mel, bcc and akiec
    mal = m["malignant"]
    assert mal["classes"] == ["akiec", "bcc", "mel"] and len(mal["operating_points"]) == 4
    is_mal = pred["label"].isin(mal["classes"]).to_numpy()
    s = pred[[f"p_{k}" for k in mal["classes"]]].sum(1).to_numpy()
    assert mal["auc"]["value"] == pytest.approx(skm.roc_auc_score(is_mal, s))
    # the missed melanomas at the chosen operating point, and the named confusions
    op = m["positive_class"]["operating_points"][0]
    missed = m["cases"]["missed"]
    assert missed["threshold"] == op["threshold"]
    assert (
        missed["n_missed"] == ((pred["label"] == "mel") & (pred["p_mel"] < op["threshold"])).sum()
    )
    pairs = {(x["true"], x["said"]): x["n"] for x in m["cases"]["confusions"]}
    assert set(pairs) >= {("mel", "nv"), ("bkl", "mel")}
    assert pairs["mel", "nv"] == ((pred["label"] == "mel") & (pred["pred"] == "nv")).sum()
    # beside published results, with why not comparable
    pub = m["published"]
    assert [r["balanced_accuracy"] for r in pub["published"]] == [0.885, 0.882, 0.871, 0.856]
    assert pub["ours"] == m["models"]["best_ema"]["headline"]["balanced_accuracy"]
    assert any("600x450" in r for r in pub["reasons"]) and len(pub["reasons"]) >= 4
    assert m["gradcam_skipped"] is None  # small_cnn at 32 px: a 4x4 feature map


def test_ham10000_subgroups(ham_run):
    """subgroups.csv: the whole test set, then sex, age band and body site, each metric
    with its interval; the model card shows them."""
    from skinhelpers.evaluate.subgroups import COLUMNS

    sub = pd.read_csv(ham_run / "subgroups.csv")
    assert list(sub.columns) == COLUMNS and {"n_pos", "n_neg"} <= set(COLUMNS)
    assert (sub["n_pos"] + sub["n_neg"] == sub["n"]).all()
    # small groups honestly: no interval of width zero, nothing ranked below the minimums
    has_ci = sub["ci_low"].notna()
    assert (sub.loc[has_ci, "ci_high"] > sub.loc[has_ci, "ci_low"]).all()
    assert not sub.loc[sub["n"] < 30, "ranked"].any()
    auc = sub[sub["metric"] == "melanoma_auc"]
    few = (auc["n_pos"] < 10) | (auc["n_neg"] < 10)
    assert auc.loc[few, "value"].isna().all() and auc.loc[few, "note"].str.contains("AUC").all()
    # one interval per number: the whole set's sensitivity as in the operating points
    m = json.loads((ham_run / "metrics.json").read_text())
    op = m["positive_class"]["operating_points"][0]["test_ci"]
    whole = sub[sub["attribute"] == "all"].set_index("metric")
    for k in ("sensitivity", "specificity"):
        assert whole.loc[k, "ci_low"] == pytest.approx(op[k]["ci_low"], abs=1e-12)
        assert whole.loc[k, "ci_high"] == pytest.approx(op[k]["ci_high"], abs=1e-12)
    assert {"all", "sex", "age_band", "localization"} <= set(sub["attribute"])
    assert "dx_type" not in set(sub["attribute"])  # described, never a subgroup
    assert set(sub["metric"]) == {"balanced_accuracy", "melanoma_auc", "sensitivity", "specificity"}
    n_test = (store.read_split(ham_run)["split"] == "test").sum()
    for attr, t in sub[sub["metric"] == "balanced_accuracy"].groupby("attribute"):
        assert t["n"].sum() == n_test, attr  # each attribute partitions the test set
    assert set(sub.loc[sub["attribute"] == "age_band", "group"]) <= {
        "<30",
        "30-44",
        "45-59",
        "60-74",
        "75+",
        "unknown",
    }
    ok = sub.dropna(subset=["value", "ci_low", "ci_high"])
    assert (
        len(ok)
        and (ok["ci_low"] - 1e-9 <= ok["value"]).all()
        and (ok["value"] <= ok["ci_high"] + 1e-9).all()
    )
    pred = pd.read_csv(ham_run / "predictions_test.csv")
    classes = [c[2:] for c in pred.columns if c.startswith("p_")]
    y = pred["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    whole = sub[(sub["attribute"] == "all") & (sub["metric"] == "balanced_accuracy")]
    assert whole["value"].iloc[0] == pytest.approx(
        skm.balanced_accuracy_score(y, pred[[f"p_{c}" for c in classes]].to_numpy().argmax(1))
    )
    assert (ham_run / "tb").is_dir()  # TensorBoard hparams
    from skinhelpers.share.model_card import model_card_text

    card = model_card_text(ham_run)
    assert "## Subgroups" in card and "age_band" in card
    # the levers: chosen on validation, metadata without dx_type, paired test changes
    lev = json.loads((ham_run / "metrics.json").read_text())["levers"]
    assert lev["metadata_columns"] == ["age", "sex", "localization"]
    assert set(lev["chosen"]) == {"average", "prior_correction_delta", "metadata_weight"}
    steps = [r for r in lev["test"] if r["metric"] == "balanced_accuracy"]
    assert steps[-1]["step"] == "all levers" and len(steps) == 4
    assert all(r["ci_low"] - 1e-9 <= r["diff"] <= r["ci_high"] + 1e-9 for r in steps)
    assert lev["final"]["headline"]["balanced_accuracy"]["value"] == pytest.approx(
        steps[-1]["after"]
    )
    assert "## Levers chosen on validation" in card and "never `dx_type`" in card


def test_report_of_the_run(ham_run):
    index = render_report(ham_run)
    html = index.read_text()
    assert "08_evaluation.story.html" in html and "SYNTHETIC" not in html
    assert "best_ema" in html and "melanoma" in html
    assert "<h2>What next</h2>" in html and "href='glossary.html'" in html
    assert "not for choosing" in html and "best_ema, per lesion" in html
    head, appendix = html.split("<h2>Appendix: the other checkpoints on test")
    assert "<th>best</th>" in appendix and "<th>best</th>" not in head
    glossary = (ham_run / "report" / "glossary.html").read_text()
    for term in ("balanced accuracy", "StratifiedGroupKFold", "logit adjustment", "Wilson"):
        assert term in glossary
    story = (ham_run / "report" / "08_evaluation.story.html").read_text()
    assert "Grad-CAM" in story and "data:image/png;base64" in story
    assert "Subgroups: does it work as well for every patient?" in story
    for heading in (
        "The melanomas it missed",
        "The main confusions",
        "Per lesion",
        "Histopathology-confirmed cases only",
        "Beside published results",
        "What next",
        "not for choosing",
        "glossary",
    ):
        assert heading in story, heading
    assert "plot_confusion_matrices" not in story  # code hidden
    assert "plot_confusion_matrices" in (ham_run / "report" / "08_evaluation.html").read_text()


def test_binary_dataset_without_masks_tta_or_ema(demo_manifest, tmp_path_factory):
    """melanoma10k layout (benign / malignant) built from demo images."""
    root = tmp_path_factory.mktemp("mel10k")
    src = demo_manifest[demo_manifest["label"].isin(["mel", "nv"])]
    src = pd.concat([src[src["label"] == "mel"].head(40), src[src["label"] == "nv"].head(40)])
    for i, r in enumerate(src.itertuples()):
        part = "test" if i % 5 == 0 else "train"
        cls = "malignant" if r.label == "mel" else "benign"
        d = root / "melanoma_cancer_dataset" / part / cls
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(r.path, d / f"{r.image_id}.jpg")
    df = datasets.load_manifest("melanoma10k", root)
    assert df.attrs["positive_class"] == "malignant"
    run = tmp_path_factory.mktemp("nb08") / "bin"
    run.mkdir()
    prepare_run(run, df, ema=False, size=16)  # small_cnn at 16 px: a 2x2 feature map
    _execute(
        run,
        "melanoma10k",
        root,
        n_bootstrap=30,
        tta_views=1,
        checkpoint="validation",
        gradcam_per_class=1,
        cam_max_images=10,
    )
    m = _check_consistency(run, ["benign", "malignant"])
    assert set(m["models"]) == {"best"} and m["tta"] is None
    # chosen on validation, before test: the only checkpoint there is
    assert m["selection"]["rule"] == "validation" and m["primary"] == "best"
    assert m["not_for_choosing"]["checkpoints"] == []
    # Grad-CAM below 4x4 is skipped, with the reason
    assert "2x2" in m["gradcam_skipped"] and m["gradcam_in_lesion"] is None
    # mel, bcc, akiec are not classes here: no malignant operating point, and why
    assert m["malignant"] is None and "none of malignant_classes" in m["malignant_note"]
    assert m["published"] is None and m["confirmed"] is None  # other classes, no dx_type
    assert m["positive_class"]["class"] == "malignant"
    pred = pd.read_csv(run / "predictions_test.csv")
    y = (pred["label"] == "malignant").to_numpy()
    assert m["positive_class"]["auc"]["value"] == pytest.approx(
        skm.roc_auc_score(y, pred["p_malignant"])
    )
    assert m["models"]["best"]["headline"]["roc_auc_macro_ovr"]["value"] == pytest.approx(
        skm.roc_auc_score(y, pred["p_malignant"])
    )


def test_ham10000_refer_or_answer(ham_run):
    """The risk-coverage table and AURC, and the conformal sets, recomputed from the saved
    predictions' balanced scores (conformal: its coverage report is the direct count)."""
    from skinhelpers.evaluate import selective

    m = json.loads((ham_run / "metrics.json").read_text())
    s = m["selective"]
    pred = pd.read_csv(ham_run / "predictions_test.csv")
    classes = m["classes"]
    probs = pred[[f"p_{c}" for c in classes]].to_numpy()
    y = pred["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    table, aurc = selective.risk_coverage(y, probs, classes.index("mel"))
    assert s["aurc"] == pytest.approx(aurc, abs=1e-9)
    assert s["risk_coverage"]["risk"][-1] == pytest.approx(table["risk"].iloc[-1])
    conf = s["conformal"]["all"]
    assert conf["n"] == len(y) and 0 <= conf["coverage"] <= 1 and conf["mean_set_size"] >= 0
    assert s["conformal_coverage"] == 0.9


def test_ham10000_guard_fitted_stored_and_scored(ham_run):
    """08 fits the out-of-distribution guard, stores it in the reported checkpoint (read
    back with weights_only) and scores every test image with it; the held-out photos
    it measures on are not those it chose the score on."""
    import torch

    from skinhelpers.evaluate import ood

    m = json.loads((ham_run / "metrics.json").read_text())
    g = m["ood"]
    ckpt = torch.load(ham_run / "checkpoints" / f"{m['primary']}.pt", weights_only=True)
    stored = ood.guard_of(ckpt)
    assert stored.method == g["method"] in ood.METHODS
    assert stored.threshold == pytest.approx(g["threshold"]) and g["pass_rate"] == 0.95
    meas = g["measured"]
    assert not set(meas["chosen_on"]) & set(meas["measured_on"])
    assert 0 <= meas["auroc_far_ood_heldout"] <= 1 and meas["val_passed"] >= 0.95
    pred = pd.read_csv(ham_run / "predictions_test.csv")
    assert (pred["in_distribution"] == (pred["ood_score"] <= g["threshold"])).all()
    assert g["test_flagged"] == pytest.approx(1 - pred["in_distribution"].mean())
    rows = {r["images"]: r for r in g["test_passed_vs_flagged"]}
    assert rows["passed"]["n"] + rows["flagged"]["n"] == len(pred)
    from skinhelpers.share.model_card import model_card_text

    card = model_card_text(ham_run)
    assert "## Out-of-distribution guard" in card and f"{g['threshold']:.4g}" in card
