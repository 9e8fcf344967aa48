"""The gpu profile cannot rot: the whole chain runs with it on the CPU, with tiny overrides
(image size, image count, epochs, a trial list whose hub-weight trial is skipped offline);
and benchmarks/gpu_check.sh, the prepared GPU check of issue 26, runs end to end on the CPU
with tiny arguments, as the chain's 07-08 (one test: the two shared one run of 07-08)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from skinhelpers.evaluate import compare
from skinhelpers.files import PROJECT_ROOT
from skinhelpers.run import pipeline, profiles, report

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
    "n_folds": 2,  # two fold models instead of five: the ensemble all the same
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


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """No network and no cached weights, for this process and the kernels it starts."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # kernels inherit it: no network, no hang
    mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def prepared(offline, tmp_path_factory):
    """A run folder where the gpu profile's 01-05 ran on the demo set (the data decisions
    that 06-08 and gpu_check.sh's steps 4-5 read)."""
    return pipeline.run(
        "demo",
        None,
        "gpu",
        str(tmp_path_factory.mktemp("gpu") / "prepared"),
        only="01-05",
        extra=_declared("01-05"),
        html=False,
    )


def _declared(selected: str) -> dict:
    """TINY_GPU_OVERRIDES that the notebooks ``selected`` declare (a run of some chapters
    refuses a parameter none of them declares)."""
    nbs = pipeline.select(pipeline.numbered_notebooks(), selected)
    declared = set().union(*(pipeline.declared_parameters(nb) for nb in nbs))
    return {k: v for k, v in TINY_GPU_OVERRIDES.items() if k in declared}


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


def _pairs(selected: str) -> str:
    """TINY_GPU_OVERRIDES that the notebooks ``selected`` declare, as ``-p NAME VALUE``."""
    keep = {k: v for k, v in _declared(selected).items() if k != "image_size"}
    return " ".join(f"-p {k} {v}" for k, v in keep.items())


@pytest.mark.slow
def test_gpu_profile_end_to_end_on_cpu_offline_with_gpu_check(prepared):
    """The gpu profile's chain to its end: 06 here, then gpu_check.sh on the same folder,
    which finds 01-05 done (as on the GPU box with a folder copied from another machine;
    its own 01-05 step is the same ``pipeline --only 01-05`` that made ``prepared``), times
    the trainer and runs 07-08 with the tiny overrides."""
    run_dir = pipeline.run(
        "demo", None, "gpu", str(prepared), only="06", extra=_declared("06"), html=False
    )
    trials = nbformat.read(run_dir / "06_model_trials.ipynb", as_version=4)
    text = "".join(
        o.get("text", "")
        for c in trials.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    after = text.split("--- trial efficientnet_b0", 1)[1]  # fails fast and says why
    assert after.lstrip().startswith("skipped:") and "offline" in after.lower()

    out = run_dir.parent / "gpu_check_out"
    env = {
        **os.environ,
        "PY": sys.executable,
        "DATASET": "demo",
        "RUN": str(run_dir),
        "GPU_CHECK_OUT": str(out),
        "IMAGE_SIZE": "32",
        "BATCH_SIZES": "8,16",
        "STEPS": "2",
        "REPEATS": "1",
        "N_CACHE": "48",
        "MAX_MINUTES": "1",
        "RUN_P": _pairs("07-08"),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        ["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "=== gpu_check 5/5" in proc.stdout
    assert "01-05: " in proc.stdout and "has them" in proc.stdout  # step 3 found them done
    env_json = json.loads((out / "env.json").read_text())
    assert env_json["torch"] and "gpus" in env_json
    eager = json.loads((out / "eager" / "train_overhead.json").read_text())
    assert eager["image_size"] == 32 and eager["batch_sizes"] == [8, 16]
    assert {(r["batch_size"], r["loop"]) for r in eager["rows"]} == {
        (b, loop) for b in (8, 16) for loop in ("bare", "trainer")
    }
    compiled = json.loads((out / "compiled" / "train_overhead.json").read_text())
    assert compiled["compile_modes"] == ["reduce-overhead"] and compiled["batch_sizes"] == [16]
    assert not any(r["compiled"] for r in compiled["rows"])  # a GPU mode: eager on the CPU
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predictions_saved"] == [
        "predictions_test.csv",
        "predictions_test_ensemble.csv",
    ]
    assert summary["models"] == 2 and summary["max_minutes"] == 1.0
    assert {"ensemble", summary["primary"]} <= set(summary["test"])
    copied = json.loads((out / "run" / "run.json").read_text())
    assert copied["parameters"]["arch"] == "efficientnet_lite0"
    assert len(list((out / "run" / "folds").iterdir())) == 1  # fold 0's model is the primary

    # the run folder itself: every chapter of the gpu profile ran, 01-05 and 06 before
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec == copied and rec["profile"] == "gpu" and rec["finished"]
    assert {r["status"] for r in rec["results"].values()} <= {"ok", "skipped"}
    assert rec["parameters"]["preprocess"] == "shades_of_gray"
    # K-fold: 04 made 2 folds, 07 trained the fold-1 model on its own validation fold, 08
    # evaluated the average of the two on the test split
    split = pd.read_csv(run_dir / "split.csv")
    assert sorted(split.loc[split["split"] != "test", "fold"].unique()) == [0, 1]
    res = json.loads((run_dir / "folds" / "fold1" / "train_result.json").read_text())
    assert res["n_val"] == (split["fold"] == 1).sum()
    assert res["n_train"] == ((split["split"] != "test") & (split["fold"] != 1)).sum()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["ensemble"]["members"]) == 2
    assert "balanced_accuracy" in metrics["ensemble"]["vs_primary"]
    assert set(metrics["models"]) >= {metrics["primary"], "ensemble"}
    ens = pd.read_csv(run_dir / "predictions_test_ensemble.csv")
    assert len(ens) == (split["split"] == "test").sum()
    _, diff = compare.compare_runs(
        [run_dir, run_dir / "predictions_test_ensemble.csv"], 20, min_shared=10
    )
    assert (diff["n_shared"] == len(ens)).all()
    index = report.render_report(run_dir)  # what run_all.sh renders at the end: pages, card
    assert "06_model_trials.html" in index.read_text()
    card = (run_dir / "MODEL_CARD.md").read_text()
    assert "--checkpoint checkpoints/best_ema.pt folds/fold1/checkpoints/best_ema.pt" in card
