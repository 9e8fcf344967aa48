"""What a training run is configured by: :class:`TrainConfig` (the recipe, one field per
knob, JSON-serialisable so it can travel to ``torchrun`` workers and into checkpoints) and
:class:`DataMeta` (what a checkpoint must know about the data).

:class:`TrainConfig` is the one home of the training defaults: the run profiles
(:mod:`skinhelpers.run.profiles`) override only what a profile changes, and a notebook
parameter of the same name must keep the same literal default (tests/test_defaults.py).
The defaults are the recipe built for balanced accuracy on HAM10000: square-root
class-balanced sampling plus a logit-adjusted loss, label smoothing, EMA, two phases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from skinhelpers.model.factory import parse_variant

AUGMENT_ON = ("loader", "device")
#: torch.compile modes; all but "default" are GPU modes (CUDA graphs, kernel autotuning):
#: on the CPU the model then runs eagerly (see skinhelpers.train.phases, PhasesMixin._compile_mode)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MONITORS = ("balanced_accuracy", "macro_f1", "macro_auc")
SCHEDULERS = ("cosine", "plateau", "constant")
#: fields renamed since checkpoints were first written: old name -> new name
RENAMED_FIELDS = {"compile": "torch_compile"}  # 'compile' shadowed the builtin in notebooks
# fields that must match to resume a run from its last.pt
RESUME_KEYS = (
    "arch",
    "epochs",
    "freeze_epochs",
    "batch_size",
    "lr",
    "backbone_lr_mult",
    "scheduler",
    "hidden_dim",
    "frozen",
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    # model
    # a factory name or any timm.list_models() name, optionally with ":scratch" etc.
    arch: str = "efficientnet_lite0"
    # None: the model's default; False: random init; True/"hub"/"package"; or the path of a
    # local state dict (.pth / .safetensors)
    pretrained: bool | str | None = None
    frozen: bool | None = None  # train the head only (None: the model's default)
    drop_rate: float = 0.2  # head dropout
    hidden_dim: int = 0  # >0: a hidden layer in the head
    drop_path_rate: float = 0.0  # stochastic depth (timm backbones)
    # schedule and optimiser
    epochs: int = 10
    freeze_epochs: int = 1  # phase 1: head warm-up on a frozen backbone
    batch_size: int = 32
    eval_batch_size: int = 0  # 0: 2 x batch_size
    lr: float = 1e-3  # head peak learning rate
    backbone_lr_mult: float = 0.3  # backbone lr = lr * this (phase 2)
    weight_decay: float = 0.02
    scheduler: str = "cosine"  # cosine | plateau | constant
    warmup_epochs: float = 1.0  # linear warm-up at the start of phase 2
    min_lr: float = 1e-6
    plateau_patience: int = 2
    plateau_factor: float = 0.3
    grad_clip: float = 0.0  # 0: off
    # loss and imbalance
    loss: str = "ce"  # ce | focal
    label_smoothing: float = 0.1
    focal_gamma: float = 2.0
    balance_power: float = 0.5  # class-balanced sampling: 0 off, 0.5 sqrt, 1 full
    # several sources: balance them in sampling (1 every source drawn equally often, 0 off;
    # 1 won on validation averaged over the sources, benchmarks/RESULTS.md section 23; one
    # source: nothing to balance, no effect)
    source_balance_power: float = 1.0
    class_weight_power: float = 0.0  # class-weighted loss: 0 off, 1 inverse frequency
    logit_adjust_tau: float = 1.0  # logit-adjusted loss (balanced-accuracy decision rule), 0 off
    # batch mixing (CutMix / MixUp)
    cutmix_alpha: float = 0.0
    mixup_alpha: float = 0.0
    mix_prob: float = 0.0
    augment_on: str = "loader"  # loader: per image in the DataLoader | device: batched
    # EMA
    ema: bool = True
    ema_decay: float = 0.999
    # early stopping and selection
    monitor: str = "balanced_accuracy"  # balanced_accuracy | macro_f1 | macro_auc
    patience: int = 5  # epochs without improvement (phase 2); 0: off
    min_delta: float = 1e-4
    # system
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    amp: bool = True  # mixed precision (CUDA only)
    amp_dtype: str = "bfloat16"  # bfloat16 | float16 (float16 uses a GradScaler)
    channels_last: bool = True
    torch_compile: bool = False
    # default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs;
    # all but "default" are GPU modes: the CPU then trains eagerly
    compile_mode: str = "default"
    # read the training loss (a host-device sync) and check it is finite every N steps
    # and at the end of the epoch, not every step
    sync_every: int = 50
    # 1: the raw and the EMA weights scored in one pass over the validation images (each
    # batch through both networks); 2: one pass each
    val_passes: int = 1
    workers: int = 2
    seed: int = 0
    resume: bool = True  # continue from last.pt when it exists
    save: str = "all"  # all (best, best_ema, last) | best | none
    tensorboard: bool = True
    max_minutes: float = 0.0  # >0: stop after the epoch that passes this budget
    sync_bn: bool = False  # SyncBatchNorm under DDP

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_params(cls, params: dict, **overrides) -> TrainConfig:
        """A config from ``params`` (a recipe, or a notebook's whole parameters): the keys
        that are fields are taken, other keys ignored, and a None keeps the default.
        ``overrides`` win and must all be fields (a typo is an error)."""
        known = set(cls.field_names())
        d = {k: v for k, v in params.items() if k in known and v is not None}
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from a dict of fields (a checkpoint's 'config', a launch file); the
        old name of a renamed field (:data:`RENAMED_FIELDS`) is read as the new one."""
        d = {RENAMED_FIELDS.get(k, k): v for k, v in d.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def check(self) -> None:
        parse_variant(self.arch)
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor '{self.monitor}' is not one of {MONITORS}")
        if self.augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on '{self.augment_on}' is not one of {AUGMENT_ON}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler '{self.scheduler}' is not one of {SCHEDULERS}")
        if self.save not in ("all", "best", "none"):
            raise ValueError(f"save '{self.save}' is not one of all|best|none")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1 ({self.epochs}, {self.batch_size})"
            )
        if self.balance_power < 0 or self.source_balance_power < 0:
            raise ValueError(
                f"balance_power and source_balance_power must be >= 0 ({self.balance_power}, "
                f"{self.source_balance_power})"
            )
        if self.amp_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be bfloat16 or float16, got {self.amp_dtype}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode '{self.compile_mode}' is not one of {COMPILE_MODES}")
        if self.sync_every < 1 or self.val_passes not in (1, 2):
            raise ValueError(
                f"sync_every must be >= 1 and val_passes 1 or 2 ({self.sync_every}, "
                f"{self.val_passes})"
            )


@dataclass
class DataMeta:
    """What a checkpoint needs to know about the data (besides the weights)."""

    classes: list
    image_size: int | list[int]  # an int for squares, [height, width] otherwise
    preprocess: str = "none"
    resize_mode: str = "squash"
    dataset: str = ""
    positive_class: str | None = None
