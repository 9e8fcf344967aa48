"""Augmentation presets on ``torchvision.transforms.v2`` and batch-level CutMix/MixUp.

Images arrive as ``uint8`` CHW tensors from :class:`skinhelpers.data.cache.CachedImageDataset`,
already at their final size; every per-image preset maps such a tensor to a ``uint8``
tensor of the same shape, so augmentation runs cheaply on uint8 in the DataLoader
workers, and :func:`skinhelpers.model.inference.to_model_input` converts a whole batch to
float once, on the device.

Presets (dermoscopy has no canonical orientation, so every preset but ``none`` flips both
ways and rotates by multiples of 90 degrees, which loses no pixel; images that are not
square, e.g. HAM10000's 4:3 kept as it is, turn by 0 or 180 degrees only, so the shape
stays):

===========  =============================================================================
none         nothing (the image as cached)
basic        flips, 90-degree rotations, a mild affine (rotation, scale), mild colour jitter
strong       flips, 90-degree rotations, affine with shear, strong colour jitter
             (brightness, contrast, saturation), Gaussian noise, random erasing
shift        flips, 90-degree rotations, a mild affine, strong brightness / contrast /
             saturation, Gaussian blur, Gaussian noise: what differs between cameras and
             sources (a lever against source shift in runs of several datasets)
autoaugment  flips, 90-degree rotations, AutoAugment (ImageNet policy)
randaugment  flips, 90-degree rotations, RandAugment (2 ops, magnitude 9)
===========  =============================================================================

:class:`BatchMixer` applies CutMix and/or MixUp to a float batch and always returns soft
``(N, C)`` targets, so the loss is the same with and without mixing.

No preset shifts hue: lesion colour carries diagnosis (blue-white veil, red vascular
structures), and ``ColorJitter(hue=...)`` on uint8 is by far the slowest step (about ten
times an affine warp on this CPU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from skinhelpers.data.imaging import image_shape
from skinhelpers.figures import synthetic_title
from skinhelpers.files import read_json, write_json
from skinhelpers.train.presets import PRESETS
from skinhelpers.train.presets import spec as preset_spec

log = logging.getLogger(__name__)

PRESET_DESCRIPTIONS = {
    "none": "no augmentation",
    "basic": "flips + right-angle turns + mild affine + mild colour jitter",
    "strong": "basic geometry + shear + strong colour jitter + Gaussian noise + random erasing",
    "shift": "basic geometry + strong brightness/contrast/saturation + Gaussian blur + noise "
    "(what differs between cameras and sources)",
    "autoaugment": "flips + right-angle turns + AutoAugment (ImageNet policy)",
    "randaugment": "flips + right-angle turns + RandAugment (2 ops, magnitude 9)",
}
AUGMENTATION_KEYS = ("preset", "cutmix_alpha", "mixup_alpha", "mix_prob")


class RandomRot90(v2.Transform):
    """Rotate by 0, 90, 180 or 270 degrees (uniformly), without interpolation.

    A non-square image turns by 0 or 180 degrees only (uniformly), so its shape stays.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = flat_inputs[0].shape[-2:]
        if h != w:
            return {"k": 2 * int(torch.randint(0, 2, ()).item())}
        return {"k": int(torch.randint(0, 4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0:
            return inpt
        return torch.rot90(inpt, params["k"], dims=(-2, -1))


def _orientation() -> list:
    return [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), RandomRot90()]


def _gaussian_noise(sigma: float, p: float) -> v2.Transform:
    """``v2.GaussianNoise`` needs a float image: convert, add noise (clipped), convert back."""
    return v2.RandomApply(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.GaussianNoise(sigma=sigma, clip=True),
            v2.ToDtype(torch.uint8, scale=True),
        ],
        p=p,
    )


def train_transform(preset: str, size: int | Sequence[int]) -> v2.Compose:
    """The per-image training transform of ``preset`` for images of ``size`` (an int for
    squares, ``(height, width)`` otherwise), built from its spec in
    :data:`skinhelpers.train.presets.PRESET_SPECS`.

    Takes and returns a ``uint8`` CHW tensor; an input of another size is resized first.
    """
    sp = preset_spec(preset)
    steps: list = [v2.Resize(image_shape(size), antialias=True)]  # no-op at the cached size
    if preset == "none":
        return v2.Compose(steps)
    steps += _orientation()
    if "affine" in sp:
        steps.append(v2.RandomAffine(**sp["affine"]))
    if "color" in sp:
        steps.append(v2.ColorJitter(**sp["color"]))
    if "blur" in sp:
        b = sp["blur"]
        steps.append(
            v2.RandomApply(
                [v2.GaussianBlur(kernel_size=b["kernel_size"], sigma=b["sigma"])], p=b["p"]
            )
        )
    if "noise" in sp:
        steps.append(_gaussian_noise(**sp["noise"]))
    if "erasing" in sp:
        steps.append(v2.RandomErasing(p=sp["erasing"]["p"], scale=sp["erasing"]["scale"], value=0))
    if sp.get("policy") == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    elif sp.get("policy") == "randaugment":
        steps.append(v2.RandAugment(num_ops=sp["num_ops"], magnitude=sp["magnitude"]))
    return v2.Compose(steps)
    steps += _orientation()
    if preset == "basic":
        steps += [
            v2.RandomAffine(degrees=15, scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.1),
        ]
    elif preset == "strong":
        steps += [
            v2.RandomAffine(
                degrees=30, translate=(0.05, 0.05), scale=(0.8, 1.2), shear=(-10, 10, -10, 10)
            ),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
            _gaussian_noise(sigma=0.04, p=0.5),
            v2.RandomErasing(p=0.25, scale=(0.02, 0.12), value=0),
        ]
    elif preset == "shift":  # a lever against source shift (several datasets)
        steps += [
            v2.RandomAffine(degrees=15, scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.35, contrast=0.4, saturation=0.35),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.2, 1.6))], p=0.35),
            _gaussian_noise(sigma=0.03, p=0.3),
        ]
    elif preset == "autoaugment":
        steps += [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)]
    elif preset == "randaugment":
        steps += [v2.RandAugment(num_ops=2, magnitude=9)]
    return v2.Compose(steps)


def eval_transform(size: int | Sequence[int]) -> v2.Compose:
    """Evaluation: nothing for cached images of ``size``; a resize for any other size."""
    return v2.Compose([v2.Resize(image_shape(size), antialias=True)])


class BatchMixer:
    """CutMix and/or MixUp on a float batch, applied with probability ``prob``.

    ``mixer(images, labels)`` -> ``(images, targets)`` with ``targets`` float ``(N, C)``
    rows summing to 1: one-hot when the batch is not mixed (``prob == 0``, both alphas 0,
    or the coin said no), soft labels when it is. Built on ``v2.CutMix``/``v2.MixUp``
    (``v2.RandomChoice`` between them when both alphas are positive).
    """

    def __init__(
        self,
        num_classes: int,
        cutmix_alpha: float = 0.0,
        mixup_alpha: float = 0.0,
        prob: float = 0.0,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if cutmix_alpha < 0 or mixup_alpha < 0:
            raise ValueError(
                f"alphas must be >= 0, got cutmix_alpha={cutmix_alpha}, mixup_alpha={mixup_alpha}"
            )
        if not 0 <= prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.num_classes = int(num_classes)
        self.cutmix_alpha, self.mixup_alpha, self.prob = (
            float(cutmix_alpha),
            float(mixup_alpha),
            float(prob),
        )
        ops = []
        if cutmix_alpha > 0:
            ops.append(v2.CutMix(num_classes=self.num_classes, alpha=self.cutmix_alpha))
        if mixup_alpha > 0:
            ops.append(v2.MixUp(num_classes=self.num_classes, alpha=self.mixup_alpha))
        self.op = (
            None if not ops or prob == 0 else (ops[0] if len(ops) == 1 else v2.RandomChoice(ops))
        )

    @property
    def active(self) -> bool:
        return self.op is not None

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if labels.dtype != torch.int64 or labels.ndim != 1:
            raise TypeError(
                f"labels must be an int64 vector of class indices, got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), got "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        if self.op is not None and len(labels) > 1 and torch.rand(()) < self.prob:
            images, targets = self.op(images, labels)
            return images, targets.float()
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()
        return images, targets

    def __repr__(self) -> str:
        return (
            f"BatchMixer(num_classes={self.num_classes}, cutmix_alpha={self.cutmix_alpha},"
            f" mixup_alpha={self.mixup_alpha}, prob={self.prob})"
        )


# ----------------------------------------------------------------------------- persistence


def _check_choice(
    preset: str, cutmix_alpha: float, mixup_alpha: float, mix_prob: float, where: str = ""
) -> None:
    if preset not in PRESETS:
        raise ValueError(
            f"{where}unknown augmentation preset '{preset}'; choose one of {list(PRESETS)}"
        )
    for name, v in (("cutmix_alpha", cutmix_alpha), ("mixup_alpha", mixup_alpha)):
        if not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"{where}{name} must be a number >= 0, got {v!r}")
    if not isinstance(mix_prob, (int, float)) or not 0 <= mix_prob <= 1:
        raise ValueError(f"{where}mix_prob must be in [0, 1], got {mix_prob!r}")


def save_augmentation(
    run_dir: str | os.PathLike,
    preset: str,
    cutmix_alpha: float = 0.0,
    mixup_alpha: float = 0.0,
    mix_prob: float = 0.0,
) -> Path:
    """Write the chosen augmentation to ``<run_dir>/augmentation.json``."""
    _check_choice(preset, cutmix_alpha, mixup_alpha, mix_prob)
    return write_json(
        Path(run_dir) / "augmentation.json",
        {
            "preset": preset,
            "cutmix_alpha": float(cutmix_alpha),
            "mixup_alpha": float(mixup_alpha),
            "mix_prob": float(mix_prob),
        },
    )


DEFAULT_AUGMENTATION = {"preset": "basic", "cutmix_alpha": 0.0, "mixup_alpha": 0.0, "mix_prob": 0.0}


def read_augmentation(
    run_dir: str | os.PathLike, missing_ok: bool = False, verbose: bool = True
) -> dict:
    """``augmentation.json`` of notebook 05 (an error naming the file if bad).

    An absent file is an error, or with ``missing_ok`` the ``basic`` preset (with a note).
    """
    path = Path(run_dir) / "augmentation.json"
    if missing_ok and not path.exists():
        if verbose:
            log.warning(
                f"note: {path.name} not found in the run folder (notebook 05 writes it); "
                f"using {DEFAULT_AUGMENTATION}"
            )
        return dict(DEFAULT_AUGMENTATION)
    cfg = read_json(path)
    missing = [k for k in AUGMENTATION_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected {list(AUGMENTATION_KEYS)}")
    _check_choice(
        cfg["preset"], cfg["cutmix_alpha"], cfg["mixup_alpha"], cfg["mix_prob"], where=f"{path}: "
    )
    return cfg


# ----------------------------------------------------------------------------- measuring


def _as_uint8_stack(images, size, n_default: int = 64, seed: int = 0) -> torch.Tensor:
    if images is None:
        g = torch.Generator().manual_seed(seed)
        h, w = image_shape(size)
        return torch.randint(0, 256, (n_default, 3, h, w), dtype=torch.uint8, generator=g)
    if isinstance(images, np.ndarray):  # the cache's (N, H, W, 3) layout
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images))
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 (N, 3, H, W) (or a cache array (N, H, W, 3)), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    return images


def measure_throughput(
    preset: str,
    size: int | Sequence[int],
    n: int = 256,
    images=None,
    warmup: int = 8,
    seed: int = 0,
    threads: int | None = 1,
) -> float:
    """Images per second of ``train_transform(preset, size)`` in this process.

    ``images``: uint8 ``(N, 3, S, S)`` tensor, a list of CHW tensors, or a cache array
    ``(N, S, S, 3)`` (random images when ``None``); cycled until ``n`` have been
    transformed. ``threads=1`` (default) measures like one DataLoader worker (torch runs
    workers single-threaded), so multiply by the number of workers for a rough
    training-time figure; ``None`` keeps torch's current thread count.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tf = train_transform(preset, size)
    imgs = _as_uint8_stack(images, size, seed=seed)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in range(min(warmup, n)):
                tf(imgs[i % len(imgs)])
            t0 = time.perf_counter()
            for i in range(n):
                tf(imgs[i % len(imgs)])
            seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    return n / seconds


def throughput_table(
    size: int | Sequence[int],
    images=None,
    n: int = 256,
    presets: Sequence[str] = PRESETS,
    seed: int = 0,
    threads: int | None = 1,
):
    """:func:`measure_throughput` for each preset, as a DataFrame (images/s, ms/image)."""

    rows = []
    for p in presets:
        ips = measure_throughput(p, size, n=n, images=images, seed=seed, threads=threads)
        rows.append(
            {
                "preset": p,
                "images_per_s": round(ips, 1),
                "ms_per_image": round(1000 / ips, 3),
                "what": PRESET_DESCRIPTIONS[p],
            }
        )
    return pd.DataFrame(rows).set_index("preset")


# ----------------------------------------------------------------------------- plots


def _show(ax, img: torch.Tensor) -> None:
    ax.imshow(img.permute(1, 2, 0).cpu().numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def plot_gallery(
    images,
    preset: str,
    n: int = 5,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    synthetic: bool = False,
):
    """One row per source image: the image as cached, then ``n`` augmented views."""
    import matplotlib.pyplot as plt

    if images is None:
        raise ValueError("plot_gallery needs the source images (uint8 N x 3 x S x S)")
    imgs = _as_uint8_stack(images, 0)
    tf = train_transform(preset, tuple(imgs.shape[-2:]))
    rows = len(imgs)
    fig, axes = plt.subplots(
        rows, n + 1, figsize=(1.35 * (n + 1) + 0.4, 1.35 * rows + 0.6), squeeze=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(rows):
            _show(axes[i, 0], imgs[i])
            for j in range(n):
                _show(axes[i, j + 1], tf(imgs[i]))
            if labels is not None:
                axes[i, 0].set_ylabel(labels[i], rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title("cached", fontsize=8)
    for j in range(n):
        axes[0, j + 1].set_title(f"view {j + 1}", fontsize=8)
    title = f"preset '{preset}': {PRESET_DESCRIPTIONS[preset]}"
    fig.suptitle(synthetic_title(title, synthetic), fontsize=9)
    fig.tight_layout()
    return fig


def plot_mix_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    classes: Sequence[str],
    title: str = "",
    synthetic: bool = False,
    cols: int = 4,
):
    """Mixed images (float in [0, 1] or uint8, NCHW) with their soft targets as captions."""
    import matplotlib.pyplot as plt

    n = len(images)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = images[k]
        if img.dtype != torch.uint8:
            img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        _show(ax, img)
        t = targets[k]
        top = torch.argsort(t, descending=True)[:2]
        cap = "\n".join(f"{classes[int(c)][:14]} {float(t[c]):.2f}" for c in top if t[c] > 0.005)
        ax.set_title(cap, fontsize=7)
    fig.suptitle(
        synthetic_title(title or "CutMix / MixUp batch (targets: class shares)", synthetic),
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_throughput(table, title: str = ""):
    """Horizontal bars: images/s per preset (from :func:`throughput_table`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.4))
    bars = ax.barh(list(table.index)[::-1], table["images_per_s"].to_numpy()[::-1], color="#4c72b0")
    ax.bar_label(
        bars,
        labels=[f"{v:,.0f}/s" for v in table["images_per_s"].to_numpy()[::-1]],
        fontsize=8,
        padding=2,
    )
    ax.set_xscale("log")
    ax.set_xlabel("images per second (one process, one thread; log scale)")
    ax.set_title(title or "Augmentation throughput per preset", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlim(
        left=max(1.0, table["images_per_s"].min() / 3), right=table["images_per_s"].max() * 4
    )
    fig.tight_layout()
    return fig


__all__ = [
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "RandomRot90",
    "train_transform",
    "eval_transform",
    "BatchMixer",
    "save_augmentation",
    "read_augmentation",
    "measure_throughput",
    "throughput_table",
    "plot_gallery",
    "plot_mix_batch",
    "plot_throughput",
]
