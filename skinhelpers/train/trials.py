"""Model trials (notebook 06): candidate models trained on the same data and budget,
compared on validation, and the winner written to ``best_config.json`` for notebook 07.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from skinhelpers.files import read_json, write_json
from skinhelpers.model.factory import parse_variant
from skinhelpers.model.weights import PretrainedWeightsError
from skinhelpers.train.config import TrainConfig
from skinhelpers.train.experiment import TrainData, make_config, train

log = logging.getLogger(__name__)

TRIAL_COLUMNS = [
    "trial",
    "arch",
    "pretrained",
    "frozen",
    "input_norm",
    "params_m",
    "balanced_accuracy",
    "macro_f1",
    "macro_auc",
    "positive_auc",
    "accuracy",
    "val_loss",
    "ema_balanced_accuracy",
    "best_epoch",
    "epochs_run",
    "train_minutes",
    "images_per_s",
    "weights",
]


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label)


def _signature(cfg: TrainConfig, data: TrainData) -> str:
    payload = json.dumps(
        {
            "cfg": asdict(cfg),
            "n_train": len(data.train_ds),
            "n_val": len(data.val_ds),
            "meta": asdict(data.meta),
            "aug": data.augmentation,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def trial_row(label: str, res: dict, monitor: str) -> dict:
    """One row of the trials table from a training result (best validation epoch)."""
    best = res.get("best_val", {})
    ema = res.get("best_ema_val", {})
    return {
        "trial": label,
        "arch": res["arch"],
        "pretrained": res["pretrained"],
        "frozen": res["frozen"],
        "input_norm": parse_variant(label)["input_norm"],
        "params_m": res["params"] / 1e6,
        "balanced_accuracy": best.get("balanced_accuracy", np.nan),
        "macro_f1": best.get("macro_f1", np.nan),
        "macro_auc": best.get("macro_auc", np.nan),
        "positive_auc": best.get("positive_auc", np.nan),
        "accuracy": best.get("accuracy", np.nan),
        "val_loss": best.get("loss", np.nan),
        f"ema_{monitor}": ema.get(monitor, np.nan),
        "ema_balanced_accuracy": ema.get("balanced_accuracy", np.nan),
        "best_epoch": res["best_epoch"],
        "epochs_run": res["epochs_run"],
        "train_minutes": res.get("train_seconds", np.nan) / 60,
        "images_per_s": res.get("images_per_s", np.nan),
        "weights": res["pretrained_source"],
    }


def run_trials(
    trials: list[str], recipe: dict, data: TrainData, out_root, reuse: bool = True
) -> tuple[pd.DataFrame, dict]:
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
            log.info(f"--- {label}: reusing the finished trial in {out}")
            # rows saved before the input_norm column existed: it follows from the label
            rows.append({"input_norm": parse_variant(label)["input_norm"], **saved["row"]})
            histories[label] = pd.read_csv(out / "history.csv")
            continue
        log.info(f"--- trial {label}")
        # a trial starts afresh: an old, different trial in the same folder is not resumed
        cfg.resume = False
        try:
            res = train(cfg, data, out)
        except PretrainedWeightsError as e:
            log.info(f"    skipped: {e}")
            v = parse_variant(label)
            rows.append(
                {
                    "trial": label,
                    "arch": v["arch"],
                    "pretrained": v["pretrained"],
                    "frozen": v["frozen"],
                    "input_norm": v["input_norm"],
                    "status": f"skipped: {e}",
                }
            )
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
    t = table.assign(
        _score=table[[monitor, f"ema_{monitor}"]].max(axis=1, skipna=True)
        if f"ema_{monitor}" in table
        else table[monitor]
    )
    if t["_score"].isna().all():
        status = table["status"].tolist() if "status" in table else ["no score"] * len(table)
        raise ValueError(
            f"no trial finished with a validation {monitor}: "
            + "; ".join(f"{a}: {b}" for a, b in zip(table["trial"], status))
        )
    t = t.sort_values(["_score", "params_m"], ascending=[False, True], na_position="last")
    return t.iloc[0].drop(labels=["_score"])


def save_best_config(run_dir, best: pd.Series, recipe: dict, image_size: int, monitor: str) -> Path:
    """``best_config.json``: the winning trial and the settings it was trained with."""
    best_cfg = {
        "trial": best["trial"],
        "arch": best["trial"].split(":")[0],
        "variant": best["trial"],
        "pretrained": bool(best["pretrained"]),
        "frozen": bool(best["frozen"]),
        "image_size": int(image_size),
        "monitor": monitor,
        "val_score": float(best[monitor]),
        "val_balanced_accuracy": float(best["balanced_accuracy"]),
        "val_macro_f1": float(best["macro_f1"]),
        "val_macro_auc": float(best["macro_auc"]),
        "params_m": float(best["params_m"]),
        "recipe": {k: v for k, v in recipe.items()},
    }
    return write_json(Path(run_dir) / "best_config.json", best_cfg)


def read_best_config(run_dir) -> dict:
    path = Path(run_dir) / "best_config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebook 06 (model trials) in this "
            "run folder first, or set arch explicitly in notebook 07"
        )
    return read_json(path)
