"""A run's out-of-distribution guard: fitted in notebook 08, stored in the checkpoint.

:func:`fit_run_guard` takes the reported model, the run's image cache and its train and
validation frames: the training features give the class means and covariance, the
validation images and half of the far out-of-distribution photos
(:func:`skinhelpers.evaluate.ood.package_photos`) choose between the candidate scores
(:data:`skinhelpers.evaluate.ood.METHODS`), the validation images fix the threshold
(``pass_rate`` of them pass), and the other half of the photos, never seen while choosing,
measures the guard (AUROC and the share flagged). Crops of one photo stay in one half.

:func:`attach_guard` writes the guard into the checkpoint (atomically: a reader never sees
half a file), so ``predict``, the export and the demo find it with the network.
:func:`passed_vs_flagged` compares the model's accuracy on the images the guard passes
with those it flags.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch.utils.data import DataLoader

from skinhelpers.data.cache import CachedImageDataset
from skinhelpers.evaluate import by_source, ood
from skinhelpers.files import atomic_path
from skinhelpers.model.checkpoints import load_checkpoint
from skinhelpers.progress import progress

log = logging.getLogger(__name__)


def split_photos(photos, seed: int = 0) -> tuple[list, list]:
    """``(choose, measure)``: the photos of :func:`ood.package_photos` in two halves by
    source photo (a photo and its crops go to one half), drawn with ``seed``."""
    bases = sorted({name.split("/")[0] for name, _ in photos})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(bases))
    choose = {bases[i] for i in order[: len(bases) // 2]}
    a = [(n, im) for n, im in photos if n.split("/")[0] in choose]
    b = [(n, im) for n, im in photos if n.split("/")[0] not in choose]
    return a, b


def frame_features(
    model,
    cache,
    df: pd.DataFrame,
    mean,
    std,
    batch_size: int = 64,
    desc: str | None = None,
    layers: bool = False,
):
    """Penultimate features (with ``layers``: the list of every layer's) and logits of the
    rows of ``df`` from the image cache (one view: the image as cached)."""
    loader = DataLoader(CachedImageDataset(cache, df), batch_size=batch_size, shuffle=False)
    feats, logits = [], []
    for x, _ in progress(loader, total=len(loader), desc=desc, unit="batch", disable=desc is None):
        f, lg = ood.features_and_logits(model, x, mean, std, batch_size, layers=layers)
        feats.append(f if layers else [f])
        logits.append(lg)
    if not feats:
        raise ValueError("no images to take features of (an empty split)")
    return ood.join_batches(feats, logits, layers)


def photo_features(model, info: dict, photos, layers: bool = False):
    """Features and logits of ``(name, RGB)`` photos prepared like the run's images."""
    x = ood.images_to_batch(
        [im for _, im in photos], info["image_size"], info["preprocess"], info["resize_mode"]
    )
    return ood.features_and_logits(model, x, info["mean"], info["std"], layers=layers)


def guard_scores(
    guard: ood.OODGuard, model, cache, df: pd.DataFrame, info: dict, batch_size: int = 64
) -> np.ndarray:
    """The guard's score of every row of ``df`` (from the image cache, one view), with the
    features the guard needs."""
    f, lg = frame_features(
        model, cache, df, info["mean"], info["std"], batch_size, layers=guard.needs_layers
    )
    return guard.score(f, lg)


def fit_run_guard(
    model,
    info: dict,
    cache,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    pass_rate: float = 0.95,
    batch_size: int = 64,
    seed: int = 0,
    max_train_images: int = 0,
    show_progress: bool = True,
) -> tuple[ood.OODGuard, dict]:
    """Fit, choose and measure the guard of ``model`` (see the module's docstring); return
    it with the scores it saw (``{"validation", "photos (choosing)", "photos (held out)"}``
    arrays, for the picture).

    ``max_train_images`` (0: all) caps the training images the class means and covariance
    are estimated from (a random draw with ``seed``, every class kept)."""
    if max_train_images and len(train_df) > max_train_images:
        train_df = train_df.sample(max_train_images, random_state=seed)
    mean, std = info["mean"], info["std"]
    layers = ood.has_layers(model)  # the small CNN has no stages: two candidates then
    tr_f, _ = frame_features(
        model,
        cache,
        train_df,
        mean,
        std,
        batch_size,
        "guard: train features" if show_progress else None,
        layers,
    )
    va_f, va_l = frame_features(
        model,
        cache,
        val_df,
        mean,
        std,
        batch_size,
        "guard: validation" if show_progress else None,
        layers,
    )
    photos = ood.package_photos(seed=seed)
    choose, measure = split_photos(photos, seed)
    ch_f, ch_l = photo_features(model, info, choose, layers)
    guard = ood.fit_guard(tr_f, train_df["label_idx"].to_numpy(), va_f, va_l, ch_f, ch_l, pass_rate)
    me_f, me_l = photo_features(model, info, measure, layers)
    held = guard.score(me_f, me_l)
    val = guard.score(va_f, va_l)
    guard.measured.update(
        {
            "chosen_on": sorted({n.split("/")[0] for n, _ in choose}),
            "measured_on": sorted({n.split("/")[0] for n, _ in measure}),
            "auroc_far_ood_heldout": ood.auroc(val, held),
            "far_ood_heldout_flagged": float(np.mean(~guard.in_distribution(held))),
            "n_far_ood_heldout": len(measure),
            "n_train": len(train_df),
        }
    )
    log.info(
        "guard: %s, threshold %.4g; AUROC on held-out photos %.3f",
        guard.method,
        guard.threshold,
        guard.measured["auroc_far_ood_heldout"],
    )
    seen = {
        "validation": val,
        "photos (choosing)": guard.score(ch_f, ch_l),
        "photos (held out)": held,
    }
    return guard, seen


def attach_guard(path: str | os.PathLike, guard: ood.OODGuard) -> None:
    """Store ``guard`` in the checkpoint at ``path`` (key ``ood_guard``), atomically."""
    ckpt = load_checkpoint(path)
    ckpt["ood_guard"] = guard.state()
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def guard_table(guard: ood.OODGuard) -> pd.DataFrame:
    """The candidate scores side by side, as they were compared (one row per method)."""
    m = guard.measured
    rows = [
        {
            "score": name,
            "AUROC, validation vs photos (choosing)": value,
            "kept": name == guard.method,
        }
        for name, value in m["auroc_vs_far_ood"].items()
    ]
    return pd.DataFrame(rows)


def passed_vs_flagged(
    y: np.ndarray,
    probs: np.ndarray,
    in_distribution: np.ndarray,
    classes: list[str],
    pos_index: int | None = None,
    min_class_images: int = 20,
) -> pd.DataFrame:
    """The model's results on the images the guard passes and on those it flags: number,
    share, accuracy, the balanced accuracy over the classes with at least
    ``min_class_images`` images in that part, and the melanoma (``pos_index``) AUC."""
    y = np.asarray(y)
    pred = np.asarray(probs).argmax(1)
    rows = []
    for name, mask in (("passed", in_distribution), ("flagged", ~in_distribution)):
        mask = np.asarray(mask, dtype=bool)
        yy, pp = y[mask], pred[mask]
        big = by_source.large_classes(yy, len(classes), min_class_images)
        row = {
            "images": name,
            "n": int(mask.sum()),
            "share": float(mask.mean()) if len(mask) else float("nan"),
            "accuracy": float(np.mean(yy == pp)) if mask.any() else float("nan"),
            f"balanced accuracy (classes with >= {min_class_images})": (
                by_source.balanced_accuracy_over(big)(yy, np.asarray(probs)[mask])
                if big
                else float("nan")
            ),
            "classes counted": ", ".join(classes[c] for c in big),
        }
        if pos_index is not None:
            pos = yy == pos_index
            row["melanoma AUC"] = (
                float(skm.roc_auc_score(pos, np.asarray(probs)[mask, pos_index]))
                if 0 < pos.sum() < len(pos)
                else float("nan")
            )
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "attach_guard",
    "fit_run_guard",
    "frame_features",
    "guard_scores",
    "guard_table",
    "passed_vs_flagged",
    "photo_features",
    "split_photos",
]
