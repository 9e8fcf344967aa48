"""Export a checkpoint for use without this suite: ONNX or safetensors, plus config.json.

    python -m skinhelpers export --checkpoint runs/x/checkpoints/best_ema.pt \\
        --format onnx --out exported/

writes ``model.onnx`` (or ``model.safetensors``) and ``config.json`` into ``--out``.
The ONNX graph takes a float32 batch ``input`` of shape ``(batch, 3, S, S)`` (dynamic batch,
RGB, normalised as ``(x / 255 - mean) / std``) and returns ``logits`` ``(batch, classes)``:
their argmax is the balanced decision the model was selected for, and their softmax the
probabilities under *equal* class priors (training used a logit-adjusted loss).
``config.json`` carries ``train_prior`` (the logit adjustment's ``tau``, the training
batches' class prior and the training data's class mix) and says how to get the
probabilities under the data's class mix (what ``predict`` and the demo give by default)
or any other (``probabilities``). It says everything else a user needs too:
architecture, classes, image size, the preprocessing and resize mode to apply to the RGB
image first, mean and std, the data licence, and, when the run folder holds notebook 08's
``metrics.json`` for this checkpoint, the melanoma thresholds chosen on validation with
their validation and test sensitivity and specificity (and the malignant-vs-benign ones
when notebook 08 chose them); a threshold applies to the balanced score (the softmax of
the logits), not to the probabilities under the data's mix.

Several checkpoints (``--checkpoint A.pt B.pt ...``, e.g. the gpu profile's fold models)
export as one ensemble ``model.onnx`` whose ``logits`` are the log of the members' mean
probability (softmax gives that mean back); ``config.json`` lists the members.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from skinhelpers.data.imaging import canonical_size, image_shape
from skinhelpers.evaluate import ood, priors
from skinhelpers.files import atomic_path, read_json, write_json
from skinhelpers.model.checkpoints import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    train_prior,
)
from skinhelpers.model.ensemble import load_ensemble
from skinhelpers.share.licences import CODE_LICENCE, data_licence

CONFIG_FORMAT = "skinlesion-lab-export/1"
#: what a threshold of notebook 08 applies to
SCORE_TEXT = (
    "the balanced score: softmax(logits)[class] (every class weighed equally, the score "
    "the thresholds were chosen on), not the probability under the data's class mix"
)

log = logging.getLogger(__name__)
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
    out = {
        "class": classes[idx],
        "class_index": idx,
        "name": pos.get("class", classes[idx]),
        "score": SCORE_TEXT,
        "tta_views": list(m.get("tta_views") or ["identity"]),
        "test_auc": pos.get("auc"),
        "n_val_pos": pos.get("n_val_pos"),
        "n_test_pos": pos.get("n_test_pos"),
        "n_test_neg": pos.get("n_test_neg"),
        "operating_points": [_op_record(op) for op in pos["operating_points"]],
        "source": str(path),
    }
    mal = m.get("malignant")
    if isinstance(mal, dict) and mal.get("operating_points"):
        out["malignant"] = {
            "classes": list(mal["classes"]),
            "class_indices": [classes.index(c) for c in mal["classes"]],
            "name": mal.get("class", "malignant"),
            "score": "the sum of the balanced scores of these classes",
            "test_auc": mal.get("auc"),
            "n_test_pos": mal.get("n_test_pos"),
            "n_test_neg": mal.get("n_test_neg"),
            "operating_points": [_op_record(op) for op in mal["operating_points"]],
        }
    return out


def _op_record(op: dict) -> dict:
    keep = ("sensitivity", "specificity", "ppv", "npv")
    return {
        "target": op["target"],
        "target_value": op["target_value"],
        "threshold": op["threshold"],
        "validation": {k: op["validation"][k] for k in keep if k in op["validation"]},
        "test": {k: op["test"][k] for k in keep if k in op.get("test", {})},
        "test_ci": op.get("test_ci", {}),
    }


def operating_point_choices(thresholds: dict | None) -> list[dict]:
    """Every operating point of :func:`run_thresholds` as ``{"label", "name",
    "class_indices", "op"}``: the positive class's (melanoma at 95% and 90% specificity,
    95% and 90% sensitivity: the one to screen with) and then the malignant-vs-benign ones,
    for a page or a script to choose from. The score a threshold applies to is the sum of
    the balanced scores of ``class_indices``."""
    if not thresholds:
        return []
    groups = [(thresholds["name"], [thresholds["class_index"]], thresholds["operating_points"])]
    mal = thresholds.get("malignant")
    if mal:
        groups.append((mal["name"], mal["class_indices"], mal["operating_points"]))
    return [
        {
            "label": f"{name}: {op['target']} ≥ {op['target_value']:.0%} "
            f"(threshold {op['threshold']:.3f})",
            "name": name,
            "class_indices": list(idx),
            "op": op,
        }
        for name, idx, ops in groups
        for op in ops
    ]


def probability_recipe(ckpt: dict) -> dict:
    """How a user of the export turns logits into probabilities under a class mix, with
    the numbers for the training data's mix (the default of ``predict`` and the demo)."""
    shift = priors.shift_for(ckpt, priors.DEFAULT_PRIOR)
    classes = list(ckpt["classes"])
    out = {
        "default_prior": "data" if shift.known else "equal",
        "description": shift.describe(),
        "formula": "p(c) proportional to softmax(logits)[c] * sampling[c] ** (tau - 1) * "
        "q[c], q the class mix wanted (train_prior: tau, sampling; q = train_prior.data "
        "for the training data's mix, or a prevalence such as a clinic's melanoma rate with "
        "the other classes in the data's proportions); with tau = 1 simply "
        "softmax(logits + log(q))",
        "data_prior_logit_offsets": {c: float(o) for c, o in zip(classes, shift.offsets)},
        "offsets_use": "softmax(logits + data_prior_logit_offsets) = the probabilities under "
        "the training data's class mix (one model, one view); the predicted class stays "
        "argmax(logits)",
    }
    if not shift.known:
        out["note"] = priors.NO_PRIOR_NOTE
    return out


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
        "output": {
            "name": "logits",
            "decision": "argmax over the last axis: the balanced decision (every class "
            "weighed equally), the rule the model was selected for",
            "probabilities": "softmax over the last axis gives probabilities under equal "
            "class priors; see 'probabilities' for the training data's class mix",
        },
        "train_prior": train_prior(ckpt),
        "probabilities": probability_recipe(ckpt),
        "dataset": ckpt["dataset"],
        "epoch": int(ckpt["epoch"]),
        "validation_metrics": dict(ckpt.get("metrics") or {}),
        "data_licence": data_licence(ckpt["dataset"]),
        "code_licence": CODE_LICENCE,
        "intended_use": "research and teaching; NOT a diagnostic device",
        "exported": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }
    guard = ood.guard_of(ckpt)
    cfg["ood_guard"] = None
    if guard is not None:
        cfg["ood_guard"] = {
            "method": guard.method,
            "threshold": guard.threshold,
            "pass_rate": guard.pass_rate,
            "temperature": guard.temperature,
            "measured": guard.measured,
            "use": "in_distribution = ood_score <= threshold; an image above it does not look "
            "like the training images: do not read its class",
            "where": "model.onnx: the output 'ood_score'; safetensors: the tensors "
            "'ood_guard.means' and 'ood_guard.precision' (mahalanobis: the smallest "
            "(f - means[c]) precision (f - means[c]) over classes c, f the features the "
            "head sees); mahalanobis_layers: the same distance d_i at every stage i of the "
            "backbone (timm forward_intermediates, each stage averaged over the image; the "
            "last layer the features the head sees) with 'ood_guard.layer{i}.means' and "
            "'ood_guard.layer{i}.precision', summed as (d_i - 'ood_guard.layer_centre'[i]) / "
            "'ood_guard.layer_scale'[i]; energy: -temperature * logsumexp(logits / temperature)",
        }
        cfg["output"]["ood_score"] = (
            "model.onnx's second output: the out-of-distribution score (higher: further "
            "from the training images); see ood_guard"
        )
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
    """``model`` as one self-contained ONNX file with a dynamic batch axis; a guarded model
    (:class:`skinhelpers.evaluate.ood.GuardedModel`) has a second output, ``ood_score``.

    Uses the torch.export-based exporter (the default since torch 2.9; needs onnxscript).
    """
    outputs = ["logits", "ood_score"] if isinstance(model, ood.GuardedModel) else ["logits"]
    model = model.float().eval().to("cpu")
    x = torch.zeros(2, 3, *image_shape(image_size))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(out) as tmp:
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["input"],
            output_names=outputs,
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
            "ood_guard": None,  # a guard belongs to one network's features
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
        model, info = model_from_checkpoint(ckpt, "cpu")
        path = export_onnx(ood.guarded(model, info), ckpt["image_size"], out_dir / "model.onnx")
    else:
        state = dict(ckpt["state_dict"])
        guard = ckpt.get("ood_guard") or {}
        for key in ("means", "precision", "layer_centre", "layer_scale"):
            if key in guard:
                state[f"ood_guard.{key}"] = guard[key]
        for key in ("means", "precision"):
            for i, t in enumerate(guard.get(f"layer_{key}") or []):
                state[f"ood_guard.layer{i}.{key}"] = t
        path = export_safetensors(
            state,
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
    "operating_point_choices",
    "probability_recipe",
    "export_config",
    "export_onnx",
    "export_safetensors",
    "export_ensemble",
    "export_model",
    "main",
]
