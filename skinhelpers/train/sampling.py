"""Class imbalance: class weights, class-balanced sampling, and the prior they imply.

HAM10000 is two-thirds ``nv``; a network trained on it as is learns to say ``nv``.
Two remedies, usable alone or together:

* :func:`class_weights` - weight each class's loss by ``n_c ** -power``;
* :class:`BalancedSampler` - draw training images with probability ``n_c ** -power``
  (``power=1``: every class equally often; ``0.5``: square-root balancing).

Both samplers work for one process and for DistributedDataParallel: every rank draws the
same permutation (seeded by ``seed`` and the epoch) and takes its own slice.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler


def class_counts(labels, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    return np.bincount(labels, minlength=num_classes)


def class_weights(labels, num_classes: int, power: float = 1.0) -> torch.Tensor:
    """Per-class loss weights ``n_c ** -power``, scaled so the average sample weighs 1."""
    n = class_counts(labels, num_classes).astype(np.float64)
    w = np.where(n > 0, np.maximum(n, 1) ** -float(power), 0.0)
    w = w * n.sum() / max((w * n).sum(), 1e-12)
    return torch.tensor(w, dtype=torch.float32)


def sampling_prior(labels, num_classes: int, power: float = 0.0) -> torch.Tensor:
    """Class frequencies the network sees when sampling with ``n_c ** -power`` per image."""
    n = class_counts(labels, num_classes).astype(np.float64)
    p = np.where(n > 0, n ** (1.0 - float(power)), 0.0)
    return torch.tensor(p / p.sum(), dtype=torch.float32)


class BalancedSampler(Sampler[int]):
    """Draw ``num_samples`` images per epoch with replacement, weight ``n_c ** -power``.

    Distributed: pass ``rank``/``world_size``; each rank yields an equal-length slice of
    the same draw. Call :meth:`set_epoch` every epoch (the trainer does).
    """

    def __init__(
        self,
        labels,
        num_classes: int,
        power: float = 1.0,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        labels = np.asarray(labels, dtype=np.int64)
        n = class_counts(labels, num_classes).astype(np.float64)
        self.weights = torch.tensor(np.maximum(n[labels], 1) ** -float(power), dtype=torch.float64)
        self.total = int(num_samples or len(labels))
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.per_rank = self.total // self.world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        idx = torch.multinomial(
            self.weights, self.per_rank * self.world_size, replacement=True, generator=g
        )
        return iter(idx[self.rank :: self.world_size].tolist())


def train_sampler(
    labels,
    num_classes: int,
    balance_power: float = 0.0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Sampler[int]:
    """The training sampler: balanced (``balance_power > 0``) or a seeded shuffle."""
    if balance_power and balance_power > 0:
        return BalancedSampler(
            labels, num_classes, balance_power, seed=seed, rank=rank, world_size=world_size
        )
    return DistributedSampler(
        _Sized(len(labels)),
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=world_size > 1,
    )


def shard_indices(n: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Evaluation shard of one rank: every ``world_size``-th index (no padding, no repeats)."""
    return list(range(rank, n, world_size))


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1, drop_last: bool = True) -> int:
    per_rank = n // world_size
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


class _Sized:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n
