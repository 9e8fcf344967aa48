"""Test-time augmentation for evaluation: predict over the 8 flips/rotations of the square
(the dihedral group D4) and average the class probabilities.

The views, the input function and the prediction loop live in
:mod:`skinhelpers.model.inference` (the one loop that the trainer's validation,
``predict`` and this module share); here are the evaluation-facing helpers:
:func:`prepare_model` (eval mode, memory format, compile) and :func:`predict_frame`
(the rows of a manifest, read from the image cache, as notebook 08 uses it).
``views`` is a count (1, 2, 4 or 8: the first ``n`` of
:data:`skinhelpers.model.inference.VIEWS`) or a list of names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from skinhelpers.data.cache import CachedImageDataset
from skinhelpers.device import compile_blocker, loader_workers

# notebook 08 resolves its ``tta_views`` parameter through this module
from skinhelpers.model.inference import (  # noqa: F401
    Predictions,
    model_device,
    predict_loader,
    resolve_views,
    views_for_shape,
)

log = logging.getLogger(__name__)


def prepare_model(
    model: torch.nn.Module, channels_last: bool = True, torch_compile: bool = False
) -> torch.nn.Module:
    """``model`` ready for prediction: eval mode, channels_last memory format (inputs follow
    it in :func:`skinhelpers.model.inference.predict_batch`), optionally
    ``torch.compile``-d (skipped with a note where it cannot run). Measured on 2 CPU cores
    with EfficientNet-Lite0 at 128 px (``benchmarks/bench_infer.py``, RESULTS.md
    section 3): channels_last is 1.5x faster eager; compiling is ~2x faster again once
    warm but costs 10-25 s first, so it pays from a few thousand images on (notebook 08
    with TTA), not for a handful (``predict``).
    """
    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if torch_compile:
        blocker = compile_blocker(model_device(model))
        if blocker:
            log.warning(f"note: compile ignored: {blocker}")
        else:
            model = torch.compile(model)
    return model


def predict_frame(
    model: torch.nn.Module,
    cache,
    df,
    mean: Sequence[float],
    std: Sequence[float],
    views: int | Sequence[str] = 1,
    batch_size: int = 64,
    workers: int = 0,
    desc: str | None = "predict",
    amp_dtype: torch.dtype | None = None,
) -> Predictions:
    """Predict the rows of a manifest ``df`` from an image cache
    (:class:`skinhelpers.data.cache.ImageCache` built with the checkpoint's size and
    preprocessing), in ``df``'s order, with their labels. On a GPU the batches come from
    pinned memory; ``amp_dtype`` runs the network under autocast (see
    :func:`skinhelpers.device.inference_dtype`)."""

    dev = model_device(model)
    loader = DataLoader(
        CachedImageDataset(cache, df),
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(workers, dev),
        pin_memory=dev.type == "cuda",
    )
    return predict_loader(model, loader, mean, std, views, desc, amp_dtype=amp_dtype)


__all__ = ["prepare_model", "predict_frame"]
