"""From a run folder to a trained model: data, trials (notebook 06), the final run (07).

The trainer (:mod:`skinhelpers.train`) knows nothing about files; this module wires it to
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

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import ddp
from .runs import PROJECT_ROOT, read_json, write_json
from .models import PretrainedWeightsError, parse_variant
from .train import DataMeta, TrainConfig, Trainer

DEFAULT_PREPROCESSING = {"preprocess": "none", "resize_mode": "squash"}
DEFAULT_AUGMENTATION = {"preset": "basic", "cutmix_alpha": 0.0, "mixup_alpha": 0.0,
                        "mix_prob": 0.0}


def read_preprocessing(run_dir, verbose: bool = True) -> dict:
    """``preprocessing.json`` of notebook 02, or none/squash (with a note) if it is absent."""
    path = Path(run_dir) / "preprocessing.json"
    if not path.exists():
        if verbose:
            print(f"note: {path.name} not found in the run folder (notebook 02 writes it); "
              "using no preprocessing and squash resizing")
        return dict(DEFAULT_PREPROCESSING)
    d = read_json(path)
    return {"preprocess": d.get("preprocess") or "none",
            "resize_mode": d.get("resize_mode") or "squash"}


def read_augmentation(run_dir, verbose: bool = True) -> dict:
    """``augmentation.json`` of notebook 05, or the ``basic`` preset (with a note)."""
    path = Path(run_dir) / "augmentation.json"
    if not path.exists():
        if verbose:
            print(f"note: {path.name} not found in the run folder (notebook 05 writes it); "
              f"using {DEFAULT_AUGMENTATION}")
        return dict(DEFAULT_AUGMENTATION)
    from .augment import read_augmentation as _read

    return _read(run_dir)


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


def load_data(run_dir, image_size: int, workers: int = 2, seed: int = 0,
              max_train_images: int = 0, augmentation: dict | None = None,
              cache_dir=None, show_progress: bool = True) -> TrainData:
    """Training and validation datasets over the image cache of the run's split."""
    from .augment import eval_transform, train_transform
    from .cache import CachedImageDataset, build_cache
    from .datasets import read_manifest, subsample
    from .splits import read_split

    df = read_split(run_dir)
    pre = read_preprocessing(run_dir, show_progress)
    aug = (dict(augmentation) if augmentation is not None
           else read_augmentation(run_dir, show_progress))
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    val_df = df[df["split"] == "val"].reset_index(drop=True)
    if len(val_df) == 0:
        raise ValueError(f"the split in {run_dir} has no validation images; training needs them "
                         "for early stopping and checkpoint selection")
    if max_train_images and max_train_images < len(train_df):
        train_df = subsample(train_df, int(max_train_images), seed=seed).reset_index(drop=True)
    if len(train_df) == (df["split"] == "train").sum():
        # the whole manifest: the same cache (same key) as notebooks 02, 05 and 08 build
        used = read_manifest(run_dir)
    else:  # a subsample for quick trials: cache only what is used
        used = pd.concat([train_df, val_df], ignore_index=True)
        used.attrs = df.attrs
    cache = build_cache(used, image_size, pre["preprocess"], pre["resize_mode"],
                        cache_dir=cache_dir, workers=workers or None,
                        show_progress=show_progress)
    train_ds = CachedImageDataset(cache, train_df, train_transform(aug["preset"], image_size))
    val_ds = CachedImageDataset(cache, val_df, eval_transform(image_size))
    meta = DataMeta(classes=list(df.attrs["classes"]), image_size=int(image_size),
                    preprocess=pre["preprocess"], resize_mode=pre["resize_mode"],
                    dataset=str(df.attrs.get("dataset", "")),
                    positive_class=df.attrs.get("positive_class"))
    return TrainData(train_ds, val_ds, train_df["label_idx"].to_numpy(np.int64), meta, aug,
                     train_df, val_df, bool(df.attrs.get("synthetic", False)))


def make_config(recipe: dict, augmentation: dict | None = None, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a recipe dict; CutMix/MixUp from ``augmentation.json``
    unless the recipe or the overrides set them."""
    d = {}
    for k in ("cutmix_alpha", "mixup_alpha"):
        if augmentation:
            d[k] = float(augmentation.get(k, 0.0))
    if augmentation:
        d["mix_prob"] = float(augmentation.get("mix_prob", 0.0))
    d.update({k: v for k, v in recipe.items() if v is not None})
    d.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig.from_dict(d)
    cfg.check()
    return cfg


def train(cfg: TrainConfig, data: TrainData, out_dir, dist: ddp.DistInfo | None = None,
          on_epoch_end=None) -> dict:
    """Train ``cfg`` on ``data`` in this process; outputs go to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, data.train_ds, data.val_ds, data.train_labels, data.meta, out_dir,
                      dist=dist, on_epoch_end=on_epoch_end)
    res = trainer.fit()
    res["model"] = trainer.model
    res["n_train"], res["n_val"] = len(data.train_ds), len(data.val_ds)
    res["rank"] = trainer.dist.rank
    return res


# --------------------------------------------------------------------------- torchrun
def weight_checksums(model, dist: ddp.DistInfo) -> list[float]:
    """One checksum of all weights and buffers per rank (equal when DDP kept them in sync)."""
    import torch

    total = sum(float(t.double().sum()) for t in model.state_dict().values()
                if t.is_floating_point())
    return ddp.all_gather_cat(torch.tensor([total], dtype=torch.float64), dist).tolist()


def write_launch_config(path, cfg: TrainConfig, run_dir, out_dir, image_size: int,
                        max_train_images: int = 0, augmentation: dict | None = None) -> Path:
    """The JSON that ``python -m skinhelpers.train --config`` reads."""
    spec = {"train": asdict(cfg), "run_dir": str(Path(run_dir).resolve()),
            "out_dir": str(Path(out_dir).resolve()), "image_size": int(image_size),
            "max_train_images": int(max_train_images or 0), "augmentation": augmentation}
    return write_json(path, spec)


def run_from_launch_config(spec: dict) -> dict:
    """What each torchrun process does: join the group, load the data, train."""
    cfg = TrainConfig.from_dict(spec["train"])
    dist = ddp.setup(cfg.device)
    try:
        if not dist.is_main:  # rank 0 builds the image cache, the others reuse it
            ddp.barrier(dist)
        data = load_data(spec["run_dir"], spec["image_size"], cfg.workers, cfg.seed,
                         spec.get("max_train_images", 0), spec.get("augmentation"),
                         show_progress=dist.is_main)
        if dist.is_main:
            ddp.barrier(dist)
        res = train(cfg, data, spec["out_dir"], dist=dist)
        res["rank_checksums"] = weight_checksums(res.pop("model"), dist)
        return res
    finally:
        ddp.cleanup()


def launch(config_path, nproc: int, log_path=None, extra_env: dict | None = None) -> dict:
    """Run ``torchrun --nproc_per_node nproc -m skinhelpers.train`` and stream its output.

    Returns the summary the main process wrote (``train_result.json``); a failure raises
    with the tail of the log.
    """
    import torch

    spec = read_json(config_path)
    gpus = torch.cuda.device_count()
    if int(nproc) < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if gpus and int(nproc) > gpus:
        raise ValueError(f"nproc={nproc} but this machine has {gpus} GPU(s); use at most {gpus}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={int(nproc)}", "-m", "skinhelpers.train", "--config",
           str(Path(config_path).resolve())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                      env.get("PYTHONPATH", "")]))
    print("$", " ".join(cmd), flush=True)
    tail: list[str] = []
    errors: list[str] = []  # first exception lines of the workers' tracebacks
    error_line = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b: ")
    log = open(log_path, "a") if log_path else None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=str(PROJECT_ROOT), bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail = (tail + [line])[-40:]
            if len(errors) < 3 and error_line.match(line):
                errors.append(line.strip())
            if log:
                log.write(line)
        rc = proc.wait()
    if log:
        log.close()
    if rc != 0:
        first = "\n".join(errors) or "(no exception line found)"
        raise RuntimeError(f"torchrun exited with status {rc}. First error(s):\n{first}\n"
                           f"Last lines:\n{''.join(tail)}")
    return read_json(Path(spec["out_dir"]) / "train_result.json")


# --------------------------------------------------------------------------- trials (06)
TRIAL_COLUMNS = ["trial", "arch", "pretrained", "frozen", "params_m", "balanced_accuracy",
                 "macro_f1", "macro_auc", "positive_auc", "accuracy", "val_loss",
                 "ema_balanced_accuracy", "best_epoch", "epochs_run", "train_minutes",
                 "images_per_s", "weights"]


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label)


def _signature(cfg: TrainConfig, data: TrainData) -> str:
    payload = json.dumps({"cfg": asdict(cfg), "n_train": len(data.train_ds),
                          "n_val": len(data.val_ds), "meta": asdict(data.meta),
                          "aug": data.augmentation}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def trial_row(label: str, res: dict, monitor: str) -> dict:
    """One row of the trials table from a training result (best validation epoch)."""
    best = res.get("best_val", {})
    ema = res.get("best_ema_val", {})
    return {"trial": label, "arch": res["arch"], "pretrained": res["pretrained"],
            "frozen": res["frozen"], "params_m": res["params"] / 1e6,
            "balanced_accuracy": best.get("balanced_accuracy", np.nan),
            "macro_f1": best.get("macro_f1", np.nan), "macro_auc": best.get("macro_auc", np.nan),
            "positive_auc": best.get("positive_auc", np.nan),
            "accuracy": best.get("accuracy", np.nan), "val_loss": best.get("loss", np.nan),
            f"ema_{monitor}": ema.get(monitor, np.nan),
            "ema_balanced_accuracy": ema.get("balanced_accuracy", np.nan),
            "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"],
            "train_minutes": res.get("train_seconds", np.nan) / 60,
            "images_per_s": res.get("images_per_s", np.nan),
            "weights": res["pretrained_source"]}


def run_trials(trials: list[str], recipe: dict, data: TrainData, out_root,
               reuse: bool = True) -> tuple[pd.DataFrame, dict]:
    """Train every trial (``"efficientnet_lite0"``, ``"resnet18:scratch"``, ...) with the
    same data and recipe. Returns the table (one row per trial, validation metrics at
    each trial's best epoch) and the histories. A finished trial with the same settings
    is read back instead of retrained (``reuse``)."""
    out_root = Path(out_root)
    rows, histories = [], {}
    for label in trials:
        cfg = make_config(recipe, data.augmentation, arch=label)
        out = out_root / _slug(label)
        sig = _signature(cfg, data)
        done = out / "trial.json"
        if reuse and done.exists() and read_json(done).get("signature") == sig:
            saved = read_json(done)
            print(f"--- {label}: reusing the finished trial in {out}")
            rows.append(saved["row"])
            histories[label] = pd.read_csv(out / "history.csv")
            continue
        print(f"--- trial {label}", flush=True)
        # a trial starts afresh: an old, different trial in the same folder is not resumed
        cfg.resume = False
        try:
            res = train(cfg, data, out)
        except PretrainedWeightsError as e:
            print(f"    skipped: {e}", flush=True)
            v = parse_variant(label)
            rows.append({"trial": label, "arch": v["arch"], "pretrained": v["pretrained"],
                         "frozen": v["frozen"], "status": f"skipped: {e}"})
            continue
        row = {**trial_row(label, res, cfg.monitor), "status": "done"}
        write_json(done, {"signature": sig, "config": asdict(cfg), "row": row})
        rows.append(row)
        histories[label] = res["history"]
    table = pd.DataFrame(rows).reindex(columns=TRIAL_COLUMNS + ["status"])
    return table, histories


def choose_best(table: pd.DataFrame, monitor: str = "balanced_accuracy") -> pd.Series:
    """The trial with the best validation ``monitor`` (ties: fewer parameters)."""
    if table.empty:
        raise ValueError("no trials to choose from")
    t = table.assign(_score=table[[monitor, f"ema_{monitor}"]].max(axis=1, skipna=True)
                     if f"ema_{monitor}" in table else table[monitor])
    t = t.sort_values(["_score", "params_m"], ascending=[False, True], na_position="last")
    return t.iloc[0].drop(labels=["_score"])


def save_best_config(run_dir, best: pd.Series, recipe: dict, image_size: int,
                     monitor: str) -> Path:
    """``best_config.json``: the winning trial and the settings it was trained with."""
    best_cfg = {"trial": best["trial"], "arch": best["trial"].split(":")[0],
                "variant": best["trial"], "pretrained": bool(best["pretrained"]),
                "frozen": bool(best["frozen"]), "image_size": int(image_size),
                "monitor": monitor, "val_score": float(best[monitor]),
                "val_balanced_accuracy": float(best["balanced_accuracy"]),
                "val_macro_f1": float(best["macro_f1"]),
                "val_macro_auc": float(best["macro_auc"]),
                "params_m": float(best["params_m"]),
                "recipe": {k: v for k, v in recipe.items()}}
    return write_json(Path(run_dir) / "best_config.json", best_cfg)


def read_best_config(run_dir) -> dict:
    path = Path(run_dir) / "best_config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 06 (model trials) in this "
                                "run folder first, or set arch explicitly in notebook 07")
    return read_json(path)


def evaluate_checkpoint(path, dataset, batch_size: int = 64, device: str = "cpu") -> dict:
    """Rebuild a checkpoint and score it on ``dataset`` (uint8 images, labels): a check that
    the saved file reproduces its recorded validation metrics."""
    import torch

    from .checkpoints import model_from_checkpoint
    from .train import val_metrics

    model, info = model_from_checkpoint(path, device)
    mean = torch.tensor(info["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(info["std"], device=device).view(1, 3, 1, 1)
    logits, labels = [], []
    with torch.inference_mode():
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            logits.append(model((x.to(device).float() / 255 - mean) / std).float().cpu())
            labels.append(y)
    pos = info.get("positive_class")
    pos = info["classes"].index(pos) if pos in info["classes"] else None
    return val_metrics(torch.cat(logits), torch.cat(labels).long(), pos)


__all__ = ["read_preprocessing", "read_augmentation", "TrainData", "load_data", "make_config",
           "train", "write_launch_config", "run_from_launch_config", "launch", "run_trials",
           "choose_best", "save_best_config", "read_best_config", "evaluate_checkpoint"]
