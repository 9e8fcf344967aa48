"""The training phases and their schedule: which phases a run has, the parameter groups and
their learning rates, what entering a phase sets up, and the schedule fitted to a time budget.

* :func:`plan_phases` - ``head_only`` (a frozen backbone), or ``warmup_head`` (the new head
  alone on the frozen pretrained backbone, ``freeze_epochs``) then ``finetune``, or
  ``finetune`` alone;
* :func:`param_groups` - backbone/head x decay/no-decay groups for AdamW, so each phase can
  set *discriminative* learning rates (backbone ``lr * backbone_lr_mult``, head ``lr``);
* :class:`PhasesMixin` - the :class:`~skinhelpers.train.trainer.Trainer` methods that enter
  a phase (freezing, learning rates, timm's ``CosineLRScheduler`` with linear warmup or
  torch's ReduceLROnPlateau, the DDP-wrapped and optionally ``torch.compile``'d model) and
  size a cosine schedule to ``max_minutes`` from the measured speed of the epochs.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from timm.scheduler import CosineLRScheduler

from skinhelpers import device
from skinhelpers.train import distributed as ddp
from skinhelpers.train.config import TrainConfig

log = logging.getLogger(__name__)


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


def plan_phases(cfg: TrainConfig, pretrained: bool, frozen: bool) -> list[tuple[str, int, int]]:
    """[(name, first_epoch, end_epoch)]: head_only | warmup_head + finetune | finetune."""
    if frozen:
        return [("head_only", 0, cfg.epochs)]
    k = min(int(cfg.freeze_epochs), cfg.epochs - 1) if pretrained else 0
    return ([("warmup_head", 0, k)] if k > 0 else []) + [("finetune", k, cfg.epochs)]


class PhasesMixin:
    """The phase and schedule methods of :class:`~skinhelpers.train.trainer.Trainer`.

    They use the trainer's ``cfg``, ``model``, ``optimizer``, ``train_loader``, ``state``,
    ``dist`` and ``dev``, and set its ``scheduler``, ``train_model``, ``_eager_model``,
    ``_compiled_untested`` and ``_cudagraphs``.
    """

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

    def _lr(self, part: str) -> float:
        return max(
            (
                g["lr"]
                for g in self.optimizer.param_groups
                if g["part"] == part and g["params"][0].requires_grad
            ),
            default=0.0,
        )

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


__all__ = ["PhasesMixin", "param_groups", "plan_phases"]
