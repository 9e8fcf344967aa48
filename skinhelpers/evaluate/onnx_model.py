"""Predict with an exported ``model.onnx`` (and the ``config.json`` beside it) in onnxruntime.

Images are prepared exactly as for a torch checkpoint: the caller reads, preprocesses and
resizes them (:func:`skinhelpers.data.imaging.load_for_model` with the config's
``image_size``, ``preprocess`` and ``resize_mode``) into uint8 ``(B, 3, H, W)`` batches;
:class:`OnnxModel` is a ``torch.nn.Module`` whose forward runs onnxruntime, so the one
prediction loop (:func:`skinhelpers.model.inference.predict_loader`) normalises, applies
the test-time views and averages exactly as for a torch checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from skinhelpers.model.checkpoints import CheckpointError

log = logging.getLogger(__name__)

#: the keys of config.json that prediction needs (written by skinhelpers.share.export)
CONFIG_KEYS = ("classes", "image_size", "preprocess", "resize_mode", "mean", "std")


def is_onnx(path) -> bool:
    """True for a path (str or PathLike) that names an ``.onnx`` file."""
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".onnx")


def read_onnx_config(onnx_path: str | os.PathLike) -> dict:
    """The ``config.json`` next to ``onnx_path``; a clear error when it is missing or short."""
    cfg_path = Path(onnx_path).with_name("config.json")
    if not cfg_path.exists():
        raise CheckpointError(
            f"{cfg_path} not found: an exported {Path(onnx_path).name} needs "
            "the config.json that `python -m skinhelpers export` writes "
            "beside it (classes, image size, preprocessing, mean/std)"
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise CheckpointError(f"{cfg_path} lacks the key(s) {missing}")
    return cfg


class OnnxModel(torch.nn.Module):
    """An onnxruntime session plus the export's config (``info``, like a checkpoint's)."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None):
        import onnxruntime as ort

        super().__init__()
        path = Path(path)
        if not path.exists():
            raise CheckpointError(
                f"ONNX model {path} does not exist (write one with "
                "`python -m skinhelpers export --format onnx`)"
            )
        self.info = read_onnx_config(path)
        self.info.setdefault("arch", "onnx")
        self.info.setdefault("dataset", "?")
        self.info.setdefault("epoch", -1)
        try:
            self.session = ort.InferenceSession(
                str(path), providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as e:  # not an ONNX file, truncated, unsupported opset
            raise CheckpointError(
                f"{path} cannot be loaded by onnxruntime "
                f"({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from e
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if "ood_score" not in self.output_names:
            self.info["ood_guard"] = None  # a graph without the score: no guard to apply

    def run(self, x: torch.Tensor) -> list[np.ndarray]:
        """Every output of the graph for a normalised float32 batch ``(B, 3, H, W)``."""
        feed = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run(None, {self.input_name: feed})

    def logits(self, x: torch.Tensor) -> np.ndarray:
        """Logits of a normalised float32 batch ``(B, 3, H, W)``."""
        return self.run(x)[0]

    def forward(self, x: torch.Tensor):
        """Logits (float32, CPU) of a normalised batch, or ``(logits, ood_score)`` for a
        graph with the guard's output: the prediction loop of
        :mod:`skinhelpers.model.inference` runs this model like a torch one."""
        out = self.run(x)
        if "ood_score" in self.output_names:
            named = dict(zip(self.output_names, out))
            return torch.from_numpy(named["logits"]), torch.from_numpy(named["ood_score"])
        return torch.from_numpy(out[0])


def load_onnx_model(path: str | os.PathLike) -> tuple[OnnxModel, dict]:
    """``(model, info)`` of an exported ONNX file, like ``model_from_checkpoint``."""
    model = OnnxModel(path)
    return model, model.info


__all__ = ["CONFIG_KEYS", "is_onnx", "read_onnx_config", "OnnxModel", "load_onnx_model"]
