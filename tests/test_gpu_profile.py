"""The gpu profile cannot rot: the whole chain runs with it on the CPU, with tiny overrides
(image size, image count, epochs, a trial list whose hub-weight trial is skipped offline)."""

from __future__ import annotations

import json
import time

import nbformat
import pandas as pd
import pytest

from skinhelpers.evaluate import compare
from skinhelpers.run import pipeline, profiles

# everything the gpu profile sets that would make a CPU run long; the rest (preprocess,
# recipe, trial variants, lr, ...) is the gpu profile's own
TINY_GPU_OVERRIDES = {
    "image_size": 32,
    "max_images": 240,
    "workers": 0,
    "trial_models": ["small_cnn", "efficientnet_b0"],  # b0: hub weights, offline here
    "trial_epochs": 1,
    "trial_freeze_epochs": 0,
    "trial_image_size": 32,
    "trial_batch_size": 32,
    "epochs": 1,
    "freeze_epochs": 0,
    "batch_size": 32,
    "patience": 0,
    "n_bootstrap": 50,
    "tta_views": 1,
    "cam_max_images": 4,
    "n_folds": 3,  # three fold models instead of five
}


def test_overrides_only_shrink_what_the_gpu_profile_sets():
    gpu = profiles.PROFILES["gpu"]
    declared = set().union(
        *(pipeline.declared_parameters(p) for p in pipeline.numbered_notebooks())
    )
    assert set(TINY_GPU_OVERRIDES) <= declared
    resolved = profiles.resolve("gpu", TINY_GPU_OVERRIDES)
    # what the overrides leave alone is the gpu profile's own, as resolved for the run
    for k, v in gpu.items():
        if k not in TINY_GPU_OVERRIDES:
            assert resolved[k] == v, k
    assert resolved["preprocess"] == "shades_of_gray" and resolved["augment_on"] == "device"
    # and every numeric override makes the run smaller, never larger
    for k, v in TINY_GPU_OVERRIDES.items():
        if isinstance(v, (int, float)) and isinstance(gpu.get(k), (int, float)):
            assert v <= gpu[k] or gpu[k] == 0, (k, v, gpu[k])  # 0: "all" (max_images)


@pytest.mark.slow
def test_gpu_profile_end_to_end_on_cpu_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # kernels inherit it: no network, no hang
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # and no cached weights
    t0 = time.monotonic()
    run_dir = pipeline.run(
        "demo", None, "gpu", str(tmp_path / "gpu-ci"), extra=TINY_GPU_OVERRIDES, html=True
    )
    assert time.monotonic() - t0 < 900
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["profile"] == "gpu" and rec["finished"]
    assert {r["status"] for r in rec["results"].values()} <= {"ok", "skipped"}
    assert rec["parameters"]["preprocess"] == "shades_of_gray"
    trials = nbformat.read(run_dir / "06_model_trials.ipynb", as_version=4)
    text = "".join(
        o.get("text", "")
        for c in trials.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    after = text.split("--- trial efficientnet_b0", 1)[1]  # fails fast and says why
    assert after.lstrip().startswith("skipped:") and "offline" in after.lower()
    # K-fold: 04 made 3 folds, 07 trained the fold-1 and fold-2 models on their own
    # validation folds, 08 evaluated the average of the three on the test split
    split = pd.read_csv(run_dir / "split.csv")
    assert sorted(split.loc[split["split"] != "test", "fold"].unique()) == [0, 1, 2]
    for f in (1, 2):
        res = json.loads((run_dir / "folds" / f"fold{f}" / "train_result.json").read_text())
        assert res["n_val"] == (split["fold"] == f).sum()
        assert res["n_train"] == ((split["split"] != "test") & (split["fold"] != f)).sum()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["ensemble"]["members"]) == 3
    assert "balanced_accuracy" in metrics["ensemble"]["vs_primary"]
    assert set(metrics["models"]) >= {metrics["primary"], "ensemble"}
    ens = pd.read_csv(run_dir / "predictions_test_ensemble.csv")
    assert len(ens) == (split["split"] == "test").sum()
    _, diff = compare.compare_runs(
        [run_dir, run_dir / "predictions_test_ensemble.csv"], 20, min_shared=10
    )
    assert (diff["n_shared"] == len(ens)).all()
    card = (run_dir / "MODEL_CARD.md").read_text()
    assert "--checkpoint checkpoints/best_ema.pt folds/fold1/checkpoints/best_ema.pt" in card
    assert (run_dir / "report" / "index.html").exists()


def test_the_gpu_batch_and_learning_rate_follow_the_written_rule():
    """Batch size and learning rate of the gpu profile come from one rule (the largest
    batch that fits, the learning rate scaled linearly from where it was measured); its
    compile mode is a GPU mode (CUDA graphs), and compile itself is off until measured."""
    from skinhelpers.train.config import TrainConfig

    gpu = profiles.PROFILES["gpu"]
    assert gpu["batch_size"] == gpu["trial_batch_size"] == profiles.GPU_BATCH
    b0, lr0 = profiles.GPU_LR_AT
    assert gpu["lr"] == pytest.approx(lr0 * profiles.GPU_BATCH / b0)
    assert profiles.linear_lr(b0) == lr0 and profiles.linear_lr(2 * b0) == 2 * lr0
    assert "warmup_epochs" not in gpu and TrainConfig.warmup_epochs == 1.0  # warm-up kept
    assert gpu["compile_mode"] == "reduce-overhead" and not gpu.get("torch_compile", False)
    assert "convnext_tiny" in gpu["trial_models"]  # a larger backbone, by its timm name
