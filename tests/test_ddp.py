"""DistributedDataParallel: two gloo processes on the CPU through the torchrun entry point."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers_train import demo_run_folder

from skinhelpers.model import checkpoints
from skinhelpers.train import experiment, launch


@pytest.mark.slow
def test_two_process_gloo_run_completes_and_ranks_agree(demo_manifest, tmp_path):
    run = demo_run_folder(demo_manifest, tmp_path / "run")
    cfg = experiment.make_config(
        dict(
            arch="small_cnn",
            epochs=2,
            batch_size=8,
            workers=0,
            ema=True,
            patience=0,
            tensorboard=False,
            seed=3,
            balance_power=0.5,
            logit_adjust_tau=1.0,
        ),
        None,
    )
    spec = launch.write_launch_config(
        run / "train_config.json",
        cfg,
        run,
        run / "out",
        image_size=32,
        max_train_images=64,
        augmentation={"preset": "basic", "cutmix_alpha": 1.0, "mixup_alpha": 0.0, "mix_prob": 0.5},
    )
    res = launch.launch(spec, nproc=2, extra_env={"OMP_NUM_THREADS": "1"})
    assert res["epochs_run"] == 2
    sums = res["rank_checksums"]
    assert len(sums) == 2 and sums[0] == pytest.approx(sums[1], rel=0, abs=1e-9)
    # the main process wrote the usual outputs; the checkpoint is a plain one
    hist = pd.read_csv(run / "out" / "history.csv")
    assert list(hist["epoch"]) == [1, 2]
    model, info = checkpoints.model_from_checkpoint(run / "out" / "checkpoints" / "last.pt")
    assert info["image_size"] == 32 and info["classes"] == demo_manifest.attrs["classes"]
    total = sum(
        float(t.double().sum()) for t in model.state_dict().values() if t.is_floating_point()
    )
    assert total == pytest.approx(sums[0], rel=1e-9)
    # each rank trained on half of each batch set: 2 ranks x steps x 8 images per epoch
    n_train = res["n_train"]
    assert hist["images_per_s"].notna().all() and n_train > 16


def test_launch_failure_names_the_problem(tmp_path):
    cfg = experiment.make_config(dict(arch="small_cnn", epochs=1, workers=0), None)
    spec = launch.write_launch_config(
        tmp_path / "c.json", cfg, tmp_path / "missing_run", tmp_path / "out", image_size=32
    )
    with pytest.raises(RuntimeError, match="torchrun exited") as err:
        launch.launch(spec, nproc=2, extra_env={"OMP_NUM_THREADS": "1"})
    assert "split.csv" in str(err.value)  # the workers' error is in the message


@pytest.mark.slow
def test_a_fold_model_trains_under_torchrun(demo_manifest, tmp_path):
    """K-fold training on several GPUs goes through the same launch: the fold reaches the
    workers, which validate on that fold."""
    from skinhelpers.data import manifest as datasets
    from skinhelpers.split import grouped, store
    from skinhelpers.train import kfold

    run = tmp_path / "run"
    run.mkdir()
    datasets.save_manifest(demo_manifest, run)
    split = grouped.grouped_split(demo_manifest, seed=0, n_folds=3)
    store.save_split(split, run)
    cfg = experiment.make_config(
        dict(arch="small_cnn", epochs=1, batch_size=8, workers=0, tensorboard=False), None
    )
    table = kfold.train_folds(cfg, run, 32, nproc=2, folds=[2])
    assert list(table.index) == [2] and table.loc[2, "seed"] == cfg.seed + 2
    assert table.loc[2, "val images"] == (split["fold"] == 2).sum()
    res = pd.read_json(run / "folds" / "fold2" / "train_result.json", typ="series")
    assert res["n_val"] == (split["fold"] == 2).sum()
    assert res["n_train"] == ((split["split"] != "test") & (split["fold"] != 2)).sum()
    assert (run / "folds" / "fold2" / "checkpoints" / "best.pt").exists()
