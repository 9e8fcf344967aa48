"""The one way from ``uint8`` images to model outputs: the input function and the
prediction loop that training, validation, evaluation, test-time augmentation,
``predict`` and Grad-CAM all use.

* :func:`to_model_input` turns a ``uint8`` NCHW batch (as the image cache,
  :func:`skinhelpers.data.imaging.load_for_model` and the training transforms produce it)
  into the float32 input of the network: on the device, normalised with the checkpoint's
  ``mean``/``std`` (given on the 0-1 scale), in the requested memory format.
* :func:`predict_batch` / :func:`predict_loader` run the network over one batch / every
  batch of a loader under :func:`torch.inference_mode`, optionally averaging the class
  probabilities over the dihedral views of the square (:data:`VIEWS`): dermoscopy has no
  canonical orientation, so every view is as plausible as the original.

Because every caller goes through these functions, a checkpoint gives the same
probabilities in the trainer's validation pass, notebook 08 and ``predict``
(``tests/test_inference.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from skinhelpers.progress import progress

log = logging.getLogger(__name__)

#: the dihedral views, in the order used for ``views=n`` (2: +hflip, 4: +vflip, rot180)
VIEWS = ("identity", "hflip", "vflip", "rot180", "rot90", "rot270", "transpose", "antitranspose")

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
        views = (
            [v.strip() for v in views.split(",") if v.strip()]
            if not views.isdigit()
            else int(views)
        )
    if isinstance(views, (int, np.integer)):
        if views not in (1, 2, 4, 8):
            raise ValueError(
                f"tta views must be 1, 2, 4 or 8 (or a list of names from "
                f"{list(VIEWS)}), got {views}"
            )
        return list(VIEWS[:views])
    views = list(views)
    bad = [v for v in views if v not in _OPS]
    if bad or not views:
        raise ValueError(f"unknown tta view(s) {bad or views}; choose from {list(VIEWS)}")
    return views


#: the views that keep a non-square image's shape (the other four turn it by 90 degrees)
SHAPE_KEEPING_VIEWS = ("identity", "hflip", "vflip", "rot180")


def views_for_shape(views: Sequence[str], height: int, width: int) -> list[str]:
    """``views`` that suit images of ``height`` x ``width``: all of them for squares; for
    other shapes only those that keep the shape (a model trained on 4:3 images never saw
    them turned by 90 degrees). An error if none is left."""
    if height == width:
        return list(views)
    kept = [v for v in views if v in SHAPE_KEEPING_VIEWS]
    if not kept:
        raise ValueError(
            f"tta views {list(views)} all turn the image by 90 degrees, which {height}x{width} "
            f"(height x width) images cannot take; choose from {list(SHAPE_KEEPING_VIEWS)}"
        )
    return kept


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """One view of a batch ``(..., H, W)``; rotations by 90 degrees need square images."""
    if view not in _OPS:
        raise ValueError(f"unknown tta view '{view}'; choose from {list(VIEWS)}")
    if x.shape[-1] != x.shape[-2] and view not in SHAPE_KEEPING_VIEWS:
        raise ValueError(
            f"tta view '{view}' turns the image by 90 degrees; {tuple(x.shape[-2:])} images "
            f"are not square (see views_for_shape)"
        )
    return _OPS[view](x)


# --------------------------------------------------------------------------- input


def to_model_input(
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """``uint8`` batch ``(N, 3, H, W)`` -> normalised float32 on ``device`` (default: where
    ``x`` is) in ``memory_format``: ``(x - 255 * mean) / (255 * std)`` per channel.

    ``mean``/``std`` are on the 0-1 scale, as the model and its checkpoint carry them. A
    float batch on the 0-255 scale is rounded to ``uint8`` first (what saving it as an
    image would do), so every caller feeds the network exactly what training fed it.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"to_model_input expects a tensor batch (N, 3, H, W), got {type(x)}")
    if x.ndim != 4 or x.shape[1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"to_model_input: batch of shape {tuple(x.shape)} does not match "
            f"mean {list(mean)} / std {list(std)} (expected N x {len(mean)} x H x W)"
        )
    if any(float(s) <= 0 for s in std):
        raise ValueError(f"to_model_input: std must be positive, got {list(std)}")
    if x.dtype != torch.uint8:
        x = x.round().clamp(0, 255).to(torch.uint8)
    dev = x.device if device is None else torch.device(device)
    x = x.to(dev, non_blocking=True).float()
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1) * 255
    return ((x - m) / s).contiguous(memory_format=memory_format)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def model_memory_format(model: torch.nn.Module) -> torch.memory_format:
    """``channels_last`` if ``model``'s convolution weights are stored that way."""
    cl = any(
        p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
        for p in model.parameters()
    )
    return torch.channels_last if cl else torch.contiguous_format


# --------------------------------------------------------------------------- prediction


@dataclass
class Predictions:
    """``probs`` are the view-averaged probabilities (float64); ``logits`` the raw logits
    for a single view, else ``log(probs)`` (softmax of it gives ``probs`` back, so
    temperature scaling works on either). ``labels`` when the loader yields them;
    ``ood_scores`` (one per image, of the first view, the image as it is) when the model
    returns ``(logits, ood_score)``, a :class:`skinhelpers.evaluate.ood.GuardedModel`."""

    probs: np.ndarray
    logits: np.ndarray
    labels: np.ndarray | None
    views: list[str]
    ood_scores: np.ndarray | None = None


@torch.inference_mode()
def predict_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    views: int | Sequence[str] = 1,
    memory_format: torch.memory_format | None = None,
    amp_dtype: torch.dtype | None = None,
    with_ood: bool = False,
) -> tuple:
    """``(probs, logits)`` tensors (CPU, float64) of one uint8 batch, averaged over views.
    With ``with_ood``: ``(probs, logits, ood)``, ``ood`` the first view's
    out-of-distribution score when ``model`` returns ``(logits, score)`` (a guarded model,
    :class:`skinhelpers.evaluate.ood.GuardedModel`), else None.

    Inputs go to ``model``'s device in ``memory_format`` (default: the model's own, see
    :func:`model_memory_format`); every view in the same format, so a compiled model
    traces one graph for all. ``amp_dtype`` runs the network under autocast (CUDA mixed
    precision, as the trainer does); the logits are then upcast. Images that are not
    square get only the views that keep their shape (:func:`views_for_shape`).
    """
    names = views_for_shape(resolve_views(views), *x.shape[-2:])
    dev = model_device(model)
    fmt = model_memory_format(model) if memory_format is None else memory_format
    x = to_model_input(x, mean, std, dev, fmt)
    amp = (
        torch.autocast(dev.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    model.eval()
    probs, logits, ood = None, None, None
    for v in names:
        with amp:
            out = model(apply_view(x, v).contiguous(memory_format=fmt))
        if isinstance(out, (tuple, list)):
            out, score = out
            if ood is None:  # the first view: the image as it is
                ood = score.double().cpu()
        out = out.double()
        p = out.softmax(1)
        probs = p if probs is None else probs + p
        if logits is None:
            logits = out
    probs = probs / len(names)
    if len(names) > 1:
        logits = probs.clamp_min(1e-12).log()
    if with_ood:
        return probs.cpu(), logits.cpu(), ood
    return probs.cpu(), logits.cpu()


def predict_loader(
    model: torch.nn.Module,
    loader: Iterable,
    mean: Sequence[float],
    std: Sequence[float],
    views: int | Sequence[str] = 1,
    desc: str | None = "predict",
    memory_format: torch.memory_format | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Predictions:
    """Predict every batch of ``loader`` (yielding ``images`` or ``(images, labels, ...)``)
    with :func:`predict_batch`; ``desc=None`` hides the progress bar. ``views`` of the
    result are those used (for images that are not square, the shape-keeping ones)."""
    names = resolve_views(views)
    used = names
    ps, ls, ys, oods = [], [], [], []
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in progress(
        loader,
        total=total,
        desc=f"{desc} ({len(names)} view{'s' if len(names) > 1 else ''})",
        unit="batch",
        disable=desc is None,
    ):
        if isinstance(batch, (list, tuple)):
            x, y = batch[0], batch[1]
            ys.append(np.asarray(y))
        else:
            x = batch
        used = views_for_shape(names, *x.shape[-2:])
        p, lg, ood = predict_batch(
            model, x, mean, std, names, memory_format, amp_dtype, with_ood=True
        )
        ps.append(p.numpy())
        ls.append(lg.numpy())
        if ood is not None:
            oods.append(ood.numpy())
    c = ps[0].shape[1] if ps else 0
    return Predictions(
        probs=np.concatenate(ps) if ps else np.zeros((0, c)),
        logits=np.concatenate(ls) if ls else np.zeros((0, c)),
        labels=np.concatenate(ys).astype(np.int64) if ys else None,
        views=used,
        ood_scores=np.concatenate(oods) if oods else None,
    )


__all__ = [
    "VIEWS",
    "resolve_views",
    "apply_view",
    "views_for_shape",
    "SHAPE_KEEPING_VIEWS",
    "to_model_input",
    "model_device",
    "model_memory_format",
    "Predictions",
    "predict_batch",
    "predict_loader",
]
