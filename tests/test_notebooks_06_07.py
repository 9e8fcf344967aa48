"""Notebooks 06 (model trials) and 07 (final training) execute under papermill, tiny budget.

The run folder is prepared the way notebooks 01 and 04 leave it (manifest and split);
02 and 05 are absent, so the notebooks use their documented fallbacks. The artifacts are
checked, not only the exit status.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers_run import run_notebook
from helpers_train import demo_run_folder

from skinhelpers.files import PROJECT_ROOT
from skinhelpers.model import checkpoints
from skinhelpers.model.specs import MODEL_NAMES

NB = PROJECT_ROOT / "notebooks"
pytestmark = pytest.mark.slow


def _execute(name, run_dir, **params):
    run_notebook(NB / name, run_dir / name, {"run_dir": str(run_dir), **params})


def test_notebooks_06_07_demo(tmp_path, demo_dir, demo_manifest, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # hub weights: a skipped trial, never a download
    monkeypatch.setenv("SKINHELPERS_PROGRESS", "plain")
    run = demo_run_folder(demo_manifest, tmp_path / "run")
    common = dict(dataset="demo", data_dir=str(demo_dir), workers=0, seed=0)
    _execute(
        "06_model_trials.ipynb",
        run,
        **common,
        trial_models=["small_cnn", "efficientnet_lite0", "efficientnet_b0"],
        trial_epochs=1,
        trial_image_size=32,
        trial_batch_size=16,
        trial_max_train_images=96,
    )
    trials = pd.read_csv(run / "trials.csv")
    assert list(trials["trial"]) == ["small_cnn", "efficientnet_lite0", "efficientnet_b0"]
    assert (
        trials.loc[2, "status"].startswith("skipped") and "cannot be had" in trials.loc[2, "status"]
    )
    done = trials[trials["status"] == "done"]
    assert done["balanced_accuracy"].between(0, 1).all() and (done["images_per_s"] > 0).all()
    best = json.loads((run / "best_config.json").read_text())
    assert best["trial"] in ("small_cnn", "efficientnet_lite0")
    assert best["arch"] in MODEL_NAMES and best["image_size"] == 32

    _execute(
        "07_final_retrain.ipynb",
        run,
        **common,
        image_size=32,
        epochs=2,
        batch_size=16,
        freeze_epochs=1,
        ema=True,
    )
    ck = run / "checkpoints"
    assert {p.name for p in ck.iterdir()} >= {"best.pt", "last.pt", "best_ema.pt", "final_ema.pt"}
    for name in ("best.pt", "best_ema.pt", "final_ema.pt", "last.pt"):
        raw = torch.load(ck / name, weights_only=True)
        assert raw["arch"] == best["arch"] and raw["image_size"] == 32
    model, info = checkpoints.model_from_checkpoint(ck / "best.pt")
    assert info["classes"] == demo_manifest.attrs["classes"]
    hist = pd.read_csv(run / "history.csv")
    assert list(hist["epoch"]) == [1, 2]
    assert any((run / "tb").iterdir())
    text = (run / "07_final_retrain.ipynb").read_text()
    assert "best.pt reloaded" in text
