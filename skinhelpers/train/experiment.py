"""From a run folder to a trained model: data, trials (notebook 06), the final run (07).

The trainer (:mod:`skinhelpers.train.launch`) knows nothing about files; this module wires it to
the run folder the earlier notebooks filled:

* ``split.csv`` (04) -> which images train, which validate (the test split is never
  touched here);
* ``preprocessing.json`` (02) -> how the image cache is built;
* ``augmentation.json`` (05) -> the per-image preset and CutMix/MixUp settings.

:func:`train` runs one configuration in this process; :func:`launch` runs the same under
``torchrun`` on several GPUs and streams its output; :func:`run_trials` trains a list of
candidate models on the same data and budget and :func:`choose_best` names the winner in
``best_config.json`` for notebook 07.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skinhelpers.data.cache import CachedImageDataset, build_cache
from skinhelpers.data.imaging import canonical_size, read_preprocessing
from skinhelpers.data.manifest import read_manifest, subsample
from skinhelpers.files import read_json
from skinhelpers.model.checkpoints import model_from_checkpoint
from skinhelpers.model.inference import predict_loader
from skinhelpers.model.metrics import val_metrics
from skinhelpers.split.store import fold_split, read_split
from skinhelpers.train import distributed as ddp
from skinhelpers.train.augment import eval_transform, read_augmentation, train_transform
from skinhelpers.train.config import DataMeta, TrainConfig
from skinhelpers.train.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    train_ds: object
    val_ds: object
    train_labels: np.ndarray
    meta: DataMeta
    augmentation: dict
    train_df: pd.DataFrame
    val_df: pd.DataFrame
    synthetic: bool = False


def drop_label_suspects(run_dir, train_df: pd.DataFrame, verbose: bool = True) -> pd.DataFrame:
    """Training rows without the label suspects of notebook 03's audit, when it was run with
    ``drop_label_issues`` (``label_audit.json``); unchanged otherwise. Only training loses
    them: validation and test keep their labels as given."""
    run_dir = Path(run_dir)
    meta = run_dir / "label_audit.json"
    if not meta.exists() or not read_json(meta).get("drop_from_training"):
        return train_df
    issues = pd.read_csv(run_dir / "label_issues.csv")
    # the audit's capped choice (label_audit.mark_drops); an older audit: every suspect
    column = "drop" if "drop" in issues else "is_issue"
    suspects = set(issues.loc[issues[column].astype(bool), "relpath"])
    keep = ~train_df["relpath"].isin(suspects)
    if verbose:
        log.info(
            f"label audit: {int((~keep).sum()):,} suspected label error(s) left out of the "
            f"{len(train_df):,} training images (validation and test keep theirs)"
        )
    out = train_df[keep].reset_index(drop=True)
    out.attrs = dict(train_df.attrs)
    return out


def load_data(
    run_dir,
    image_size: int | list[int],
    workers: int = 2,
    seed: int = 0,
    max_train_images: int = 0,
    augmentation: dict | None = None,
    cache_dir=None,
    show_progress: bool = True,
    fold: int | None = None,
) -> TrainData:
    """Training and validation datasets over the image cache of the run's split; with
    ``fold``, fold ``fold`` of the train+val pool validates and the other folds train
    (:func:`skinhelpers.split.store.fold_split`; fold 0 is the split itself)."""
    df = read_split(run_dir)
    if fold is not None:
        df = fold_split(df, fold)
    pre = read_preprocessing(run_dir, show_progress)
    aug = (
        dict(augmentation)
        if augmentation is not None
        else read_augmentation(run_dir, missing_ok=True, verbose=show_progress)
    )
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    val_df = df[df["split"] == "val"].reset_index(drop=True)
    if len(val_df) == 0:
        raise ValueError(
            f"the split in {run_dir} has no validation images; training needs them "
            "for early stopping and checkpoint selection"
        )
    train_df = drop_label_suspects(run_dir, train_df, verbose=show_progress)
    subsampled = bool(max_train_images and max_train_images < len(train_df))
    if subsampled:
        train_df = subsample(train_df, int(max_train_images), seed=seed).reset_index(drop=True)
    if not subsampled:
        # the whole manifest: the same cache (same key) as notebooks 02, 05 and 08 build
        used = read_manifest(run_dir)
    else:  # a subsample for quick trials: cache only what is used
        used = pd.concat([train_df, val_df], ignore_index=True)
        used.attrs = df.attrs
    cache = build_cache(
        used,
        image_size,
        pre["preprocess"],
        pre["resize_mode"],
        cache_dir=cache_dir,
        workers=workers or None,
        show_progress=show_progress,
    )
    train_ds = CachedImageDataset(cache, train_df, train_transform(aug["preset"], image_size))
    train_ds.augment_preset = aug["preset"]  # for augmentation on the device (augment_on)
    val_ds = CachedImageDataset(cache, val_df, eval_transform(image_size))
    meta = DataMeta(
        classes=list(df.attrs["classes"]),
        image_size=canonical_size(image_size),
        preprocess=pre["preprocess"],
        resize_mode=pre["resize_mode"],
        dataset=str(df.attrs.get("dataset", "")),
        positive_class=df.attrs.get("positive_class"),
    )
    return TrainData(
        train_ds,
        val_ds,
        train_df["label_idx"].to_numpy(np.int64),
        meta,
        aug,
        train_df,
        val_df,
        bool(df.attrs.get("synthetic", False)),
    )


def make_config(params: dict, augmentation: dict | None = None, **overrides) -> TrainConfig:
    """A checked :class:`TrainConfig` from ``params`` (a recipe, or a notebook's whole
    parameters: the keys that are training options are taken, the rest ignored); CutMix/MixUp
    from ``augmentation.json`` unless ``params`` or ``overrides`` set them. ``overrides``
    must all be training options (a typo is an error)."""
    mix = (
        {k: float(augmentation.get(k, 0.0)) for k in ("cutmix_alpha", "mixup_alpha", "mix_prob")}
        if augmentation
        else {}
    )
    cfg = TrainConfig.from_params({**mix, **params}, **overrides)
    cfg.check()
    return cfg


def train(
    cfg: TrainConfig, data: TrainData, out_dir, dist: ddp.DistInfo | None = None, on_epoch_end=None
) -> dict:
    """Train ``cfg`` on ``data`` in this process; outputs go to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        cfg,
        data.train_ds,
        data.val_ds,
        data.train_labels,
        data.meta,
        out_dir,
        dist=dist,
        on_epoch_end=on_epoch_end,
        train_sources=data.train_df["source"].to_numpy() if "source" in data.train_df else None,
    )
    res = trainer.fit()
    res["model"] = trainer.model
    res["n_train"], res["n_val"] = len(data.train_ds), len(data.val_ds)
    res["rank"] = trainer.dist.rank
    res["is_main"] = trainer.dist.is_main  # the process that writes (local rank 0 of node 0)
    return res


# --------------------------------------------------------------------------- trials (06)
def trial_recipe(params: dict) -> dict:
    """The recipe of the model trials (notebook 06) from its parameters: the ``trial_*``
    budget (epochs, freeze epochs, batch size), the training options among ``params``
    (lr, sampling, loss, monitor, workers, seed, ...), and what a short trial does without:
    no EMA, no early stopping, no checkpoints, no TensorBoard, a warm-up of at most a
    quarter of the epochs."""
    known = set(TrainConfig.field_names())
    epochs = int(params["trial_epochs"])
    return {
        "epochs": epochs,
        "freeze_epochs": params["trial_freeze_epochs"],
        "batch_size": params["trial_batch_size"],
        **{k: v for k, v in params.items() if k in known},
        "ema": False,
        "patience": 0,
        "save": "none",
        "tensorboard": False,
        "warmup_epochs": min(1.0, epochs / 4),
    }


def evaluate_checkpoint(path, dataset, batch_size: int = 64, device: str = "cpu") -> dict:
    """Rebuild a checkpoint and score it on ``dataset`` (uint8 images, labels) with the
    trainer's validation metrics: a check that the saved file reproduces its recorded
    validation metrics."""

    model, info = model_from_checkpoint(path, device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    pred = predict_loader(model, loader, info["mean"], info["std"], desc=None)
    pos = info.get("positive_class")
    pos = info["classes"].index(pos) if pos in info["classes"] else None
    return val_metrics(torch.from_numpy(pred.logits).float(), torch.from_numpy(pred.labels), pos)
