"""The trainer's bookkeeping: checkpoints, resume, early stopping, history and logs.

:class:`BookkeepingMixin` gives :class:`~skinhelpers.train.trainer.Trainer`:

* ``best.pt`` / ``best_ema.pt`` (the best raw and EMA weights on the monitored validation
  metric), ``final_ema.pt`` (the EMA weights at the end) and ``last.pt`` (everything a
  resumed run needs, :func:`rng_state` included), written atomically through
  :mod:`skinhelpers.model.checkpoints` with what inference needs;
* resume from ``last.pt``, refused when a setting that changes the run (``RESUME_KEYS``)
  differs;
* early stopping (``patience``, ``min_delta``), ``history.csv``, the epoch's log line and
  its TensorBoard scalars, and the result of :meth:`~skinhelpers.train.trainer.Trainer.fit`.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch

from skinhelpers.files import write_csv
from skinhelpers.model import checkpoints
from skinhelpers.train.config import RESUME_KEYS

log = logging.getLogger(__name__)


def rng_state() -> dict:
    """RNG states in weights_only-loadable form (tensors and lists)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


class BookkeepingMixin:
    """The bookkeeping methods of :class:`~skinhelpers.train.trainer.Trainer`.

    They use the trainer's ``cfg``, ``meta``, ``out``, ``ckpt_dir``, ``model``, ``ema``,
    ``optimizer``, ``scheduler``, ``scaler``, ``dist``, ``writer`` and what describes the
    model (``arch``, ``kwargs``, ``pretrained``, ``pretrained_source``, ``frozen``,
    ``n_params``, ``train_prior``), and keep its ``history``, ``state`` and (on resume) the
    scheduler state to restore, ``_resume_scheduler_state``.
    """

    def maybe_resume(self) -> int:
        """Load ``last.pt`` if resuming; return the epoch to start from."""
        last = self.ckpt_dir / "last.pt"
        if not (self.cfg.resume and last.exists()):
            return 0
        ck = checkpoints.load_checkpoint(last, map_location="cpu")
        saved = ck.get("config", {})
        diff = {
            k: (saved.get(k), getattr(self.cfg, k))
            for k in RESUME_KEYS
            if saved.get(k) != getattr(self.cfg, k)
        }
        if diff:
            raise ValueError(
                f"{last} was written with different settings {diff} "
                "(saved, now); use resume=False or a new run folder"
            )
        self.model.load_state_dict(ck["state_dict"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.ema is not None and ck.get("ema_state_dict"):
            self.ema.module.load_state_dict(ck["ema_state_dict"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.history = list(ck.get("history", []))
        self.state.update(ck["train_state"])
        self._resume_scheduler_state = ck.get("scheduler")
        if self.dist.is_main:
            log.info(
                f"resumed from {last}: epoch {self.state['next_epoch']} of {self.cfg.epochs}",
            )
        return int(self.state["next_epoch"])

    def _save(self, name: str, state_dict, metrics: dict, epoch: int, extra=None) -> None:
        m = self.meta
        checkpoints.save_checkpoint(
            self.ckpt_dir / name,
            state_dict,
            arch=self.arch,
            model_kwargs=self.kwargs,
            classes=m.classes,
            image_size=m.image_size,
            preprocess=m.preprocess,
            resize_mode=m.resize_mode,
            mean=self.model.mean,
            std=self.model.std,
            dataset=m.dataset,
            epoch=epoch,
            metrics=metrics,
            extra={
                "config": asdict(self.cfg),
                "positive_class": m.positive_class,
                "pretrained_source": self.pretrained_source,
                "train_prior": self.train_prior,
                **(extra or {}),
            },
        )

    def _save_last(self, epoch: int) -> None:
        sched = self.scheduler.state_dict() if self.scheduler is not None else {}
        self._save(
            "last.pt",
            self.model.state_dict(),
            _strip(self.history[-1], "val_"),
            epoch,
            extra={
                "optimizer": self.optimizer.state_dict(),
                "scheduler": sched,
                "scaler": self.scaler.state_dict(),
                "ema_state_dict": self.ema.module.state_dict() if self.ema is not None else {},
                "history": self.history,
                "train_state": dict(self.state),
                "rng": rng_state(),
            },
        )

    def _save_final_ema(self) -> None:
        """``final_ema.pt``: the EMA weights at the end of training (an annealed schedule's
        final average): no selection on a noisy best-epoch score; notebook 08 evaluates it
        beside best / best_ema (benchmarks/RESULTS.md sections 11-12)."""
        self._save(
            "final_ema.pt",
            self.ema.module.state_dict(),
            _strip(self.history[-1], "ema_val_"),
            len(self.history),
        )

    def _bookkeep(self, epoch: int, row: dict) -> None:
        cfg, st, main = self.cfg, self.state, self.dist.is_main
        score = row[f"val_{cfg.monitor}"]
        score = -math.inf if math.isnan(score) else score
        improved = False
        if score > st["best"] + cfg.min_delta:
            st["best"], st["best_epoch"], improved = score, epoch + 1, True
            if main and cfg.save != "none":
                self._save("best.pt", self.model.state_dict(), _strip(row, "val_"), epoch + 1)
        if self.ema is not None:
            ema_score = row[f"ema_val_{cfg.monitor}"]
            ema_score = -math.inf if math.isnan(ema_score) else ema_score
            if ema_score > st["best_ema"] + cfg.min_delta:
                st["best_ema"], improved = ema_score, True
                st["best_ema_epoch"] = epoch + 1
                if main and cfg.save != "none":
                    self._save(
                        "best_ema.pt",
                        self.ema.module.state_dict(),
                        _strip(row, "ema_val_"),
                        epoch + 1,
                    )
        counts = row["phase"] != "warmup_head"
        st["bad_epochs"] = 0 if improved else st["bad_epochs"] + int(counts)
        row["best_so_far"] = max(st["best"], st["best_ema"])
        self.history.append(row)
        if cfg.patience and st["bad_epochs"] >= cfg.patience:
            st["stopped"] = st["early_stopped"] = True
        if main:
            write_csv(self.out / "history.csv", pd.DataFrame(self.history))

    def _log(self, row: dict) -> None:
        m = self.cfg.monitor
        ema = f" | ema {m} {row[f'ema_val_{m}']:.3f}" if self.ema is not None else ""
        log.info(
            f"epoch {row['epoch']:>3}/{self.state['planned_epochs']} [{row['phase']}] loss "
            f"{row['train_loss']:.4f} | val loss {row['val_loss']:.4f} {m} "
            f"{row[f'val_{m}']:.3f} macro-F1 {row['val_macro_f1']:.3f} AUC "
            f"{row['val_macro_auc']:.3f}{ema} | {row['images_per_s']:.0f} img/s, "
            f"{row['train_seconds'] + row['eval_seconds']:.0f} s",
        )
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(
                        k.replace("val_", "val/", 1) if k.startswith("val_") else k, v, row["epoch"]
                    )
            self.writer.flush()

    def result(self, seconds: float) -> dict:
        hist = pd.DataFrame(self.history)
        st = self.state
        res = {
            "arch": self.arch,
            "pretrained": bool(self.pretrained),
            "frozen": self.frozen,
            "pretrained_source": self.pretrained_source,
            "params": self.n_params,
            "epochs_run": len(hist),
            "epochs_planned": st["planned_epochs"],
            "best_epoch": st["best_epoch"],
            "best_ema_epoch": st.get("best_ema_epoch", -1),
            "stopped_early": bool(st.get("early_stopped", False)),
            "seconds": seconds,
            "history": hist,
            "out_dir": str(self.out),
        }
        if len(hist):
            res["images_per_s"] = float(hist["images_per_s"].median())
            res["train_seconds"] = float(hist["train_seconds"].sum())
            m = f"val_{self.cfg.monitor}"
            best = hist.loc[hist[m].fillna(-1).idxmax()]
            res["best_val"] = {k[4:]: float(best[k]) for k in hist if k.startswith("val_")}
            if self.ema is not None:
                e = hist.loc[hist[f"ema_{m}"].fillna(-1).idxmax()]
                res["best_ema_val"] = {k[8:]: float(e[k]) for k in hist if k.startswith("ema_val_")}
        return res


def _strip(row: dict, prefix: str) -> dict:
    return {
        k[len(prefix) :]: v
        for k, v in row.items()
        if k.startswith(prefix) and isinstance(v, (int, float))
    }


__all__ = ["BookkeepingMixin", "rng_state"]
