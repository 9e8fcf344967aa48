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
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, Subset

from skinhelpers import device
from skinhelpers.data.cache import channel_stats
from skinhelpers.files import write_csv
from skinhelpers.model import checkpoints
from skinhelpers.model.factory import (
    build_model,
    count_parameters,
    model_kwargs,
    parse_variant,
)
from skinhelpers.model.inference import predict_loader, to_model_input
from skinhelpers.model.metrics import val_metrics
from skinhelpers.progress import progress
from skinhelpers.train import distributed as ddp
from skinhelpers.train.augment import BatchMixer
from skinhelpers.train.batch_augment import BATCH_PRESETS, DeviceBatchLoader, fits_on_device
from skinhelpers.train.config import (
    RESUME_KEYS,
    DataMeta,
    TrainConfig,
)
from skinhelpers.train.losses import build_loss
from skinhelpers.train.sampling import (
    class_weights,
    sampling_prior,
    shard_indices,
    train_sampler,
)

log = logging.getLogger(__name__)

#: steps at the start of an epoch left out of its speed (compilation, autotuning)
WARM_STEPS = 3
#: validation images kept in host memory after the first pass (bytes; on a GPU: a quarter
#: of its free memory)
VAL_KEEP_BYTES = 2 * 1024**3


# --------------------------------------------------------------------------- helpers
def seed_epoch(seed: int, epoch: int, rank: int = 0) -> int:
    """Reseed Python, NumPy and torch for one epoch of one rank; return the seed used."""
    s = (int(seed) * 1_000_003 + int(epoch) * 1009 + int(rank)) % (2**31 - 1)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s


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


def param_groups(model, weight_decay: float) -> list[dict]:
    """Backbone/head x decay/no-decay groups (no weight decay on biases and norm weights)."""
    groups = []
    for part in ("backbone", "head"):
        decay, no_decay = [], []
        for name, p in getattr(model, part).named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups += [
            {"params": decay, "weight_decay": weight_decay, "part": part},
            {"params": no_decay, "weight_decay": 0.0, "part": part},
        ]
    return [g for g in groups if g["params"]]


def make_mixer(cfg: TrainConfig, num_classes: int):
    """CutMix/MixUp on a float batch (``None`` when off); see :mod:`skinhelpers.train.augment`."""
    if cfg.mix_prob <= 0 or (cfg.cutmix_alpha <= 0 and cfg.mixup_alpha <= 0):
        return None

    return BatchMixer(num_classes, cfg.cutmix_alpha, cfg.mixup_alpha, cfg.mix_prob)


def _phases(cfg: TrainConfig, pretrained: bool, frozen: bool) -> list[tuple[str, int, int]]:
    """[(name, first_epoch, end_epoch)]: head_only | warmup_head + finetune | finetune."""
    if frozen:
        return [("head_only", 0, cfg.epochs)]
    k = min(int(cfg.freeze_epochs), cfg.epochs - 1) if pretrained else 0
    return ([("warmup_head", 0, k)] if k > 0 else []) + [("finetune", k, cfg.epochs)]


# --------------------------------------------------------------------------- trainer
class Trainer:
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
        self.phases = _phases(cfg, bool(self.pretrained), self.frozen)
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

    # ----------------------------------------------------------------- phases
    def _enter_phase(self, name: str, start: int, end: int, scheduler_state: dict | None) -> None:
        cfg = self.cfg
        train_backbone = name == "finetune"
        self.model.freeze_backbone(not train_backbone)
        steps = len(self.train_loader)
        for g in self.optimizer.param_groups:
            base = cfg.lr * (cfg.backbone_lr_mult if g["part"] == "backbone" else 1.0)
            base = base if (g["part"] == "head" or train_backbone) else 0.0
            g["lr"] = g["initial_lr"] = base
        self.scheduler = None
        if name != "warmup_head" and cfg.scheduler == "cosine":
            self.scheduler = CosineLRScheduler(
                self.optimizer,
                t_initial=max(1, (end - start) * steps),
                lr_min=cfg.min_lr,
                warmup_t=int(cfg.warmup_epochs * steps),
                warmup_lr_init=cfg.min_lr,
                t_in_epochs=False,
            )
        elif name != "warmup_head" and cfg.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode="max",
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                min_lr=cfg.min_lr,
            )
        if self.scheduler is not None:
            if scheduler_state:
                self.scheduler.load_state_dict(scheduler_state)
            if cfg.scheduler == "cosine":
                self.scheduler.step_update(self.state["phase_step"])
            elif scheduler_state:  # the reduced learning rates of the interrupted run
                for g, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                    g["lr"] = lr
        self.state["phase"] = name
        model = ddp.wrap(self.model, self.dist)  # rebuilt: DDP records trainable params
        mode = self._compile_mode()
        self._eager_model = model
        self.train_model = (
            model
            if mode is None
            else torch.compile(model, mode=None if mode == "default" else mode)
        )
        self._compiled_untested = mode is not None
        self._cudagraphs = mode in ("reduce-overhead", "max-autotune")

    def _compile_mode(self) -> str | None:
        """The ``torch.compile`` mode to train with, or None (eager): ``cfg.torch_compile`` with
        ``cfg.compile_mode``, unless torch.compile cannot run here; the GPU modes (CUDA
        graphs, autotuning) train eagerly on the CPU, and CUDA graphs give way to the
        default mode under DistributedDataParallel."""
        cfg = self.cfg
        if not cfg.torch_compile:
            return None
        mode = cfg.compile_mode
        blocker = device.compile_blocker(self.dev)
        if blocker is None and mode != "default" and self.dev.type != "cuda":
            blocker = f"compile_mode '{mode}' is a GPU mode: {self.dev.type} trains eagerly"
        if blocker:
            if self.dist.is_main:
                log.warning(f"note: torch_compile=True ignored: {blocker}")
            return None
        if mode == "reduce-overhead" and self.dist.distributed:
            mode = "default"  # CUDA graphs and DDP's gradient hooks: not together
        return mode

    # ----------------------------------------------------------------- resume
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

    # ----------------------------------------------------------------- steps
    def _lr(self, part: str) -> float:
        return max(
            (
                g["lr"]
                for g in self.optimizer.param_groups
                if g["part"] == part and g["params"][0].requires_grad
            ),
            default=0.0,
        )

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

    # ----------------------------------------------------------------- validation
    def _val_batches(self):
        """The validation batches: from ``val_loader`` the first time, then kept (on the
        device when they fit in a quarter of its free memory, else in host memory up to
        ``VAL_KEEP_BYTES``) for the next epochs: the images are fixed, reading and
        converting them every epoch is work done twice."""
        if self._val_kept is not None:
            yield from self._val_kept
            return
        kept: list | None = []
        on_device = False
        for i, (x, y) in enumerate(self.val_loader):
            if i == 0:
                nbytes = len(self.val_loader.dataset) * x[0].numel() * x.element_size()
                on_device = self.dev.type == "cuda" and fits_on_device(nbytes, self.dev, 0.25)
                if not on_device and nbytes > VAL_KEEP_BYTES:
                    kept = None
            if on_device:
                x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
            if kept is not None:
                kept.append((x, y))
            yield x, y
        self._val_kept = kept

    def _validation_pass(self, models: dict) -> dict:
        """``{prefix: (logits, labels)}``: one pass over the validation images, each batch
        through every model of ``models`` (``{prefix: model}``), gathered from every rank
        under DDP. The numbers are those of :meth:`predict` (same batches, same input
        function, same precision); the logits leave the device once, at the end."""
        self.val_passes_run += 1
        for m in models.values():
            m.eval()
        logits: dict[str, list] = {k: [] for k in models}
        labels = []
        with torch.inference_mode():
            for x, y in self._val_batches():
                x = self._to_input(x)
                for k, m in models.items():
                    with self._autocast():
                        logits[k].append(m(x).float())
                labels.append(y)
        y = torch.cat(labels).long().cpu() if labels else torch.empty(0, dtype=torch.long)
        y = ddp.all_gather_cat(y, self.dist)
        out = {}
        for k, parts in logits.items():
            lg = torch.cat(parts).cpu() if parts else torch.empty(0, self.num_classes)
            out[k] = (ddp.all_gather_cat(lg, self.dist), y)
        return out

    def validate(self) -> dict:
        """Validation metrics of the raw weights (``val_*``) and of the EMA weights
        (``ema_val_*``): one pass over the validation images for both (``val_passes=1``),
        or one pass each (``val_passes=2``)."""
        models = {"val_": self.model}
        if self.ema is not None:
            models["ema_val_"] = self.ema.module
        groups = [models] if self.cfg.val_passes == 1 else [{k: m} for k, m in models.items()]
        row = {}
        for group in groups:
            for prefix, (logits, y) in self._validation_pass(group).items():
                metrics = val_metrics(logits, y, self.pos_index)
                row.update({f"{prefix}{k}": v for k, v in metrics.items()})
        return row

    def predict(
        self, model: torch.nn.Module, loader: DataLoader
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32) and labels over ``loader`` through the one prediction loop
        (:func:`skinhelpers.model.inference.predict_loader`), gathered from every rank under
        DDP."""
        pred = predict_loader(
            model,
            loader,
            self.model.mean,
            self.model.std,
            desc=None,
            memory_format=self.memory_format,
            amp_dtype=self.amp_dtype if self.use_amp else None,
        )
        logits = torch.from_numpy(pred.logits).float().reshape(-1, self.num_classes)
        y = (
            torch.from_numpy(pred.labels)
            if pred.labels is not None
            else torch.empty(0, dtype=torch.long)
        )
        return ddp.all_gather_cat(logits, self.dist), ddp.all_gather_cat(y.long(), self.dist)

    # ----------------------------------------------------------------- checkpoints
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
            # the EMA weights at the end of training (an annealed schedule's final average):
            # no selection on a noisy best-epoch score; notebook 08 evaluates it beside
            # best / best_ema (benchmarks/RESULTS.md sections 11-12)
            self._save(
                "final_ema.pt",
                self.ema.module.state_dict(),
                _strip(self.history[-1], "ema_val_"),
                len(self.history),
            )
        if self.writer is not None:
            self.writer.close()
        return self.result(time.perf_counter() - t_start)

    def _fit_schedule(self, epoch: int, phase_start: int, minutes: float) -> None:
        """Size the schedule to the time budget (``max_minutes``) from the measured speed of
        the epochs run so far, so that a cosine schedule anneals inside the budget on a slow
        machine instead of being cut with its learning rate still high. An epoch's time is
        counted at the speed of its steps after the first few (which can pay once for
        compilation or autotuning); the estimate is the median of these after the first
        fine-tuning epoch, redone after every epoch, never beyond ``epochs``. The first
        estimate, from one epoch, never ends training on its own: one more epoch is
        measured before the schedule can stop."""
        cfg = self.cfg
        if not cfg.max_minutes or cfg.scheduler != "cosine" or self.scheduler is None:
            return
        times = self._epoch_seconds[1:] or self._epoch_seconds
        per_epoch = float(np.median(times))
        left = cfg.max_minutes * 60 - minutes * 60
        fit = epoch + 1 + max(0, int(left // per_epoch))
        if len(self._epoch_seconds) == 1:
            fit = max(fit, epoch + 2)
        planned = max(epoch + 1, min(cfg.epochs, fit))
        if planned == self.state["planned_epochs"]:
            return
        self.state["planned_epochs"] = planned
        steps = max(len(self.train_loader), 1)
        self.scheduler.t_initial = max(1, (planned - phase_start) * steps)
        if self.dist.is_main:
            log.info(
                f"schedule fitted to the {cfg.max_minutes:g}-minute budget: {planned} of "
                f"{cfg.epochs} epochs ({per_epoch:.0f} s per epoch), the learning rate "
                "anneals by the last",
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
