"""Export a checkpoint for use without this suite: ONNX or safetensors, plus config.json.

    python -m skinhelpers export --checkpoint runs/x/checkpoints/best_ema.pt \\
        --format onnx --out exported/

writes ``model.onnx`` (or ``model.safetensors``) and ``config.json`` into ``--out``.
The ONNX graph takes a float32 batch ``input`` of shape ``(batch, 3, S, S)`` (dynamic batch,
RGB, normalised as ``(x / 255 - mean) / std``) and returns ``logits`` ``(batch, classes)``;
softmax gives the probabilities. ``config.json`` says everything else a user needs:
architecture, classes, image size, the preprocessing and resize mode to apply to the RGB
image first, mean and std, the data licence, and, when the run folder holds notebook 08's
``metrics.json`` for this checkpoint, the melanoma thresholds chosen on validation with
their validation and test sensitivity and specificity.

Several checkpoints (``--checkpoint A.pt B.pt ...``, e.g. the gpu profile's fold models)
export as one ensemble ``model.onnx`` whose ``logits`` are the log of the members' mean
probability (softmax gives that mean back); ``config.json`` lists the members.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from skinhelpers.data.imaging import canonical_size, image_shape
from skinhelpers.files import atomic_path, read_json, write_json
from skinhelpers.model.checkpoints import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
)
from skinhelpers.model.ensemble import load_ensemble
from skinhelpers.share.licences import CODE_LICENCE, data_licence

CONFIG_FORMAT = "skinlesion-lab-export/1"
FORMATS = ("onnx", "safetensors")
OPSET = 18


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_thresholds(checkpoint: str | os.PathLike, classes: list[str]) -> dict | None:
    """The positive-class operating points notebook 08 chose for ``checkpoint``, or None.

    Looks for ``metrics.json`` in the run folder (``<run>/checkpoints/x.pt`` -> ``<run>``).
    The thresholds belong to the run's *primary* checkpoint (they were chosen on its
    validation probabilities, averaged over ``tta_views``); another checkpoint gets none.
    """
    ckpt = Path(checkpoint).resolve()
    path = ckpt.parent.parent / "metrics.json"
    if not path.exists():
        return None
    m = read_json(path)
    pos, primary = m.get("positive_class"), m.get("primary")
    if not isinstance(pos, dict) or not pos.get("operating_points"):
        return None
    entry = (m.get("models") or {}).get(primary, {})
    same = ckpt.stem == primary or (
        entry.get("checkpoint") and Path(entry["checkpoint"]).name == ckpt.name
    )
    if not same or list(m.get("classes") or classes) != list(classes):
        return None
    idx = int(pos["class_index"])
    keep = ("sensitivity", "specificity", "ppv", "npv")
    return {
        "class": classes[idx],
        "class_index": idx,
        "name": pos.get("class", classes[idx]),
        "tta_views": list(m.get("tta_views") or ["identity"]),
        "test_auc": pos.get("auc"),
        "n_val_pos": pos.get("n_val_pos"),
        "n_test_pos": pos.get("n_test_pos"),
        "n_test_neg": pos.get("n_test_neg"),
        "operating_points": [
            {
                "target": op["target"],
                "target_value": op["target_value"],
                "threshold": op["threshold"],
                "validation": {k: op["validation"][k] for k in keep if k in op["validation"]},
                "test": {k: op["test"][k] for k in keep if k in op.get("test", {})},
                "test_ci": op.get("test_ci", {}),
            }
            for op in pos["operating_points"]
        ],
        "source": str(path),
    }


def export_config(
    ckpt: dict, checkpoint_path: str | os.PathLike | None = None, weights_file: str | None = None
) -> dict:
    """The ``config.json`` of an export: what to feed the network and what comes out."""
    classes = list(ckpt["classes"])
    cfg = {
        "format": CONFIG_FORMAT,
        "weights": weights_file,
        "arch": ckpt["arch"],
        "model_kwargs": dict(ckpt["model_kwargs"]),
        "classes": classes,
        "num_classes": len(classes),
        "image_size": canonical_size(ckpt["image_size"]),
        "preprocess": ckpt["preprocess"],
        "resize_mode": ckpt["resize_mode"],
        "mean": list(ckpt["mean"]),
        "std": list(ckpt["std"]),
        "input": {
            "name": "input",
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "normalisation": "(x / 255 - mean) / std, x the uint8 image after "
            "preprocess and resize (skinhelpers.data.imaging.prepare)",
        },
        "output": {"name": "logits", "probabilities": "softmax over the last axis"},
        "dataset": ckpt["dataset"],
        "epoch": int(ckpt["epoch"]),
        "validation_metrics": dict(ckpt.get("metrics") or {}),
        "data_licence": data_licence(ckpt["dataset"]),
        "code_licence": CODE_LICENCE,
        "intended_use": "research and teaching; NOT a diagnostic device",
        "exported": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }
    if ckpt["model_kwargs"].get("sample_center"):
        cfg["input"]["normalisation"] += (
            "; the network then centres each image on its own per-channel mean "
            "(model_kwargs.sample_center: part of model.onnx, and of the network that "
            "build_model(arch, **model_kwargs) rebuilds)"
        )
    if checkpoint_path is not None:
        cfg["source_checkpoint"] = str(Path(checkpoint_path).resolve())
        cfg["thresholds"] = run_thresholds(checkpoint_path, classes)
    return cfg


def export_onnx(
    model: torch.nn.Module, image_size, out: str | os.PathLike, opset: int = OPSET
) -> Path:
    """``model`` as one self-contained ONNX file with a dynamic batch axis.

    Uses the torch.export-based exporter (the default since torch 2.9; needs onnxscript).
    """
    model = model.float().eval().to("cpu")
    x = torch.zeros(2, 3, *image_shape(image_size))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(out) as tmp:
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return Path(out)


def export_safetensors(state_dict: dict, out: str | os.PathLike, metadata: dict) -> Path:
    """The weights as safetensors (contiguous CPU tensors; string metadata only)."""
    from safetensors.torch import save_file  # local: share extra: only the export needs it

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    return Path(out)


def export_ensemble(paths, out_dir: str | os.PathLike) -> dict:
    """Several checkpoints (the gpu profile's fold models) as ONE ``model.onnx`` whose
    output is the log of their mean probability, so its softmax is the ensemble's
    probability and a reader uses it like any single exported model. ``config.json``
    lists the members; melanoma thresholds belong to a run's single model, so none."""
    out_dir = Path(out_dir)
    model, info = load_ensemble(paths, "cpu")
    path = export_onnx(model, info["image_size"], out_dir / "model.onnx")
    first = load_checkpoint(paths[0])
    cfg = export_config(first, None, path.name)
    members = []
    for p in paths:
        c = load_checkpoint(p)
        members.append(
            {
                "checkpoint": str(Path(p).resolve()),
                "arch": c["arch"],
                "model_kwargs": dict(c["model_kwargs"]),
                "epoch": int(c["epoch"]),
                "validation_metrics": dict(c.get("metrics") or {}),
            }
        )
    cfg.update(
        {
            "arch": info["arch"],
            "model_kwargs": {},
            "members": members,
            "epoch": [m["epoch"] for m in members],
            "validation_metrics": {},  # each member's are on its own fold: see members
            "thresholds": None,
        }
    )
    cfg["output"]["probabilities"] += " (the members' mean probability: the output is its log)"
    cfg["sha256"] = _sha256(path)
    return {"model": path, "config": write_json(out_dir / "config.json", cfg)}


def export_model(checkpoint, fmt: str, out_dir: str | os.PathLike) -> dict:
    """Export ``checkpoint`` to ``out_dir`` as ``fmt`` (onnx | safetensors); return
    ``{"model": path, "config": path}``. A list of several checkpoints is exported as one
    ensemble (:func:`export_ensemble`; ONNX only)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {list(FORMATS)}, got '{fmt}'")
    if isinstance(checkpoint, (list, tuple)):
        if len(checkpoint) > 1:
            if fmt != "onnx":
                raise ValueError(
                    f"an ensemble of {len(checkpoint)} checkpoints exports as onnx only (one "
                    f"graph that averages them); --format {fmt} takes one checkpoint"
                )
            return export_ensemble(list(checkpoint), out_dir)
        if not checkpoint:
            raise ValueError("no checkpoint given")
        checkpoint = checkpoint[0]
    out_dir = Path(out_dir)
    ckpt = load_checkpoint(checkpoint)
    if fmt == "onnx":
        model, _ = model_from_checkpoint(ckpt, "cpu")
        path = export_onnx(model, ckpt["image_size"], out_dir / "model.onnx")
    else:
        path = export_safetensors(
            ckpt["state_dict"],
            out_dir / "model.safetensors",
            {"format": CONFIG_FORMAT, "arch": ckpt["arch"]},
        )
    cfg = export_config(ckpt, checkpoint, path.name)
    cfg["sha256"] = _sha256(path)
    return {"model": path, "config": write_json(out_dir / "config.json", cfg)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m skinhelpers export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="a .pt file written by notebook 07; several: one ensemble (onnx only), e.g. a "
        "K-fold run's checkpoints/best_ema.pt folds/fold*/checkpoints/best_ema.pt",
    )
    ap.add_argument("--format", default="onnx", choices=FORMATS)
    ap.add_argument("--out", required=True, help="folder for model.<format> and config.json")
    a = ap.parse_args(argv)
    try:
        paths = export_model(a.checkpoint, a.format, a.out)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {paths['model']} and {paths['config']}")
    return 0


__all__ = [
    "CONFIG_FORMAT",
    "FORMATS",
    "run_thresholds",
    "export_config",
    "export_onnx",
    "export_safetensors",
    "export_ensemble",
    "export_model",
    "main",
]
