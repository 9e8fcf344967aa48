"""Lesion-grouped K-fold training (the gpu profile): one model per fold of the train+val
pool, for notebook 08's ensemble.

Notebook 04 deals the train+val pool into ``n_folds`` grouped, stratified folds, and its
validation split *is* fold 0. So the model notebook 07 trains anyway is the fold-0 model;
:func:`train_folds` adds the models of folds 1..K-1, each validated (checkpoint selection,
early stopping, schedule) on its own held-out fold and trained on the others, with the
same recipe and seed ``seed + fold``. The test split is never touched. Layout::

    <run>/checkpoints/...            fold 0 (the run's own model)
    <run>/folds/fold1/checkpoints/   fold 1, with its history.csv, train_result.json
    ...

Averaging the K models' probabilities is :class:`skinhelpers.model.ensemble.Ensemble`.
Each fold model has *seen* the other folds, so only fold ``i``'s own model may score fold
``i``: the ensemble has no honest validation predictions, and notebook 08 scores it on the
test split only, leaving everything chosen on validation to the single (fold-0) model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from skinhelpers.files import write_json
from skinhelpers.split.store import n_folds_of, read_split
from skinhelpers.train import experiment, launch
from skinhelpers.train.config import TrainConfig

log = logging.getLogger(__name__)

FOLDS_DIR = "folds"


def fold_dir(run_dir, fold: int) -> Path:
    """Where the model of ``fold`` lives: the run folder itself for fold 0,
    ``<run_dir>/folds/fold<i>/`` for the others."""
    run_dir = Path(run_dir)
    return run_dir if int(fold) == 0 else run_dir / FOLDS_DIR / f"fold{int(fold)}"


def fold_config(cfg: TrainConfig, fold: int) -> TrainConfig:
    """``cfg`` for the model of ``fold``: seed ``seed + fold`` (fold 0 keeps the run's), so
    the fold models also differ in initialisation and sampling."""
    return TrainConfig.from_dict({**asdict(cfg), "seed": int(cfg.seed) + int(fold)})


def fold_checkpoints(run_dir, name: str) -> list[Path]:
    """Checkpoint ``name`` (``best``, ``best_ema``, ``final_ema``) of every fold model, fold
    0 first. ``[]`` for a run that was not trained K-fold; a FileNotFoundError naming the
    missing files when K-fold training did not finish."""
    run_dir = Path(run_dir)
    if not (run_dir / FOLDS_DIR).is_dir():
        return []
    k = n_folds_of(read_split(run_dir))
    paths = [fold_dir(run_dir, i) / "checkpoints" / f"{name}.pt" for i in range(k)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {k} fold checkpoint(s) '{name}' missing, e.g. {missing[:2]}: "
            "notebook 07's K-fold training did not finish (run it again: it resumes)"
        )
    return paths


def train_folds(
    cfg: TrainConfig,
    run_dir,
    image_size: int | list[int],
    augmentation: dict | None = None,
    nproc: int = 1,
    folds: list[int] | None = None,
) -> pd.DataFrame:
    """Train the models of ``folds`` (default: 1..K-1; fold 0 is the run's own model) into
    :func:`fold_dir`, one after the other, in this process or under ``torchrun``
    (``nproc`` > 1). Each resumes from its ``last.pt`` if interrupted. Returns one row per
    fold: images, best epochs, validation scores, minutes."""
    run_dir = Path(run_dir)
    k = n_folds_of(read_split(run_dir))
    if k < 2:
        raise ValueError(
            f"K-fold training needs folds: the split in {run_dir} has none; run notebook 04 "
            "with n_folds >= 2"
        )
    folds = list(range(1, k)) if folds is None else [int(f) for f in folds]
    bad = [f for f in folds if not 0 <= f < k]
    if bad:
        raise ValueError(f"fold(s) {bad} out of range: this split has folds 0..{k - 1}")
    rows = []
    for f in folds:
        out = fold_dir(run_dir, f)
        fcfg = fold_config(cfg, f)
        log.info(f"\n=== fold {f} of {k}: validating on fold {f}, training on the others -> {out}")
        t0 = time.perf_counter()
        if nproc > 1:
            out.mkdir(parents=True, exist_ok=True)
            spec = launch.write_launch_config(
                out / "train_config.json", fcfg, run_dir, out, image_size,
                augmentation=augmentation, fold=f,
            )  # fmt: skip
            res = launch.launch(spec, nproc, log_path=out / "train.log")
        else:
            data = experiment.load_data(
                run_dir, image_size, fcfg.workers, fcfg.seed, augmentation=augmentation, fold=f
            )
            res = experiment.train(fcfg, data, out)
            res.pop("model", None)
            summary = {key: v for key, v in res.items() if key != "history"}
            write_json(out / "train_result.json", summary)
        rows.append(
            {
                "fold": f,
                "train images": res.get("n_train"),
                "val images": res.get("n_val"),
                "seed": fcfg.seed,
                "epochs run": res.get("epochs_run"),
                "best epoch": res.get("best_epoch"),
                "best EMA epoch": res.get("best_ema_epoch"),
                f"val {cfg.monitor}": (res.get("best_val") or {}).get(cfg.monitor),
                f"EMA val {cfg.monitor}": (res.get("best_ema_val") or {}).get(cfg.monitor),
                "minutes": round((time.perf_counter() - t0) / 60, 2),
            }
        )
    return pd.DataFrame(rows).set_index("fold")


__all__ = ["FOLDS_DIR", "fold_dir", "fold_config", "fold_checkpoints", "train_folds"]
