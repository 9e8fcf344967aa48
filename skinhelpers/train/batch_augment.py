"""Batched augmentation on the device: the image cache as one tensor, whole batches augmented.

The per-image presets of :mod:`skinhelpers.train.augment` run in the DataLoader, one image
at a time on the CPU (~1.5 ms per 128 px image): on a GPU box that starves the model, and
on 2 CPU cores it is the part of a training step that cannot overlap with the model.
Here the same presets are applied to a whole ``uint8`` batch at once with kornia, which
draws **independent random parameters for every image** of the batch, on whatever device
the batch lives on:

``none``, ``basic``, ``strong`` and ``shift``, built from the one table of
:mod:`skinhelpers.train.presets` that the per-image path reads too (nearest-neighbour warps
with zero fill, as torchvision's ``RandomAffine`` defaults). ``autoaugment`` and
``randaugment`` exist only per image (torchvision's policies).

No Python work per image and, on a GPU, no host-device sync: the random parameters are
drawn for the whole batch at once on the batch's device, an operation with probability
``p < 1`` is computed for every image and blended by a per-image mask (kornia >= 0.9 is
branch-free), the colour jitter is torchvision's formulas as whole-batch tensor operations
(:class:`BatchColorJitter`), the 90-degree turns are selected with ``torch.where`` (on the
CPU, where reading a tensor costs nothing, by cheaper indexing), and the loader moves the
epoch's order to the device once (tests/test_batch_augment_sync.py counts Python calls
against the batch size, and the reads of tensor values).

:class:`DeviceBatchLoader` keeps the training images as one ``uint8`` tensor (pinned host
memory, or on the GPU when it fits) and yields augmented ``(uint8 batch, labels)`` pairs
in the order of the trainer's sampler, so balanced sampling, seeding and resuming work as
with a DataLoader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import kornia.augmentation as K
import numpy as np
import pandas as pd
import torch

from skinhelpers.figures import synthetic_title
from skinhelpers.train.augment import measure_throughput, train_transform
from skinhelpers.train.presets import BATCH_PRESETS, PRESET_SPECS

log = logging.getLogger(__name__)

#: torchvision's luma weights (rgb_to_grayscale), for contrast and saturation
LUMA = (0.2989, 0.587, 0.114)


class RandomRot90Batch(torch.nn.Module):
    """Rotate every image of a batch by its own random multiple of 90 degrees (0 or 180
    degrees when the images are not square, so the shape stays).

    ``sync_free`` (None: everywhere but on the CPU): every turn of the whole batch, each
    image taking its own with ``torch.where``; else each turn's images by indexing, which
    moves less memory but counts the images of each turn on the host (a sync on a GPU).
    The same random draws give the same images either way."""

    def __init__(self, sync_free: bool | None = None):
        super().__init__()
        self.sync_free = sync_free

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = x.shape[-1] == x.shape[-2]
        k = torch.randint(0, 4 if square else 2, (x.shape[0],), device=x.device)
        if not square:
            k = 2 * k  # 0 or 180 degrees
        turns = (1, 2, 3) if square else (2,)
        if x.device.type != "cpu" if self.sync_free is None else self.sync_free:
            k, out = k.view(-1, 1, 1, 1), x
            for r in turns:
                out = torch.where(k == r, torch.rot90(x, r, dims=(-2, -1)), out)
            return out
        out = x.clone()
        for r in turns:
            idx = (k == r).nonzero(as_tuple=True)[0]
            if len(idx):
                out[idx] = torch.rot90(x[idx], r, dims=(-2, -1))
        return out


class BatchColorJitter(torch.nn.Module):
    """torchvision's ColorJitter on a float (N, 3, H, W) batch in [0, 1]: brightness,
    contrast, then saturation, each factor drawn per image from ``1 +- amount`` on the
    batch's device, with torchvision's formulas (brightness scales the image, contrast
    blends it with its grayscale mean, saturation with its grayscale), clamped to [0, 1]
    after each. Whole-batch tensor operations: nothing is read back on the host."""

    def __init__(self, brightness: float, contrast: float, saturation: float):
        super().__init__()
        self.amounts = (float(brightness), float(contrast), float(saturation))
        self._consts: dict = {}  # (device, dtype) -> (amounts, luma), made there once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._consts:
            self._consts[key] = (
                torch.tensor(self.amounts, dtype=x.dtype, device=x.device),
                torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1),
            )
        amount, luma = self._consts[key]
        f = 1 + amount * (2 * torch.rand(len(x), 3, device=x.device, dtype=x.dtype) - 1)
        b, c, s = (f[:, i].view(-1, 1, 1, 1) for i in range(3))
        x = (x * b).clamp_(0.0, 1.0)
        mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (c * x + (1 - c) * mean).clamp_(0.0, 1.0)
        gray = (x * luma).sum(1, keepdim=True)
        return (s * x + (1 - s) * gray).clamp_(0.0, 1.0)


class BatchAugment(torch.nn.Module):
    """The ``preset`` augmentation of a ``uint8`` (N, 3, H, W) batch, per-image parameters.

    Returns a ``uint8`` batch of the same shape on the same device.
    """

    def __init__(self, preset: str = "basic", sync_free: bool | None = None):
        super().__init__()
        if preset not in BATCH_PRESETS:
            raise ValueError(
                f"batched augmentation supports the presets {list(BATCH_PRESETS)}, "
                f"not '{preset}' (autoaugment/randaugment run per image only)"
            )
        self.preset = preset
        self.rot90 = RandomRot90Batch(sync_free)
        sp = PRESET_SPECS[preset]  # the one table, also read by the per-image path
        nearest = "nearest"
        self.ops = torch.nn.Identity()
        self.color = torch.nn.Identity()
        self.extra = torch.nn.Identity()
        if preset == "none":
            return
        geometry = [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
        if "affine" in sp:
            a = sp["affine"]
            shear = a.get("shear")
            geometry.append(
                K.RandomAffine(
                    degrees=a["degrees"],
                    translate=a.get("translate"),
                    scale=a.get("scale"),
                    shear=None if shear is None else tuple(float(v) for v in shear),
                    resample=nearest,
                    p=1.0,
                )
            )
        self.ops = K.AugmentationSequential(*geometry)
        if "color" in sp:
            self.color = BatchColorJitter(**sp["color"])
        extra = []
        if "blur" in sp:
            b = sp["blur"]
            k = b["kernel_size"]
            extra.append(K.RandomGaussianBlur((k, k), b["sigma"], p=b["p"]))
        if "noise" in sp:
            extra.append(
                K.RandomGaussianNoise(mean=0.0, std=sp["noise"]["sigma"], p=sp["noise"]["p"])
            )
        if "erasing" in sp:
            e = sp["erasing"]
            extra.append(K.RandomErasing(scale=e["scale"], value=0.0, p=e["p"]))
        if extra:
            self.extra = K.AugmentationSequential(*extra)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise TypeError(
                f"BatchAugment expects a uint8 (N, 3, H, W) batch, got {x.dtype} {tuple(x.shape)}"
            )
        if self.preset == "none" or len(x) == 0:
            return x
        x = self.rot90(x)
        y = self.extra(self.color(self.ops(x.float().div_(255.0)))).clamp_(0.0, 1.0)
        return y.mul_(255.0).round_().to(torch.uint8)


def fits_on_device(nbytes: int, device: torch.device, fraction: float = 0.5) -> bool:
    """Whether ``nbytes`` fit in ``fraction`` of the GPU's free memory (CPU: always)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


class DeviceBatchLoader:
    """Augmented batches of a :class:`~skinhelpers.data.cache.CachedImageDataset`.

    The dataset's images are copied once into a ``uint8`` (N, 3, S, S) tensor: on the GPU
    when it fits (``keep_on="auto"``), else in pinned host memory and copied per batch with
    ``non_blocking``. Iteration follows ``sampler`` (with ``set_epoch``, as a DataLoader's);
    incomplete last batches are dropped when ``drop_last``.
    """

    def __init__(
        self,
        dataset,
        sampler,
        batch_size: int,
        device: torch.device | str,
        preset: str = "basic",
        drop_last: bool = True,
        keep_on: str = "auto",
    ):
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), drop_last
        self.device = torch.device(device)
        images = torch.from_numpy(np.ascontiguousarray(dataset.cache.images[dataset.rows]))
        images = images.permute(0, 3, 1, 2).contiguous()
        self.labels = torch.tensor(np.asarray(dataset.labels), dtype=torch.long)
        on_device = keep_on == "device" or (
            keep_on == "auto"
            and self.device.type == "cuda"
            and fits_on_device(images.numel(), self.device)
        )
        if on_device:
            self.images = images.to(self.device)
            self.labels = self.labels.to(self.device)
        else:
            pin = self.device.type == "cuda"
            self.images = images.pin_memory() if pin else images
        self.augment = BatchAugment(preset).to(self.device)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # the epoch's order goes where the images are once (one copy an epoch, not a
        # blocking copy of the indices every batch)
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        order = order.to(self.images.device)
        pinned = self.images.device.type == "cpu" and self.device.type == "cuda"
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if pinned:  # gathered into pinned memory, so the copy to the GPU does not block
                x = torch.empty(
                    (len(idx), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True
                )
                torch.index_select(self.images, 0, idx, out=x)
            else:
                x = self.images.index_select(0, idx)
            x = x.to(self.device, non_blocking=True)
            y = self.labels.index_select(0, idx).to(self.device, non_blocking=True)
            yield self.augment(x), y


# --------------------------------------------------------------------------- notebook 05


def measure_batch_throughput(
    preset: str,
    images: torch.Tensor,
    n: int = 256,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> float:
    """Images per second of :class:`BatchAugment` on ``device``, ``batch_size`` images at a
    time, cycling through ``images`` (uint8 ``(N, 3, S, S)``) until ``n`` are augmented."""
    dev = torch.device(device)
    aug = BatchAugment(preset).to(dev)
    imgs = images.to(dev)
    idx = torch.arange(batch_size) % len(imgs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        aug(imgs[idx])  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            aug(imgs[(idx + done) % len(imgs)])
            done += batch_size
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    return done / (time.perf_counter() - t0)


def throughput_comparison(
    images: torch.Tensor,
    presets=("basic", "strong"),
    n: int = 256,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    seed: int = 0,
):
    """Per-image presets (one thread, like one DataLoader worker) against the same presets
    batched on ``device``: images/s and the speed-up, one row per preset."""

    size = tuple(images.shape[-2:])
    rows = []
    for p in presets:
        per_image = measure_throughput(p, size, n=n, images=images, seed=seed)
        batched = measure_batch_throughput(p, images, n, batch_size, device, seed)
        rows.append(
            {
                "preset": p,
                "per image (1 thread)": round(per_image, 1),
                f"batched on {torch.device(device).type} ({torch.get_num_threads()} "
                "thread(s))": round(batched, 1),
                "speed-up": round(batched / per_image, 2),
            }
        )
    return pd.DataFrame(rows).set_index("preset")


def plot_side_by_side(
    images: torch.Tensor,
    preset: str,
    n: int = 4,
    seed: int = 0,
    labels=None,
    synthetic: bool = False,
):
    """One row per source image: the cached image, ``n`` views of the per-image preset, then
    ``n`` views of the batched one (same parameter ranges, drawn per image)."""
    import matplotlib.pyplot as plt

    rows, size = len(images), tuple(images.shape[-2:])
    per_image = train_transform(preset, size)
    batched = BatchAugment(preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        a = [[per_image(img) for _ in range(n)] for img in images]
        b = batched(images.repeat_interleave(n, 0)).view(rows, n, *images.shape[1:])
    fig, axes = plt.subplots(
        rows, 2 * n + 1, squeeze=False, figsize=(1.2 * (2 * n + 1) + 0.4, 1.2 * rows + 0.7)
    )
    for i in range(rows):
        views = [images[i]] + a[i] + list(b[i])
        for j, v in enumerate(views):
            ax = axes[i, j]
            ax.imshow(v.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        if labels is not None:
            axes[i, 0].set_ylabel(labels[i], rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title("cached", fontsize=8)
    for j in range(n):
        axes[0, 1 + j].set_title("per image", fontsize=8)
        axes[0, 1 + n + j].set_title("batched", fontsize=8)
    fig.suptitle(
        synthetic_title(
            f"preset '{preset}': per image (torchvision) vs batched (kornia, per-image parameters)",
            synthetic,
        ),
        fontsize=9,
    )
    fig.tight_layout()
    return fig
