"""Classify new images with a checkpoint and nothing else.

    python -m skinhelpers predict --checkpoint runs/x/checkpoints/best.pt \\
        --images new_images/ more.jpg --out preds.csv [--tta 8] [--batch-size 32]

The checkpoint carries the network, the class names, the image size, the preprocessing
and resize mode used in training and the normalisation, so each image is prepared
exactly as the training cache prepared it (:func:`skinhelpers.data.imaging.load_for_model`).
One CSV row per readable image: ``image_id, path, p_<class>..., pred, confidence``.
Unreadable files are reported on stderr (and with ``--errors``) and skipped.

The probabilities are under the training data's class mix by default (``--prior data``:
the logit adjustment of training undone, see :mod:`skinhelpers.evaluate.priors`), or
under equal priors (``--prior equal``) or a prevalence you know (``--prior mel=0.02``);
``pred`` is always the balanced decision the model was selected for (the argmax of the
raw scores), so it need not be the class with the highest probability, and
``confidence`` is the probability of ``pred`` under the chosen mix.
When the checkpoint carries an out-of-distribution guard (notebook 08 fits one and stores
it in the reported checkpoint; the export keeps it), two more columns say whether an image
looks like the images the model was trained on: ``ood_score`` (higher: further) and
``in_distribution`` (the score within the threshold that 95% of validation images pass).
An image that is not ``in_distribution`` should not be read by its class: a photo of
something else, or a lesion unlike the training data.
Several checkpoints after ``--checkpoint`` predict as one ensemble (the mean of their
probabilities), e.g. a K-fold run's ``checkpoints/best_ema.pt folds/fold*/checkpoints/best_ema.pt``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skinhelpers.data.imaging import load_for_model
from skinhelpers.data.registry import IMAGE_EXTENSIONS
from skinhelpers.device import PRECISIONS, inference_dtype, pick_device, precision_name
from skinhelpers.evaluate import ood, priors
from skinhelpers.evaluate.onnx_model import is_onnx, load_onnx_model
from skinhelpers.evaluate.tta import prepare_model
from skinhelpers.files import write_csv
from skinhelpers.model.checkpoints import CheckpointError, load_checkpoint, model_from_checkpoint
from skinhelpers.model.ensemble import load_ensemble
from skinhelpers.model.inference import model_device, predict_loader, resolve_views

log = logging.getLogger(__name__)


def collect_images(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders searched recursively for image files (sorted)."""
    out: list[Path] = []
    for it in items:
        p = Path(it).expanduser()
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in IMAGE_EXTENSIONS
                    and not f.name.startswith(".")
                )
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"--images: {p} does not exist")
    return out


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[Path], size, preprocess: str, resize_mode: str):
        self.paths, self.size, self.preprocess, self.mode = (
            list(paths),
            size,
            preprocess,
            resize_mode,
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = load_for_model(self.paths[i], self.size, self.preprocess, self.mode)
            return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), i, ""
        except Exception as e:  # unreadable, truncated, not an image: report, skip
            return None, i, f"{type(e).__name__}: {e}"


def _collate(batch):
    ok = [(x, i) for x, i, _ in batch if x is not None]
    bad = [(i, err) for x, i, err in batch if x is None]
    x = torch.stack([b[0] for b in ok]) if ok else None
    return x, [b[1] for b in ok], bad


class _ReadableBatches:
    """The batches of ``loader`` as ``(images, file indices)``, without the unreadable files
    (collected in ``skipped`` as ``{"path", "error"}``); a batch of only such files is left
    out. Its length is the loader's (for the progress bar)."""

    def __init__(self, loader, files: Sequence[Path]):
        self.loader, self.files, self.skipped = loader, files, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, idx, bad in self.loader:
            self.skipped += [{"path": str(self.files[i]), "error": err} for i, err in bad]
            if x is not None:
                yield x, torch.as_tensor(idx, dtype=torch.int64)


def predict_images(
    checkpoint,
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    tta: int | Sequence[str] = 1,
    batch_size: int = 32,
    workers: int = 0,
    device: str = "auto",
    show_progress: bool = True,
    precision: str = "auto",
    prior=priors.DEFAULT_PRIOR,
) -> pd.DataFrame:
    """Predict images (files and/or folders) with a checkpoint (path or loaded dict), a
    list of checkpoint paths (one ensemble: the mean of their probabilities, e.g. the gpu
    profile's fold models) or an exported ``.onnx`` file (with its ``config.json`` beside
    it; run in onnxruntime).

    Returns one row per readable image: ``image_id`` (file stem), ``path``, one
    ``p_<class>`` column per class (probabilities summing to one, under the class mix
    ``prior``: ``"data"``, the training data's, by default; ``"equal"``; or e.g.
    ``"mel=0.02"`` or ``{"mel": 0.02}``, see :func:`skinhelpers.evaluate.priors.parse_prior`),
    ``pred`` (the balanced decision: the argmax of the raw scores, whatever ``prior``) and
    ``confidence`` (the probability of ``pred``). ``df.attrs["prior"]`` says which mix the
    probabilities are under (a checkpoint without its training prior: equal priors, with
    a note). An ensemble uses its first member's prior (the folds' class mixes agree).
    Files that could not be read are listed in ``df.attrs["skipped"]`` as
    ``{"path", "error"}`` dicts. With a checkpoint (or export) that carries a guard, the
    columns ``ood_score`` and ``in_distribution`` follow, and ``df.attrs["ood_guard"]``
    records the score's method and threshold (None: no guard, e.g. an ensemble).

    ``precision`` (auto | float32 | bfloat16) is that of
    :func:`skinhelpers.device.inference_dtype`: ``auto`` runs bfloat16 autocast on a GPU
    and on CPUs with native bfloat16, float32 elsewhere (an ``.onnx`` model always runs in
    float32); a checkpoint with a guard runs in float32 (:func:`ood.guarded_precision`).
    ``df.attrs["precision"]`` says which ran.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = collect_images(paths)
    amp_dtype = None
    members = list(checkpoint) if isinstance(checkpoint, (list, tuple)) else None
    if members is not None and len(members) == 1:
        checkpoint, members = members[0], None
    if members is not None:
        onnx = [str(m) for m in members if is_onnx(m)]
        if onnx or not members:
            raise ValueError(
                "an ensemble is given as .pt checkpoints (an exported ensemble is already "
                f"one model.onnx); got {onnx or 'none'}"
            )
        dev = pick_device(device)
        model, info = load_ensemble(members, dev)
        model = prepare_model(model, channels_last=True)
        amp_dtype = inference_dtype(model_device(model), precision)
        info = {k: v for k, v in info.items() if k != "ood_guard"}  # one member's, not the mean's
    elif is_onnx(checkpoint):  # an exported model.onnx (+ config.json): onnxruntime
        inference_dtype("cpu", precision)  # the name is still checked
        model, info = load_onnx_model(checkpoint)
    else:
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        dev = pick_device(device)  # "auto": CUDA when present, else the CPU
        model, info = model_from_checkpoint(ckpt, dev)
        model = prepare_model(
            ood.guarded(model, info), channels_last=True
        )  # eager: compiling costs more than it saves here
        # a guard's threshold holds for float32 features: "auto" is float32 with a guard
        amp_dtype = inference_dtype(model_device(model), ood.guarded_precision(info, precision))
    classes = list(info["classes"])
    shift = priors.shift_for(info, prior)  # before any image is read: a bad prior fails fast
    views = resolve_views(tta)
    ds = _ImageFiles(files, info["image_size"], info["preprocess"], info["resize_mode"])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate
    )
    batches = _ReadableBatches(loader, files)
    pred = predict_loader(
        model,
        batches,
        info["mean"],
        info["std"],
        views,
        desc=f"predict {len(files)} images" if show_progress else None,
        amp_dtype=amp_dtype,
    )
    # the loop's "labels" are the file indices _ReadableBatches yields with each batch
    rows_idx = pred.labels.tolist() if pred.labels is not None else []
    balanced = pred.probs if len(rows_idx) else np.zeros((0, len(classes)))
    probs_arr = shift.apply(balanced)
    decision = priors.balanced_decision(balanced)
    skipped = batches.skipped
    out = pd.DataFrame(
        {"image_id": [files[i].stem for i in rows_idx], "path": [str(files[i]) for i in rows_idx]}
    )
    for j, c in enumerate(classes):
        out[f"p_{c}"] = probs_arr[:, j]
    out["pred"] = [classes[k] for k in decision] if len(out) else []
    out["confidence"] = probs_arr[np.arange(len(decision)), decision] if len(out) else []
    guard = ood.guard_of(info)
    if guard is not None and pred.ood_scores is not None:
        out["ood_score"] = pred.ood_scores if len(out) else []
        out["in_distribution"] = guard.in_distribution(pred.ood_scores) if len(out) else []
    out.attrs.update(
        {
            "skipped": skipped,
            "classes": classes,
            "tta_views": views,
            "precision": precision_name(amp_dtype),
            "prior": shift.record(),
            "ood_guard": (
                {"method": guard.method, "threshold": guard.threshold, "pass_rate": guard.pass_rate}
                if guard is not None and pred.ood_scores is not None
                else None
            ),
            "checkpoint": {
                k: info[k]
                for k in ("arch", "dataset", "image_size", "preprocess", "resize_mode", "epoch")
            },
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m skinhelpers predict",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="a .pt file written by notebook 07, or a model.onnx written by "
        "`skinhelpers export` (config.json beside it); several .pt files predict as one "
        "ensemble (their mean probability), e.g. a K-fold run's "
        "checkpoints/best_ema.pt folds/fold*/checkpoints/best_ema.pt",
    )
    ap.add_argument(
        "--images",
        required=True,
        nargs="+",
        help="image files and/or folders (searched recursively)",
    )
    ap.add_argument("--out", required=True, help="CSV to write (one row per image)")
    ap.add_argument(
        "--tta", default="1", help="test-time augmentation: 1 (none), 2, 4 or 8 flips/rotations"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else the CPU) | cpu | cuda | cuda:N",
    )
    ap.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto (bfloat16 autocast on a GPU and on CPUs with native bfloat16, "
        "else float32) | float32 | bfloat16",
    )
    ap.add_argument("--prior", default=priors.DEFAULT_PRIOR, help=priors.PRIOR_HELP)
    ap.add_argument("--errors", default=None, help="also write the skipped files to this CSV")
    a = ap.parse_args(argv)
    try:
        df = predict_images(
            a.checkpoint,
            a.images,
            tta=a.tta,
            batch_size=a.batch_size,
            workers=a.workers,
            device=a.device,
            precision=a.precision,
            prior=a.prior,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped = df.attrs["skipped"]
    for s in skipped:
        print(f"skipped {s['path']}: {s['error']}", file=sys.stderr)
    write_csv(a.out, df)
    if a.errors:
        write_csv(a.errors, pd.DataFrame(skipped, columns=["path", "error"]))
    print(df.attrs["prior"]["description"])
    if df.attrs["ood_guard"] is None:
        print(
            "note: no out-of-distribution guard in this model (notebook 08 stores one in the "
            "reported checkpoint; an ensemble has none): every image gets a class"
        )
    elif len(df):
        n_out = int((~df["in_distribution"].astype(bool)).sum())
        print(
            f"{n_out} of {len(df)} image(s) do not look like the training images "
            f"(ood_score > {df.attrs['ood_guard']['threshold']:.4g}, in_distribution False): "
            "do not read their class"
        )
    print(
        f"{len(df)} image(s) predicted ({df.attrs['precision']}) -> {a.out}"
        + (f"; {len(skipped)} unreadable file(s) skipped" if skipped else "")
    )
    if not len(df):
        print("error: no image could be read", file=sys.stderr)
        return 1
    return 0


__all__ = ["collect_images", "predict_images", "main"]
