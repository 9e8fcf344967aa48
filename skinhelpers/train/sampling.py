"""Class imbalance: class weights, class-balanced sampling, and the prior they imply.

HAM10000 is two-thirds ``nv``; a network trained on it as is learns to say ``nv``.
Two remedies, usable alone or together:

* :func:`class_weights` - weight each class's loss by ``n_c ** -power``;
* :class:`BalancedSampler` - draw training images with probability ``n_c ** -power``
  (``power=1``: every class equally often; ``0.5``: square-root balancing).

A run of several sources (:mod:`skinhelpers.data.sources`) can also balance the sources:
with ``source_power=1`` every source is drawn equally often (its images keep the class
weights among themselves), so a large source cannot drown a small one and the network
sees each kind of camera as often (Rashid et al.: source-balanced sampling narrowed the
HAM10000 -> ISIC 2019 gap). :func:`sample_weights` is the one rule both the sampler and
the prior it implies (:func:`sampling_prior`, for the logit adjustment) use.

Both samplers work for one process and for DistributedDataParallel: every rank draws the
same permutation (seeded by ``seed`` and the epoch) and takes its own slice.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

log = logging.getLogger(__name__)


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


def sample_weights(
    labels, num_classes: int, power: float = 0.0, sources=None, source_power: float = 0.0
) -> np.ndarray:
    """Each training image's sampling weight: ``n_c ** -power`` for its class ``c``, then,
    with ``sources`` and ``source_power > 0``, divided by ``W_s ** source_power`` where
    ``W_s`` is the total weight of its source (``source_power=1``: every source carries the
    same total weight). Normalised to sum to one."""
    labels = np.asarray(labels, dtype=np.int64)
    n = class_counts(labels, num_classes).astype(np.float64)
    w = np.maximum(n[labels], 1) ** -float(power)
    if sources is not None and source_power and source_power > 0:
        src = np.asarray(sources).astype(str)
        if len(src) != len(labels):
            raise ValueError(f"{len(src)} sources for {len(labels)} training labels")
        names, inv = np.unique(src, return_inverse=True)
        total = np.bincount(inv, weights=w, minlength=len(names))
        w = w / total[inv] ** float(source_power)
    return w / w.sum()


def sampling_prior(
    labels, num_classes: int, power: float = 0.0, sources=None, source_power: float = 0.0
) -> torch.Tensor:
    """Class frequencies the network sees when sampling by :func:`sample_weights`."""
    labels = np.asarray(labels, dtype=np.int64)
    w = sample_weights(labels, num_classes, power, sources, source_power)
    p = np.bincount(labels, weights=w, minlength=num_classes)
    return torch.tensor(p / p.sum(), dtype=torch.float32)


class BalancedSampler(Sampler[int]):
    """Draw ``num_samples`` images per epoch with replacement, weights by
    :func:`sample_weights` (``n_c ** -power``, optionally balanced over sources).

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
        sources=None,
        source_power: float = 0.0,
    ):
        labels = np.asarray(labels, dtype=np.int64)
        w = sample_weights(labels, num_classes, power, sources, source_power)
        self.weights = torch.tensor(w, dtype=torch.float64)
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
    sources=None,
    source_power: float = 0.0,
) -> Sampler[int]:
    """The training sampler: balanced by class (``balance_power > 0``) and/or by source
    (``sources`` of more than one name, with ``source_power > 0``), or a seeded shuffle. One
    source has nothing to balance: its run draws exactly as a run without sources."""
    by_source = (
        sources is not None
        and bool(source_power and source_power > 0)
        and len(np.unique(np.asarray(sources).astype(str))) > 1
    )
    if (balance_power and balance_power > 0) or by_source:
        return BalancedSampler(
            labels,
            num_classes,
            balance_power,
            seed=seed,
            rank=rank,
            world_size=world_size,
            sources=sources if by_source else None,
            source_power=source_power if by_source else 0.0,
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
