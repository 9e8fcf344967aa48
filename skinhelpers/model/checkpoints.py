"""Checkpoints that carry everything inference needs, and load with ``weights_only=True``.

A checkpoint is one plain dict (format ``skinlesion-lab/1``)::

    format, arch, model_kwargs, state_dict, classes, image_size, preprocess,
    resize_mode, mean, std, dataset, epoch, metrics   (+ any keys of ``extra``)

Checkpoints written by the trainer also carry ``config`` (the TrainConfig), ``positive_class``
and ``train_prior``: ``{"tau", "sampling", "data"}``, the logit adjustment's ``tau``, the
class prior the training batches had (``sampling``, the prior the adjustment used) and the
training split's own class mix (``data``). Training added ``tau * log(sampling)`` to the
logits, so the softmax of the raw logits estimates probabilities under equal class priors;
:func:`train_prior` reads the record and :mod:`skinhelpers.evaluate.priors` turns the raw
scores into probabilities under the data's (or any other) class mix.

``arch`` is a :mod:`skinhelpers.model.factory` factory name and ``model_kwargs`` the keyword
arguments that rebuild the network (with ``pretrained=False``), so
:func:`model_from_checkpoint` needs nothing but the file. ``last.pt`` adds the training
state (optimizer, scheduler, scaler, EMA weights, history, RNG states) under ``extra``
keys. Only tensors, numbers, strings, bools, None, lists, tuples and dicts are allowed,
so ``torch.load(path, weights_only=True)`` always works: no pickled classes, no numpy.
Files are written atomically (a reader never sees half a checkpoint).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from skinhelpers.data.imaging import canonical_size
from skinhelpers.files import atomic_path
from skinhelpers.model.factory import build_model

log = logging.getLogger(__name__)

FORMAT = "skinlesion-lab/1"
REQUIRED_KEYS = (
    "format",
    "arch",
    "model_kwargs",
    "state_dict",
    "classes",
    "image_size",
    "preprocess",
    "resize_mode",
    "mean",
    "std",
    "dataset",
    "epoch",
    "metrics",
)
_PRIMITIVES = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not a skinlesion-lab checkpoint."""


def _check_safe(obj: Any, where: str) -> None:
    """Raise TypeError naming the key if ``obj`` would not load with weights_only=True."""
    if isinstance(obj, (torch.Tensor, *_PRIMITIVES, torch.Size, torch.dtype, torch.device)):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)):
                raise TypeError(
                    f"checkpoint key {where}[{k!r}]: key type {type(k).__name__} is not allowed"
                )
            _check_safe(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_safe(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(obj).__module__}.{type(obj).__name__}; "
        "only tensors, numbers, strings, lists and dicts load with weights_only=True "
        "(convert numpy arrays with torch.as_tensor / .tolist())"
    )


def _floats3(name: str, values) -> list[float]:
    vals = [float(v) for v in values]
    if len(vals) != 3:
        raise ValueError(f"checkpoint '{name}' must have 3 values (RGB), got {vals}")
    return vals


def _plain_state_dict(model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The state dict of the bare model (unwraps DDP, torch.compile and EMA wrappers)."""
    for attr in ("module", "_orig_mod"):
        while hasattr(model, attr) and isinstance(getattr(model, attr), torch.nn.Module):
            model = getattr(model, attr)
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module | dict,
    *,
    arch: str,
    model_kwargs: dict,
    classes,
    image_size: int | list[int],
    preprocess: str,
    resize_mode: str,
    mean,
    std,
    dataset: str,
    epoch: int,
    metrics: dict | None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    ``model`` may be a module (DDP / compiled / EMA wrappers are unwrapped) or a state
    dict. ``extra`` keys are added at the top level (e.g. ``optimizer``, ``scheduler``,
    ``scaler``, ``ema_state_dict``, ``history``, ``rng``); they may not shadow the
    required keys.
    """
    state_dict = (
        OrderedDict((k, v.detach().cpu()) for k, v in model.items())
        if isinstance(model, dict)
        else _plain_state_dict(model)
    )
    kwargs = dict(model_kwargs)
    kwargs["pretrained"] = False  # rebuilding never downloads: the weights are in the file
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "arch": str(arch),
        "model_kwargs": kwargs,
        "state_dict": state_dict,
        "classes": [str(c) for c in classes],
        "image_size": canonical_size(image_size),
        "preprocess": str(preprocess or "none"),
        "resize_mode": str(resize_mode),
        "mean": _floats3("mean", mean),
        "std": _floats3("std", std),
        "dataset": str(dataset),
        "epoch": int(epoch),
        "metrics": {
            str(k): float(v)
            for k, v in (metrics or {}).items()
            if v is not None and not isinstance(v, str)
        },
    }
    for k, v in (extra or {}).items():
        if k in ckpt:
            raise ValueError(f"extra key '{k}' would overwrite a required checkpoint key")
        ckpt[k] = v
    for k, v in ckpt.items():
        _check_safe(v, k)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a clear error names a bad file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist (train one with notebook 07, "
            "or pass the path of an existing .pt file)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, unsafe pickle, ...
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a skinlesion-lab checkpoint (format {got!r}, expected {FORMAT!r})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the key(s) {missing}")
    return ckpt


def train_prior(ckpt: dict) -> dict | None:
    """The checkpoint's logit-adjustment record ``{"tau", "sampling", "data"}`` (floats; the
    priors as lists of one probability per class, each summing to one), or None for a
    checkpoint written before checkpoints carried it (or by hand). A record whose priors
    do not fit the classes is a CheckpointError."""
    rec = ckpt.get("train_prior")
    if not isinstance(rec, dict):
        return None
    n = len(ckpt.get("classes") or [])
    out: dict[str, Any] = {"tau": float(rec.get("tau", 0.0))}
    for key in ("sampling", "data"):
        vals = [float(v) for v in rec.get(key) or []]
        if len(vals) != n or min(vals, default=-1.0) < 0 or not sum(vals) > 0:
            raise CheckpointError(
                f"checkpoint train_prior['{key}'] {vals} does not fit its {n} classes"
            )
        out[key] = [v / sum(vals) for v in vals]
    return out


def model_from_checkpoint(
    path_or_dict: str | os.PathLike | dict, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network of a checkpoint, load its weights strictly, return ``(model, info)``.

    ``model`` is in eval mode on ``device``; ``info`` is the checkpoint dict without the
    heavy entries (state dicts, optimizer, ...): arch, classes, image size, preprocessing,
    mean/std, metrics.
    """
    ckpt = (
        path_or_dict
        if isinstance(path_or_dict, dict)
        else load_checkpoint(path_or_dict, map_location="cpu")
    )
    where = "<dict>" if isinstance(path_or_dict, dict) else str(path_or_dict)
    kwargs = {**ckpt["model_kwargs"], "pretrained": False}
    kwargs.setdefault("num_classes", len(ckpt["classes"]))
    model = build_model(ckpt["arch"], **kwargs)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {where}: weights do not fit {ckpt['arch']} "
            f"{kwargs}: {str(e).splitlines()[0]}"
        ) from e
    model.to(device).eval()
    heavy = {"state_dict", "optimizer", "scheduler", "scaler", "ema_state_dict", "rng"}
    info = {k: v for k, v in ckpt.items() if k not in heavy}
    return model, info
