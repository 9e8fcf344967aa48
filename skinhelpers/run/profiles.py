"""Run profiles for ``run_all.sh``: one dictionary of notebook parameters per profile.

``smoke``: seconds per notebook (CI); ``cpu``: the real HAM10000 in about an hour on 2
cores; ``gpu``: a GPU box. A notebook receives only the parameters its ``parameters``
cell declares; anything given on the command line overrides the profile.

Names: ``trial_*`` are the budget of the model trials (notebook 06); ``epochs``,
``batch_size``, ``lr`` and the other recipe keys are the final training (notebook 07).

The training recipe itself (learning rates, sampling, loss, EMA, ...) is the default of
:class:`skinhelpers.train.config.TrainConfig`, and the notebooks' parameter cells keep the
same defaults: a profile lists only what it changes (the budget, and the odd recipe value).

The ``cpu`` recipe (07) is built for balanced accuracy on HAM10000 within ~45 minutes of
training on 2 cores: ImageNet EfficientNet-Lite0 at 160 px, one epoch of head warm-up on
the frozen backbone, then fine-tuning with a 0.3x backbone learning rate, square-root
class-balanced sampling plus a logit-adjusted loss (the remaining imbalance is folded into
the loss, so the plain argmax suits balanced accuracy), label smoothing 0.1, EMA weights,
and model selection / early stopping on validation balanced accuracy. The cosine schedule
is sized to the 45 minutes from the measured epoch time (17 epochs on a 2-core AMD EPYC:
benchmarks/RESULTS.md section 10), so it anneals on a slower CPU too.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# The gpu profile's batch size and learning rate, by a rule (issue 26): the largest batch
# that fits every trial network at 224 px in bfloat16 on a 40 GB GPU (EfficientNet-B3 and
# ConvNeXt-T the largest), so that a step is bound by the network and not by per-step costs
# (batch 64 ran at ~35 ms a step on an H200, RESULTS.md section 13), and the learning rate
# scaled linearly from the batch it was measured at (64 at 1.5e-3, section 13); the warm-up
# stays one epoch after unfreezing (TrainConfig.warmup_epochs). A smaller GPU: halve both,
# e.g. -p batch_size 128 -p trial_batch_size 128 -p lr 3e-3.
GPU_BATCH = 256
GPU_LR_AT = (64, 1.5e-3)  # (batch size, learning rate) measured together


def linear_lr(batch_size: int, at: tuple[int, float] = GPU_LR_AT) -> float:
    """The learning rate for ``batch_size`` by the linear scaling rule from ``at``."""
    return at[1] * batch_size / at[0]


PROFILES: dict[str, dict] = {
    "smoke": {
        "image_size": 64,
        "max_images": 600,
        # 02: the preprocessing cost timed on 40 images per method, not 100
        "sample_size": 40,
        # 03: the label audit's features at the smoke image size (it reads 02's cache)
        "audit_image_size": 64,
        # 05: a throughput figure of 64 images per preset is enough to see the order
        "throughput_images": 64,
        # 06: model trials
        "trial_models": ["small_cnn", "efficientnet_lite0"],
        "trial_epochs": 1,
        "trial_freeze_epochs": 0,
        "trial_image_size": 64,
        "trial_batch_size": 32,
        "trial_max_train_images": 0,
        # 07: final training
        "epochs": 2,
        "patience": 0,
        # 08: evaluation
        "n_bootstrap": 200,
        "tta_views": 2,
        "cam_max_images": 100,
    },
    "cpu": {
        "image_size": 160,  # the images are 200x150: 160 px keeps more of them than 128
        # 02: colour constancy removes the dermatoscope's colour cast (ISIC 2017-2019
        # winners); it flows into the image cache, so 04-08 train and test on it
        "preprocess": "shades_of_gray",
        "max_images": 0,  # 0: all images
        # six short trials (about 3 minutes) that answer 06's three questions on real data:
        # pretrained vs scratch, frozen vs fine-tuned, and the input normalisation
        "trial_models": [
            "small_cnn",
            "efficientnet_lite0:scratch",
            "efficientnet_lite0:frozen",
            "efficientnet_lite0",
            "efficientnet_lite0@dataset",
            "efficientnet_lite0@sample",
        ],
        "trial_epochs": 2,
        "trial_freeze_epochs": 0,
        "trial_image_size": 64,
        "trial_batch_size": 32,
        "trial_max_train_images": 2000,
        # 07 trains EfficientNet-Lite0 (ImageNet) whatever 06 ranks first: at this trial
        # budget (64 px, 2 epochs, 2,000 images) the from-scratch small_cnn wins 06 on
        # HAM10000 (0.47 vs 0.36 val balanced accuracy), the reverse of the full budget.
        # Trials at 160 px with 2 epochs rank like the full budget but take ~10 minutes the
        # hour does not have (benchmarks/RESULTS.md section 18). "" would follow 06.
        "arch": "efficientnet_lite0",
        # an upper bound: the trainer sizes the cosine schedule from the measured speed of
        # its first epochs so that it anneals inside max_minutes (a slower CPU fits fewer)
        "epochs": 30,
        "torch_compile": True,  # faster training on this CPU, about 2 min of compiling
        "patience": 8,
        "max_minutes": 45,
    },
    "gpu": {
        "augment_on": "device",  # the cached images on the GPU, augmented a batch at a time
        # with -p torch_compile True, 07 compiles with CUDA graphs (the training step's shapes
        # never change; a compile that fails trains eagerly with a note; the CPU trains
        # eagerly in this GPU mode). torch_compile stays off (07 and 08 share it) until
        # benchmarks/gpu_check.sh has measured the gain on a GPU
        "compile_mode": "reduce-overhead",
        "image_size": 224,
        "preprocess": "shades_of_gray",
        "max_images": 0,
        "workers": 8,
        "trial_models": [
            "small_cnn",
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet50_frozen",
            "resnet50_finetune",
            "efficientnet_b0",
            "efficientnet_b3",
            "efficientnet_lite0:scratch",
            "efficientnet_lite0:frozen",
            "efficientnet_lite0",
            "efficientnet_lite0@dataset",
            "efficientnet_lite0@sample",
            "efficientnet_lite1",
            "efficientnet_lite2",
            # a larger backbone by its timm name (ImageNet weights from the hub: skipped
            # with a note where the hub cannot be reached)
            "convnext_tiny",
        ],
        "trial_epochs": 8,
        "trial_freeze_epochs": 1,
        "trial_image_size": 224,
        "trial_batch_size": GPU_BATCH,
        "trial_max_train_images": 0,
        # 04 deals the train+val pool into 5 lesion-grouped folds (validation = fold 0); 07
        # trains one model per fold and 08 evaluates their average on the fixed test split
        "n_folds": 5,
        "kfold_ensemble": True,
        "epochs": 40,
        "batch_size": GPU_BATCH,
        "lr": linear_lr(GPU_BATCH),
        "patience": 8,
    },
}


def resolve(profile: str, overrides: dict | None = None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; choose one of {sorted(PROFILES)}")
    return {**PROFILES[profile], "profile": profile, **(overrides or {})}
