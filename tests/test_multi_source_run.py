"""Several datasets in one run, end to end: run_all.sh on HAM10000 + ISIC 9-class (real
images, a smoke budget), chapters 01-09, with the SYNTHETIC demo set as the external set
of chapter 09 (a dataset the run did not train on)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from helpers_script import run_script

from skinhelpers.data import manifest
from skinhelpers.files import PROJECT_ROOT
from skinhelpers.run import pipeline

pytestmark = pytest.mark.slow  # the nine chapters on 2 cores: a few minutes


@pytest.fixture(scope="module")
def multi_run(shared_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("multi") / "run"
    pipeline.run(
        "ham10000+isic9",
        str(shared_data),
        "smoke",
        str(run),
        extra={
            "max_images": 400,
            "external_dataset": "demo",
            "n_bootstrap": 200,
            # what this test reads comes from the data chapters and 08-09, not from how
            # well the model learned: one trial and one epoch of training
            "trial_models": ["small_cnn"],
            "epochs": 1,
        },
        html=True,
    )
    return run


def test_the_manifest_holds_both_sources_and_no_image_twice(multi_run, ham_manifest):
    df = manifest.read_manifest(multi_run)
    assert set(df["source"]) == {"ham10000", "isic9"}
    assert [s["name"] for s in df.attrs["sources"]] == ["ham10000", "isic9"]
    # no ISIC 9-class image that is a HAM10000 image (by its id) survived chapter 01
    isic = df[df["source"] == "isic9"]
    assert not isic["image_id"].isin(set(ham_manifest["image_id"])).any()
    findings = pd.read_csv(multi_run / "validation_findings.csv")
    assert (findings["kind"] == "cross_source_copy").sum() > 1000


def test_evaluation_reports_every_source(multi_run):
    metrics = json.loads((multi_run / "metrics.json").read_text())
    assert set(metrics["sources"]) == {"ham10000", "isic9"}
    assert sum(r["n_images"] for r in metrics["sources"].values()) == metrics["n_test"]
    sub = pd.read_csv(multi_run / "subgroups.csv")
    assert set(sub.loc[sub["attribute"] == "source", "group"]) == {"ham10000", "isic9"}
    assert "source_label" not in set(sub["attribute"])  # the label itself is no subgroup
    shortcut = json.loads((multi_run / "source_shortcut.json").read_text())
    assert shortcut["probe"]["image size"]["balanced_accuracy"] > 0.9  # 200x150 vs 180x180
    card = (multi_run / "MODEL_CARD.md").read_text()
    assert "## Sources" in card and "isic9" in card
    assert "Per source" in (multi_run / "report" / "index.html").read_text()


def test_external_chapter_works_for_a_dataset_outside_the_run(multi_run):
    out = json.loads((multi_run / "external_demo_metrics.json").read_text())
    assert out["n_images"] > 0
    pred = pd.read_csv(multi_run / "predictions_external_demo.csv")
    assert len(pred) == out["n_images_with_overlap"] and "overlap" in pred.columns


def test_validation_per_source_benchmark(multi_run, tmp_path):
    """benchmarks/bench_val_sources.py scores the run's checkpoint on its validation images,
    per source, and averages over the sources (each weighs the same)."""
    env = {**os.environ, "SKINLAB_BENCH_RESULTS": str(tmp_path), "SKINHELPERS_PROGRESS": "plain"}
    script = PROJECT_ROOT / "benchmarks" / "bench_val_sources.py"
    proc = run_script(script, str(multi_run), "--min-class", "1", "--label", "t", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((tmp_path / "val_sources_t.json").read_text())["runs"][str(multi_run)]
    split = pd.read_csv(multi_run / "split.csv")
    val = split[split["split"] == "val"]
    assert set(res["sources"]) == {"ham10000", "isic9"}
    assert sum(r["n"] for r in res["sources"].values()) == len(val)
    n_isic = int(val["relpath"].str.startswith("isic9/").sum())
    assert res["sources"]["isic9"]["n"] == n_isic > 0
    bas = [r["balanced_accuracy"] for r in res["sources"].values()]
    assert all(0 <= b <= 1 for b in bas)
    assert res["mean_over_sources"]["balanced_accuracy"] == pytest.approx(sum(bas) / 2)
