"""Small datasets and run folders for the training tests (models, trainer, DDP, notebooks)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset


def toy_dataset(n: int = 96, size: int = 32, classes: int = 3, seed: int = 0):
    """uint8 images whose class is the brightest channel (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    x = torch.randint(0, 60, (n, 3, size, size), dtype=torch.uint8, generator=g)
    for c in range(classes):
        x[y == c, c % 3] += 150
    return TensorDataset(x, y), y.numpy()


def demo_run_folder(demo_manifest, run_dir: Path, seed: int = 0) -> Path:
    """A run folder with the demo manifest and a grouped split (what notebooks 01 and 04 write)."""
    from skinhelpers.data import manifest as datasets
    from skinhelpers.split import grouped, store

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    datasets.save_manifest(demo_manifest, run_dir)
    store.save_split(grouped.grouped_split(demo_manifest, seed=seed), run_dir)
    return run_dir
