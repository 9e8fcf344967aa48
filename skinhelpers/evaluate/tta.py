"""Test-time augmentation: predict over the 8 flips/rotations of the square (the dihedral
group D4) and average the class probabilities.

Dermoscopy has no canonical orientation, so every view is as plausible as the original.
``views`` is a count (1, 2, 4 or 8: the first ``n`` of :data:`VIEWS`) or a list of names.
Inputs are ``uint8`` image batches ``(B, 3, H, W)`` as the cache and
:func:`skinhelpers.data.imaging.load_for_model` produce them; they are converted to float and
normalised with the checkpoint's ``mean``/``std`` here, on the model's device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

#: the dihedral views, in the order used for ``views=n`` (2: +hflip, 4: +vflip, rot180)
VIEWS = ("identity", "hflip", "vflip", "rot180", "rot90", "rot270", "transpose",
         "antitranspose")

_OPS = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot180": lambda x: x.flip(-1).flip(-2),
    "rot90": lambda x: x.rot90(1, (-2, -1)),
    "rot270": lambda x: x.rot90(-1, (-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
    "antitranspose": lambda x: x.flip(-1).flip(-2).transpose(-2, -1),
}


def resolve_views(views: int | str | Sequence[str] | None) -> list[str]:
    """``8`` -> all eight views, ``1``/``None`` -> identity only, or a list of names."""
    if views is None:
        return ["identity"]
    if isinstance(views, str):
        views = [v.strip() for v in views.split(",") if v.strip()] if not views.isdigit() \
            else int(views)
    if isinstance(views, (int, np.integer)):
        if views not in (1, 2, 4, 8):
            raise ValueError(f"tta views must be 1, 2, 4 or 8 (or a list of names from "
                             f"{list(VIEWS)}), got {views}")
        return list(VIEWS[:views])
    views = list(views)
    bad = [v for v in views if v not in _OPS]
    if bad or not views:
        raise ValueError(f"unknown tta view(s) {bad or views}; choose from {list(VIEWS)}")
    return views


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """One view of a batch ``(..., H, W)``; rotations need square images."""
    if view not in _OPS:
        raise ValueError(f"unknown tta view '{view}'; choose from {list(VIEWS)}")
    return _OPS[view](x)


def to_model_input(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``uint8`` (or 0-255 float) batch -> normalised float32 on ``device``, exactly as in
    training (:func:`skinhelpers.train.augment.normalize`)."""
    from skinhelpers.train.augment import normalize

    x = x.to(device) if device is not None else x
    if x.dtype != torch.uint8:
        x = x.round().clamp(0, 255).to(torch.uint8)
    return normalize(x, mean, std)


@dataclass
class Predictions:
    """``probs`` are the view-averaged probabilities; ``logits`` the raw logits for a
    single view, else ``log(probs)`` (softmax of it gives ``probs`` back, so temperature
    scaling works on either). ``labels`` when the loader yields them."""

    probs: np.ndarray
    logits: np.ndarray
    labels: np.ndarray | None
    views: list[str]


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def prepare_model(model: torch.nn.Module, channels_last: bool = True,
                  compile: bool = False) -> torch.nn.Module:
    """``model`` ready for prediction: eval mode, channels_last memory format (inputs follow
    it in :func:`predict_batch`), optionally ``torch.compile``-d (skipped with a note where it
    cannot run). Measured on 2 CPU cores with EfficientNet-Lite0 at 128 px
    (``benchmarks/bench_infer.py``, RESULTS.md section 3): channels_last is 1.5x faster
    eager; compiling is ~2x faster again once warm but costs 10-25 s first, so it pays from
    a few thousand images on (notebook 08 with TTA), not for a handful (``predict``).
    """
    from skinhelpers.device import compile_blocker

    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        blocker = compile_blocker(_device_of(model))
        if blocker:
            print(f"note: compile ignored: {blocker}", flush=True)
        else:
            model = torch.compile(model)
    return model


def _is_channels_last(model: torch.nn.Module) -> bool:
    return any(p.ndim == 4 and not p.is_contiguous()
               and p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())


@torch.inference_mode()
def predict_batch(model: torch.nn.Module, x: torch.Tensor, mean: Sequence[float],
                  std: Sequence[float], views: int | Sequence[str] = 1) -> tuple:
    """``(probs, logits)`` tensors (CPU, float64) of one uint8 batch, averaged over views."""
    names = resolve_views(views)
    x = to_model_input(x, mean, std, _device_of(model))
    fmt = torch.channels_last if _is_channels_last(model) else torch.contiguous_format
    model.eval()
    probs, logits = None, None
    for v in names:  # every view in the model's memory format: one compiled graph for all
        out = model(apply_view(x, v).contiguous(memory_format=fmt)).double()
        p = out.softmax(1)
        probs = p if probs is None else probs + p
        if logits is None:
            logits = out
    probs = probs / len(names)
    if len(names) > 1:
        logits = probs.clamp_min(1e-12).log()
    return probs.cpu(), logits.cpu()


def predict_loader(model: torch.nn.Module, loader: Iterable, mean: Sequence[float],
                   std: Sequence[float], views: int | Sequence[str] = 1,
                   desc: str | None = "predict") -> Predictions:
    """Predict every batch of ``loader`` (yielding ``images`` or ``(images, labels)``)."""
    from skinhelpers.progress import progress

    names = resolve_views(views)
    ps, ls, ys = [], [], []
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in progress(loader, total=total, desc=f"{desc} ({len(names)} view"
                          f"{'s' if len(names) > 1 else ''})", unit="batch",
                          disable=desc is None):
        if isinstance(batch, (list, tuple)):
            x, y = batch[0], batch[1]
            ys.append(np.asarray(y))
        else:
            x = batch
        p, lg = predict_batch(model, x, mean, std, names)
        ps.append(p.numpy())
        ls.append(lg.numpy())
    c = ps[0].shape[1] if ps else 0
    return Predictions(probs=np.concatenate(ps) if ps else np.zeros((0, c)),
                       logits=np.concatenate(ls) if ls else np.zeros((0, c)),
                       labels=np.concatenate(ys).astype(np.int64) if ys else None,
                       views=names)


def predict_frame(model: torch.nn.Module, cache, df, mean: Sequence[float],
                  std: Sequence[float], views: int | Sequence[str] = 1, batch_size: int = 64,
                  workers: int = 0, desc: str | None = "predict") -> Predictions:
    """Predict the rows of a manifest ``df`` from an image cache
    (:class:`skinhelpers.data.cache.ImageCache` built with the checkpoint's size and
    preprocessing), in ``df``'s order, with their labels."""
    from torch.utils.data import DataLoader

    from skinhelpers.data.cache import CachedImageDataset
    from skinhelpers.device import loader_workers

    loader = DataLoader(CachedImageDataset(cache, df), batch_size=batch_size, shuffle=False,
                        num_workers=loader_workers(workers, _device_of(model)))
    return predict_loader(model, loader, mean, std, views, desc)


__all__ = ["VIEWS", "resolve_views", "apply_view", "to_model_input", "Predictions",
           "prepare_model",
           "predict_batch", "predict_loader", "predict_frame"]
