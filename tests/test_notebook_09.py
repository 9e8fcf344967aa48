"""Notebook 09 (external validation) through the pipeline, on a small real HAM10000 run
scored on the ISIC 9-class set: the ISIC images that are HAM10000 images (found by their
pixels) are listed and removed, and the numbers are reported with and without them.
And the pipeline's rule: with no ``external_dataset``, 09 is skipped with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_notebook_08 import prepare_run

from skinhelpers.data import manifest as datasets
from skinhelpers.data.imaging import read_rgb
from skinhelpers.files import write_json
from skinhelpers.run import pipeline

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "09_external_validation.ipynb"
HEADLINE = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_macro_ovr"}


def test_09_declares_external_dataset_and_is_skipped_without_it():
    """The generic skip rule is tested in test_run_batch.py; here: 09 opts into it."""
    declared = pipeline.declared_parameters(NB)
    assert declared["external_dataset"]["default"] in ('""', "''")
    assert (
        pipeline.skip_reason(declared, {})
        == "external_dataset is empty (run it with -p external_dataset NAME)"
    )
    assert pipeline.skip_reason(declared, {"external_dataset": "isic9"}) is None


def _attach_guard(ckpt: Path) -> None:
    """A guard as notebook 08 stores it: fitted on training images of the run (here: its
    manifest's first 40), threshold where 95% of the next 20 pass."""
    from skinhelpers.data.manifest import read_manifest
    from skinhelpers.evaluate import ood, ood_fit
    from skinhelpers.model.checkpoints import model_from_checkpoint

    df = read_manifest(ckpt.parents[1])
    model, info = model_from_checkpoint(ckpt)
    imgs = [read_rgb(p) for p in df["path"][:60]]
    x = ood.images_to_batch(imgs, info["image_size"], info["preprocess"], info["resize_mode"])
    f, lg = ood.features_and_logits(model, x, info["mean"], info["std"])
    photos = ood.package_photos(crops_per_photo=1)
    fo, lo = ood_fit.photo_features(model, info, photos)
    y = df["label_idx"].to_numpy()[:40]
    guard = ood.fit_guard(f[:40], y, f[40:], lg[40:], fo, lo, 0.95)
    ood_fit.attach_guard(ckpt, guard)


@pytest.fixture(scope="module")
def ext_run(ham_manifest, ham_dir, tmp_path_factory):
    """A HAM10000 run (80 images, one short checkpoint, a melanoma threshold as notebook
    08 leaves it), then ``--only 09`` against isic9."""
    run = tmp_path_factory.mktemp("nb09") / "ham"
    run.mkdir()
    prepare_run(run, datasets.subsample(ham_manifest, 80, seed=0), ema=False)
    _attach_guard(run / "checkpoints" / "best.pt")
    write_json(
        run / "metrics.json",  # the part of 08's metrics.json that 09 reads
        {
            "positive_class": {
                "class": "melanoma",
                "operating_points": [
                    {"target": "specificity", "target_value": 0.95, "threshold": 0.2}
                ],
            }
        },
    )
    pipeline.run(
        "ham10000",
        str(ham_dir.parent),
        "smoke",
        str(run),
        only="09",
        html=False,
        extra={
            "external_dataset": "isic9",
            "external_data_dir": str(ham_dir.parent),
            "checkpoint": "best",
            "tta_views": 1,
            "n_bootstrap": 20,
            "workers": 0,
        },
    )
    return run


@pytest.mark.slow  # hashes all of HAM10000 and isic9 once (cached), ~1-2 min on 2 cores
def test_external_validation_on_isic9(ext_run, ham_manifest, isic9_manifest):
    rec = json.loads((ext_run / "run.json").read_text())
    assert rec["results"]["09_external_validation.ipynb"]["status"] == "ok"
    # the overlap: exactly the (mapped-class) ISIC files whose id is a HAM10000 id
    ov = pd.read_csv(ext_run / "external_overlap.csv")
    mapped = isic9_manifest[isic9_manifest["label"] != "squamous cell carcinoma"]
    named = mapped.loc[mapped["image_id"].isin(set(ham_manifest["image_id"])), "relpath"]
    assert set(ov["relpath"]) == set(named) and len(named) > 1000
    assert ov["same_name"].all() and (ov["distance"] <= 36).all()
    assert (ov["source_image_id"] == ov["image_id"]).all()  # matched to the right image
    assert set(ov["run_split"]) <= {"train", "val", "test", "not in run"}

    m = json.loads((ext_run / "external_isic9_metrics.json").read_text())
    assert m["n_removed_overlap"] == len(ov) > 0
    assert m["n_dropped_unmapped"] == 197  # squamous cell carcinoma has no HAM class
    assert m["n_images"] + m["n_removed_overlap"] == m["n_images_with_overlap"] == len(mapped)
    for key in ("metrics", "metrics_with_overlap"):  # without the overlap / the whole set
        head = m[key]["headline"]
        assert HEADLINE <= set(head), key
        for v in head.values():
            assert v["ci_low"] - 1e-9 <= v["value"] <= v["ci_high"] + 1e-9
        assert m[key]["metrics"]["n"] == (
            m["n_images"] if key == "metrics" else m["n_images_with_overlap"]
        )
        mel = m[key]["positive_class"]  # melanoma vs rest at 08's threshold
        assert mel["threshold"] == 0.2 and {"auc", "sensitivity", "specificity"} <= set(mel)
    assert m["melanoma_threshold"] == 0.2

    # the guard 08 stored in the checkpoint: a column per image, and its share flagged
    pred = pd.read_csv(ext_run / "predictions_external_isic9.csv")
    assert {"ood_score", "in_distribution"} <= set(pred.columns)
    clean = pred[~pred["overlap"]]
    assert m["ood"]["flagged"] == pytest.approx(1 - clean["in_distribution"].mean())
    assert (pred["in_distribution"] == (pred["ood_score"] <= m["ood"]["threshold"])).all()
    parts = {r["images"]: r["n"] for r in m["ood"]["passed_vs_flagged"]}
    assert parts["passed"] + parts["flagged"] == m["n_images"]

    # the model card shows the clean numbers
    from skinhelpers.share.model_card import model_card_text

    card = model_card_text(ext_run)
    assert "## External test sets" in card and "external_isic9_metrics.json" in card
    assert f"n = {m['n_images']}" in card and "melanoma_sensitivity" in card
