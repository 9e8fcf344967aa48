"""Notebooks 04 (splitting) and 05 (augmentation) execute under papermill, small parameters.

The run folder is prepared the way notebook 01 leaves it (a validated, subsampled
manifest), then 04 and 05 run in it; their artifacts are checked, not only their exit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from skinhelpers.data import manifest as datasets
from skinhelpers.data.validate import validate
from skinhelpers.files import PROJECT_ROOT
from skinhelpers.split import store
from skinhelpers.train import augment

NB = PROJECT_ROOT / "notebooks"
pytestmark = pytest.mark.slow


def _prepare_run(run_dir: Path, manifest, max_images: int) -> Path:
    sub = datasets.subsample(manifest, max_images, seed=0)
    clean = validate(sub, show_progress=False).apply(sub, verbose=False)
    datasets.save_manifest(clean, run_dir)
    return run_dir


def _execute(name: str, run_dir: Path, **params) -> None:
    import papermill as pm

    pm.execute_notebook(
        str(NB / name),
        str(run_dir / name),
        cwd=str(NB),
        parameters={"run_dir": str(run_dir), **params},
        progress_bar=False,
        kernel_name="python3",
    )


def _check_run(run_dir: Path, n_folds: int, preset: str) -> None:
    df = store.read_split(run_dir)
    assert set(df["split"]) == {"train", "val", "test"}
    assert (df.groupby("group")["split"].nunique() == 1).all()
    info = df.attrs["split"]
    assert info["checks"]["ok"] and info["n_folds"] == n_folds
    if n_folds:
        assert sorted(df.loc[df["split"] != "test", "fold"].unique()) == list(range(n_folds))
    cfg = augment.read_augmentation(run_dir)
    assert cfg["preset"] == preset
    text = (run_dir / "05_augmentation.ipynb").read_text()
    assert "images/s per worker" in text  # the throughput line was printed


def test_notebooks_04_05_demo(tmp_path, demo_dir, demo_manifest):
    run = _prepare_run(tmp_path, demo_manifest, 0)
    _execute("04_splitting.ipynb", run, dataset="demo", data_dir=str(demo_dir), n_folds=3)
    _execute(
        "05_augmentation.ipynb",
        run,
        dataset="demo",
        data_dir=str(demo_dir),
        image_size=48,
        preset="strong",
        cutmix_alpha=1.0,
        mix_prob=0.5,
        throughput_images=24,
        gallery_images=2,
        gallery_views=3,
        workers=1,
    )
    _check_run(run, n_folds=3, preset="strong")
    assert augment.read_augmentation(run)["cutmix_alpha"] == 1.0


@pytest.mark.realdata
def test_notebooks_04_05_ham10000(tmp_path, ham_dir, ham_manifest):
    run = _prepare_run(tmp_path, ham_manifest, 400)
    _execute("04_splitting.ipynb", run, dataset="ham10000", data_dir=str(ham_dir))
    _execute(
        "05_augmentation.ipynb",
        run,
        dataset="ham10000",
        data_dir=str(ham_dir),
        image_size=64,
        throughput_images=32,
        gallery_images=3,
        gallery_views=3,
        workers=1,
    )
    _check_run(run, n_folds=0, preset="basic")
    df = store.read_split(run)
    # every HAM class reaches every split even in a 400-image subsample
    assert (store.split_table(df)[["train", "val", "test"]] > 0).all().all()
