"""The trainer: one readable loop for one process, several GPUs, or the CPU.

The recipe (every part a :class:`TrainConfig` field):

* **two phases** - the new head first learns on a frozen pretrained backbone
  (``freeze_epochs``), then everything trains with *discriminative* learning rates
  (backbone ``lr * backbone_lr_mult``, head ``lr``); AdamW, linear warmup + cosine decay
  (timm's ``CosineLRScheduler``; ``scheduler="plateau"`` for torch's ReduceLROnPlateau
  on the monitored validation metric);
* **imbalance** - class-balanced sampling (``balance_power``), class-weighted loss
  (``class_weight_power``), logit-adjusted loss (``logit_adjust_tau``);
* **regularisation** - label smoothing, focal loss, CutMix/MixUp on the batch, EMA weights
  (timm's ``ModelEmaV3``);
* **speed** - mixed precision on CUDA, ``channels_last``, optional ``torch.compile``
  (``compile_mode``: CUDA graphs or autotuning on a GPU), DistributedDataParallel under
  ``torchrun`` (``python -m skinhelpers.train.launch``), one or several machines;
  a step never waits for the device: the loss stays there and is read (and checked for
  NaN) every ``sync_every`` steps, and one validation pass an epoch scores the raw and the
  EMA weights together, over validation batches read once and kept on the device;
* **bookkeeping** - early stopping on a validation metric, ``best.pt`` / ``best_ema.pt`` /
  ``final_ema.pt`` (the EMA weights at the end) / ``last.pt`` written atomically (see
  :mod:`skinhelpers.model.checkpoints`), resume from ``last.pt``, ``history.csv``,
  TensorBoard logs in ``tb/``, seeds everywhere.

Batches arrive as ``uint8`` images; conversion, normalisation and mixing happen on the
device. Every epoch reseeds the random generators from ``(seed, epoch, rank)``, so a run
resumed after an interruption continues exactly as the uninterrupted run would have.

This module is the loop itself: the set-up (model, optimizer, loss, sampler, loaders), the
training step and epoch, and :meth:`Trainer.fit`. :class:`Trainer` takes the rest from one
module per concern: the phases, learning rates and time-budget schedule from
:mod:`skinhelpers.train.phases`, validation from :mod:`skinhelpers.train.validation`,
checkpoints, resume, early stopping, history and logs from :mod:`skinhelpers.train.bookkeeping`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, Subset

from skinhelpers import device
from skinhelpers.data.cache import channel_stats
from skinhelpers.model.factory import (
    build_model,
    count_parameters,
    model_kwargs,
    parse_variant,
)
from skinhelpers.model.inference import to_model_input
from skinhelpers.progress import progress
from skinhelpers.train import distributed as ddp
from skinhelpers.train.augment import BatchMixer
from skinhelpers.train.batch_augment import BATCH_PRESETS, DeviceBatchLoader
from skinhelpers.train.bookkeeping import BookkeepingMixin
from skinhelpers.train.config import DataMeta, TrainConfig
from skinhelpers.train.losses import build_loss
from skinhelpers.train.phases import PhasesMixin, param_groups, plan_phases
from skinhelpers.train.sampling import (
    class_weights,
    sampling_prior,
    shard_indices,
    train_sampler,
)
from skinhelpers.train.validation import ValidationMixin

log = logging.getLogger(__name__)

#: steps at the start of an epoch left out of its speed (compilation, autotuning)
WARM_STEPS = 3


# --------------------------------------------------------------------------- helpers
def seed_epoch(seed: int, epoch: int, rank: int = 0) -> int:
    """Reseed Python, NumPy and torch for one epoch of one rank; return the seed used."""
    s = (int(seed) * 1_000_003 + int(epoch) * 1009 + int(rank)) % (2**31 - 1)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s


def make_mixer(cfg: TrainConfig, num_classes: int):
    """CutMix/MixUp on a float batch (``None`` when off); see :mod:`skinhelpers.train.augment`."""
    if cfg.mix_prob <= 0 or (cfg.cutmix_alpha <= 0 and cfg.mixup_alpha <= 0):
        return None

    return BatchMixer(num_classes, cfg.cutmix_alpha, cfg.mixup_alpha, cfg.mix_prob)


# --------------------------------------------------------------------------- trainer
class Trainer(PhasesMixin, ValidationMixin, BookkeepingMixin):
    """Train one model; ``fit()`` runs (or resumes) the whole schedule.

    ``train_ds``/``val_ds`` yield ``(uint8 CHW image, label)``; ``train_labels`` are the
    training labels (for sampling, weights and the prior). ``out_dir`` receives
    ``checkpoints/``, ``history.csv`` and ``tb/``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        train_ds,
        val_ds,
        train_labels,
        meta: DataMeta,
        out_dir,
        dist: ddp.DistInfo | None = None,
        on_epoch_end: Callable[[int, dict], bool | None] | None = None,
        train_sources=None,
    ):
        cfg.check()
        self.cfg, self.meta, self.out = cfg, meta, Path(out_dir)
        self.dist = dist or ddp.DistInfo(device=device.pick_device(cfg.device))
        self.dev = self.dist.device
        self.on_epoch_end = on_epoch_end
        self.num_classes = len(meta.classes)
        self.train_labels = np.asarray(train_labels, dtype=np.int64)
        # the source of each training image (a run of several datasets), for
        # source-balanced sampling (cfg.source_balance_power)
        self.train_sources = None if train_sources is None else np.asarray(train_sources)
        pos = meta.positive_class
        self.pos_index = list(meta.classes).index(pos) if pos in list(meta.classes) else None
        variant = parse_variant(cfg.arch)
        self.arch = variant["arch"]
        self.pretrained = variant["pretrained"] if cfg.pretrained is None else cfg.pretrained
        self.frozen = variant["frozen"] if cfg.frozen is None else bool(cfg.frozen)
        self.phases = plan_phases(cfg, bool(self.pretrained), self.frozen)
        self.ckpt_dir = self.out / "checkpoints"

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.input_norm = variant["input_norm"]
        self.kwargs = model_kwargs(
            self.num_classes,
            cfg.drop_rate,
            cfg.hidden_dim,
            cfg.drop_path_rate,
            sample_center=self.input_norm == "sample",
        )
        model = build_model(
            self.arch,
            pretrained=self.pretrained,
            **{k: v for k, v in self.kwargs.items() if k != "pretrained"},
        )
        if self.input_norm == "dataset":  # featurewise: the training images' own statistics
            if not hasattr(train_ds, "cache"):
                raise ValueError(
                    f"'{cfg.arch}': dataset normalisation needs the training images as a "
                    "CachedImageDataset (skinhelpers.data.cache)"
                )
            model.mean, model.std = channel_stats(train_ds.cache, train_ds.rows)
        self.pretrained_source = model.pretrained_source
        if self.dist.distributed and cfg.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = model.to(self.dev, memory_format=self.memory_format)
        self.n_params, _ = count_parameters(self.model)

        # fused: one kernel for all parameters (CPU and CUDA); the default steps tensor by tensor
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay),
            lr=cfg.lr,
            fused=self.dev.type in ("cpu", "cuda"),
        )
        self.use_amp = cfg.amp and self.dev.type == "cuda"
        self.amp_dtype = getattr(torch, cfg.amp_dtype)
        if self.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed image size: pick the fastest kernels
            torch.set_float32_matmul_precision("high")
            if (
                self.use_amp
                and self.amp_dtype == torch.bfloat16
                and not torch.cuda.is_bf16_supported()
            ):
                self.amp_dtype = torch.float16  # older GPUs: float16 with a GradScaler
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
        )
        self.ema = None
        if cfg.ema:
            self.ema = ModelEmaV3(
                self.model, decay=cfg.ema_decay, use_warmup=True, warmup_power=0.75
            )

        by_source = (self.train_sources, cfg.source_balance_power)
        prior = sampling_prior(self.train_labels, self.num_classes, cfg.balance_power, *by_source)
        # saved in every checkpoint: what inference needs to undo the logit adjustment
        self.train_prior = {
            "tau": float(cfg.logit_adjust_tau),
            "sampling": prior.tolist(),
            "data": sampling_prior(self.train_labels, self.num_classes).tolist(),
        }
        weights = (
            class_weights(self.train_labels, self.num_classes, cfg.class_weight_power)
            if cfg.class_weight_power > 0
            else None
        )
        self.criterion = build_loss(
            cfg.loss,
            self.num_classes,
            cfg.label_smoothing,
            weights,
            cfg.focal_gamma,
            cfg.logit_adjust_tau,
            prior,
        ).to(self.dev)
        self.mixer = make_mixer(cfg, self.num_classes)

        sampler = train_sampler(
            self.train_labels,
            self.num_classes,
            cfg.balance_power,
            cfg.seed,
            self.dist.rank,
            self.dist.world_size,
            *by_source,
        )
        self.generator = torch.Generator()
        pin = self.dev.type == "cuda"
        self.loader_workers = device.loader_workers(cfg.workers, self.dev)
        self.train_loader = self._train_loader(train_ds, sampler, pin)
        if len(self.train_loader) == 0:
            raise ValueError(
                f"{len(train_ds)} training images give no full batch of "
                f"{cfg.batch_size} per process; lower batch_size"
            )
        shard = Subset(val_ds, shard_indices(len(val_ds), self.dist.rank, self.dist.world_size))
        self.val_loader = DataLoader(
            shard,
            batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
            shuffle=False,
            num_workers=self.loader_workers,
            pin_memory=pin,
        )

        self._val_kept: list | None = None  # validation batches, after the first pass
        self.val_passes_run = 0  # passes over the validation images (tests count them)
        self._input_consts: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eager_model = self.model
        self._compiled_untested = False  # the first step after compiling may fail: eager then
        self._cudagraphs = False

        self.history: list[dict] = []
        self.state = {
            "next_epoch": 0,
            "global_step": 0,
            "phase": None,
            "phase_step": 0,
            "best": -math.inf,
            "best_ema": -math.inf,
            "best_epoch": -1,
            "bad_epochs": 0,
            "stopped": False,
            "planned_epochs": cfg.epochs,  # lowered by _fit_schedule to fit max_minutes
        }
        self._epoch_seconds: list[float] = []
        self.scheduler = None
        self.train_model = self.model
        self.writer = None

    def _train_loader(self, train_ds, sampler, pin: bool):
        """Per-image augmentation in a DataLoader, or (``augment_on="device"``) the cached
        images as one tensor augmented a whole batch at a time on the device."""
        cfg = self.cfg
        preset = getattr(train_ds, "augment_preset", None)
        if cfg.augment_on == "device":
            if preset in BATCH_PRESETS and hasattr(train_ds, "cache"):
                return DeviceBatchLoader(train_ds, sampler, cfg.batch_size, self.dev, preset)
            if self.dist.is_main:
                log.warning(
                    f"note: augment_on='device' supports the presets {list(BATCH_PRESETS)} "
                    f"of a cached dataset, not {preset!r}: augmenting per image instead",
                )
        return DataLoader(
            train_ds,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=self.loader_workers,
            pin_memory=pin,
            drop_last=True,
            generator=self.generator,
            persistent_workers=False,
        )

    # ----------------------------------------------------------------- steps
    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the network's input: exactly what
        :func:`skinhelpers.model.inference.to_model_input` gives on this device, in this
        memory format (tests/test_inference.py), with its two constants made once on the
        device (made per batch, they are copied from the host: a sync every step on a GPU)."""
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            return to_model_input(x, self.model.mean, self.model.std, self.dev, self.memory_format)
        if self._input_consts is None:
            self._input_consts = tuple(
                torch.tensor(v, dtype=torch.float32, device=self.dev).view(1, -1, 1, 1) * 255
                for v in (self.model.mean, self.model.std)
            )
        m, s = self._input_consts
        x = x.to(self.dev, non_blocking=True).float()
        return ((x - m) / s).contiguous(memory_format=self.memory_format)

    def _wait_for_device(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def _autocast(self):
        return torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def _step(self, model: torch.nn.Module, x: torch.Tensor, target) -> torch.Tensor:
        """One optimizer step on a batch; returns its loss, left on the device."""
        cfg = self.cfg
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            logits = model(x)
        loss = self.criterion(logits.float(), target)
        # the old gradients are freed after the forward pass, not before: their memory then
        # goes straight to the new ones (freed before it, the CPU step was 6% slower)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _first_compiled_step(self, x: torch.Tensor, target) -> torch.Tensor:
        """The first step of a compiled model, where compilation happens; if it fails, the
        phase trains eagerly (with a note) instead of the run failing."""
        try:
            return self._step(self.train_model, x, target)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - any compiler failure: eager is always possible
            if self.dist.is_main:
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                log.warning(
                    f"note: torch.compile (mode {self.cfg.compile_mode}) failed on the first "
                    f"step ({type(e).__name__}: {msg}): this phase trains eagerly",
                )
            self.train_model, self._cudagraphs = self._eager_model, False
            return self._step(self.train_model, x, target)
        finally:
            self._compiled_untested = False

    def _read_loss(self, loss_sum: torch.Tensor, n: int, epoch: int, step: int) -> float:
        """The mean training loss of the epoch so far: reading it waits for the device (a
        host sync), so it is read every ``sync_every`` steps, not every step. A loss that
        was not finite in any of these steps stops training with an error."""
        mean = float(loss_sum.item()) / max(n, 1)
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"loss is {mean} in epoch {epoch + 1}, within its first {step} steps (global "
                f"step {self.state['global_step']}); lower lr or check the data"
            )
        return mean

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        self.train_model.train()
        self.train_loader.sampler.set_epoch(epoch)
        self.generator.manual_seed(seed_epoch(cfg.seed, epoch, self.dist.rank))
        n, t0 = 0, time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.dev)
        t_warm, step = None, 0
        lrs = {"head": 0.0, "backbone": 0.0}
        bar = progress(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.state['planned_epochs']} [{self.state['phase']}]",
            unit="batch",
            disable=not self.dist.is_main,
        )
        for x, y in bar:
            x, y = self._to_input(x), y.to(self.dev, non_blocking=True)
            target = y
            if self.mixer is not None:
                x, target = self.mixer(x, y)
            if self._compiled_untested:
                loss = self._first_compiled_step(x, target)
            else:
                loss = self._step(self.train_model, x, target)
            for part in lrs:  # the lr used by this step, averaged over the epoch below
                lrs[part] += self._lr(part)
            self.state["global_step"] += 1
            self.state["phase_step"] += 1
            if self.scheduler is not None and cfg.scheduler == "cosine":
                self.scheduler.step_update(self.state["phase_step"])
            if self.ema is not None:
                self.ema.update(self.model, step=self.state["global_step"])
            loss_sum.add_(loss, alpha=len(y))  # on the device: no waiting for the step
            n += len(y)
            step += 1
            if step == WARM_STEPS:
                self._wait_for_device()  # the clock is true: the warm steps have finished
                t_warm = time.perf_counter()
            if step % cfg.sync_every == 0:
                mean = self._read_loss(loss_sum, n, epoch, step)
                if self.dist.is_main:
                    bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
        bar.close()
        train_loss = self._read_loss(loss_sum, n, epoch, step)
        self._wait_for_device()
        t_end = time.perf_counter()
        seconds = t_end - t0
        steps = max(len(self.train_loader), 1)
        # the epoch's time at the speed after its first steps: the first steps of a phase
        # can pay once for compilation, cuDNN autotuning or lazy kernel loading (seen on an
        # H200: 20 s for the first fine-tuning step, then 35 ms a step)
        steady = seconds
        if t_warm is not None and step >= 3 * WARM_STEPS:
            steady = min(seconds, (t_end - t_warm) / (step - WARM_STEPS) * step)
        return {
            "lr_head": lrs["head"] / steps,
            "lr_backbone": lrs["backbone"] / steps,
            "train_loss": ddp.all_reduce_mean(train_loss, self.dist),
            "train_seconds": seconds,
            "train_seconds_steady": steady,
            "images_per_s": n * self.dist.world_size / seconds,
        }

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict:
        cfg, main = self.cfg, self.dist.is_main
        self._resume_scheduler_state = None
        start = self.maybe_resume()
        if main and cfg.tensorboard:
            from torch.utils.tensorboard import (
                SummaryWriter,  # local: slow to import: only when logging
            )

            self.writer = SummaryWriter(str(self.out / "tb"))
        if main:
            log.info(
                f"{self.arch}: {self.n_params / 1e6:.2f} M parameters, weights "
                f"{self.pretrained_source}, device {self.dev}, world {self.dist.world_size}, "
                f"{self.loader_workers} loader workers, "
                f"{len(self.train_loader)} steps/epoch, phases "
                f"{[(p, a + 1, b) for p, a, b in self.phases]}",
            )
        t_start = time.perf_counter()
        entered, epoch = None, start
        budget_hit = False
        while epoch < self.state["planned_epochs"] and not self.state["stopped"] and not budget_hit:
            t_epoch = time.perf_counter()
            name, a, b = next(p for p in self.phases if p[1] <= epoch < p[2])
            if entered != name:
                resumed_mid_phase = entered is None and self.state["phase"] == name
                if not resumed_mid_phase:
                    self.state["phase_step"] = 0
                self._enter_phase(
                    name, a, b, self._resume_scheduler_state if resumed_mid_phase else None
                )
                entered = name
            row = {"epoch": epoch + 1, "phase": name}
            row.update(self.train_epoch(epoch))
            ddp.sync_buffers(self.model, self.dist)
            t_val = time.perf_counter()
            row.update(self.validate())
            row["eval_seconds"] = time.perf_counter() - t_val
            if cfg.scheduler == "plateau" and self.scheduler is not None:
                score = row[f"val_{cfg.monitor}"]
                self.scheduler.step(score if math.isfinite(score) else 0.0)
            self._bookkeep(epoch, row)
            if main:
                self._log(row)
                if self.state.get("early_stopped"):
                    log.info(
                        f"early stop: no {cfg.monitor} gain for {cfg.patience} epochs "
                        f"(best {row['best_so_far']:.4f})",
                    )
            self.state["next_epoch"] = epoch + 1
            minutes = (time.perf_counter() - t_start) / 60
            if name != "warmup_head":
                once = row["train_seconds"] - row["train_seconds_steady"]  # warm-up cost
                self._epoch_seconds.append(time.perf_counter() - t_epoch - once)
                self._fit_schedule(epoch, a, minutes)
            planned = self.state["planned_epochs"]
            if cfg.max_minutes and minutes > cfg.max_minutes and epoch + 1 < planned:
                if main:
                    log.info(
                        f"time budget of {cfg.max_minutes} min reached after epoch {epoch + 1} "
                        "(run again with resume=True to continue)",
                    )
                budget_hit = True
            if main and cfg.save == "all":
                self._save_last(epoch + 1)
            ddp.barrier(self.dist)
            if self.on_epoch_end is not None and self.on_epoch_end(epoch, row):
                break
            epoch += 1
        if main and self.ema is not None and cfg.save != "none" and self.history:
            self._save_final_ema()
        if self.writer is not None:
            self.writer.close()
        return self.result(time.perf_counter() - t_start)


__all__ = ["WARM_STEPS", "Trainer", "make_mixer", "seed_epoch"]
