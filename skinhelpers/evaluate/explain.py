"""Grad-CAM with ``pytorch_grad_cam``, a target layer found automatically, and how much
of the attention falls on the lesion.

:func:`find_target_layer` runs one forward pass with hooks and takes the last module
whose output is still a spatial feature map (4-D with height and width > 1): the final
convolutional stage for timm and torchvision CNNs (``conv_head``/``bn2`` of an
EfficientNet, ``layer4`` of a ResNet, ``features`` of a MobileNet), the usual choice for
Grad-CAM. :func:`cam_in_lesion` compares a CAM with the lesion mask brought to the
model's input geometry by :func:`skinhelpers.data.imaging.fit_to_square`, exactly as the
image was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from skinhelpers.data.imaging import fit_to_size, image_shape, read_rgb
from skinhelpers.figures import synthetic_title
from skinhelpers.model.inference import to_model_input
from skinhelpers.progress import progress

log = logging.getLogger(__name__)


def find_target_layer(
    model: torch.nn.Module, image_size: int | Sequence[int] = 64
) -> torch.nn.Module:
    """The model's own choice (``model.cam_layer()``, as
    :class:`skinhelpers.model.factory.Classifier` has), else the last module (in execution
    order) producing a ``(B, C, H, W)`` map with H, W > 1, found with one forward pass of a
    blank image."""
    if hasattr(model, "cam_layer"):
        try:
            return model.cam_layer()
        except (ValueError, AttributeError):
            pass
    found: list[tuple[str, torch.nn.Module]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(mod, _inp, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[-2:]) > 1:
            found.append((names.get(mod, "?"), mod))

    for m in model.modules():
        if m is not model:
            hooks.append(m.register_forward_hook(hook))
    try:
        dev = next(model.parameters()).device
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *image_shape(image_size), device=dev))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise ValueError(
            f"{type(model).__name__}: no module produces a spatial feature map "
            f"at {image_size}px; pass target_layer explicitly"
        )
    return found[-1][1]


def layer_output_shape(
    model: torch.nn.Module, layer: torch.nn.Module, image_size: int | Sequence[int]
) -> tuple[int, ...]:
    """Shape of ``layer``'s output for one blank image: the CAM's native resolution."""
    shape: list = []
    h = layer.register_forward_hook(lambda m, i, o: shape.append(tuple(o.shape)))
    try:
        dev = next(model.parameters()).device
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *image_shape(image_size), device=dev))
    finally:
        h.remove()
    return shape[-1]


#: the smallest feature map (each side) whose Grad-CAM is worth showing
MIN_CAM_SIDE = 4


def cam_too_coarse(fmap_shape, image_size=None, minimum: int = MIN_CAM_SIDE) -> str | None:
    """Why Grad-CAM is skipped for a feature map of ``fmap_shape`` (``(..., H, W)``), or
    None when it is fine. Below ``minimum`` cells a side the map is a handful of blocks
    upsampled over the whole image: it cannot say whether the model looks at the lesion or
    at the skin beside it, and a figure of it would suggest that it can."""
    h, w = int(fmap_shape[-2]), int(fmap_shape[-1])
    if min(h, w) >= minimum:
        return None
    at = f" for {image_size} images" if image_size is not None else ""
    return (
        f"Grad-CAM skipped: the target layer's feature map is {h}x{w}{at}, below "
        f"{minimum}x{minimum}. Upsampled over the image, {h * w} cells cannot tell the lesion "
        "from the skin around it, so the maps and the in-lesion statistics would mean "
        "nothing. Train at a larger image size (128 px and up for EfficientNet-Lite0) to "
        "see where the model looks."
    )


def layer_name(model: torch.nn.Module, layer: torch.nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is layer), "?")


def grad_cam(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets: Sequence[int] | None = None,
    target_layer: torch.nn.Module | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` in ``[0, 1]`` at the input resolution.

    ``x`` is the *normalised* float batch the model sees; ``targets`` the class index to
    explain per image (default: the predicted class).
    """
    from pytorch_grad_cam import GradCAM  # local: only Grad-CAM needs it (imports cv2 and more)
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputTarget,  # local: only Grad-CAM needs it (imports cv2 and more)
    )

    model.eval()
    layer = target_layer or find_target_layer(model, tuple(x.shape[-2:]))
    dev = next(model.parameters()).device
    out = []
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev)
            tg = (
                None
                if targets is None
                else [ClassifierOutputTarget(int(t)) for t in targets[i : i + batch_size]]
            )
            with torch.enable_grad():
                out.append(cam(input_tensor=xb, targets=tg))
    model.zero_grad(set_to_none=True)
    return np.concatenate(out).astype(np.float32)


def cams_for_images(
    model: torch.nn.Module,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    targets: Sequence[int] | None = None,
    target_layer: torch.nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM of uint8 RGB images ``(N, H, W, 3)`` (as the cache stores them), normalised
    with the checkpoint's ``mean``/``std``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return grad_cam(model, to_model_input(x, mean, std), targets, target_layer)


def load_mask(mask_path: str, size, resize_mode: str = "squash") -> np.ndarray:
    """A lesion mask as a boolean ``(H, W)`` array in the model's input geometry (``size``:
    an int for squares, ``(height, width)`` otherwise)."""
    m = read_rgb(mask_path)[:, :, 0]
    m = fit_to_size(m, size, resize_mode, interpolation=0)  # nearest: stays binary
    return m > 127


def cam_in_lesion(cam: np.ndarray, mask: np.ndarray) -> dict:
    """Share of the CAM's mass inside the lesion, the lesion's share of the image (what
    a CAM spread evenly would score) and their ratio (> 1: attention favours the lesion)."""
    if cam.shape != mask.shape:
        raise ValueError(f"cam {cam.shape} and mask {mask.shape} differ in shape")
    cam = np.clip(cam.astype(np.float64), 0, None)
    total = cam.sum()
    area = float(mask.mean())
    inside = float(cam[mask].sum() / total) if total > 0 else float("nan")
    return {
        "cam_inside": inside,
        "lesion_area": area,
        "ratio": inside / area if area > 0 and np.isfinite(inside) else float("nan"),
    }


def lesion_attention(
    df: pd.DataFrame, cams: np.ndarray, size: int, resize_mode: str = "squash"
) -> pd.DataFrame:
    """:func:`cam_in_lesion` for each row of ``df`` (needs ``mask_path``; rows without a
    mask get NaN) and its CAM, with the mask in the cache's geometry."""
    rows = []
    for mp, cam in zip(df["mask_path"], cams):
        if isinstance(mp, str) and mp:
            rows.append(cam_in_lesion(cam, load_mask(mp, size, resize_mode)))
        else:
            rows.append({"cam_inside": np.nan, "lesion_area": np.nan, "ratio": np.nan})
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def has_mask(mask_path) -> bool:
    return isinstance(mask_path, str) and bool(mask_path)


def attention_on_lesions(
    model: torch.nn.Module,
    cache,
    pred: pd.DataFrame,
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    layer: torch.nn.Module,
    image_size: int,
    resize_mode: str = "squash",
    max_images: int = 300,
    batch_size: int = 64,
    seed: int = 0,
) -> pd.DataFrame | None:
    """Grad-CAM of the predicted class for up to ``max_images`` rows of ``pred`` that have a
    lesion mask (a seeded sample), in batches, scored by :func:`lesion_attention`.

    ``pred``: a prediction frame (``relpath``, ``label``, ``pred``, ``correct``,
    ``mask_path``); ``cache``: the image cache holding its images. None when no row has a
    mask.
    """
    with_mask = pred[pred["mask_path"].map(has_mask)]
    if len(with_mask) == 0:
        return None
    sample = with_mask.sample(min(max_images, len(with_mask)), random_state=seed)
    cams = []
    for start in progress(range(0, len(sample), batch_size), desc="Grad-CAM", unit="batch"):
        part = sample.iloc[start : start + batch_size]
        cams.append(
            cams_for_images(
                model,
                cache.images[cache.rows_for(part)],
                mean,
                std,
                [list(classes).index(p) for p in part["pred"]],
                layer,
            )
        )
    return lesion_attention(sample, np.concatenate(cams), image_size, resize_mode)


def attention_summary(att: pd.DataFrame, classes: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """Per class (and ``all``) means of :func:`attention_on_lesions`' table, and the
    record for ``metrics.json`` (overall means, correct vs wrong, per class)."""
    by = att.groupby("label")[["cam_inside", "lesion_area", "ratio"]].mean().reindex(classes)
    by["images"] = att.groupby("label").size().reindex(classes).fillna(0).astype(int)
    by.loc["all"] = [
        att["cam_inside"].mean(),
        att["lesion_area"].mean(),
        att["ratio"].mean(),
        len(att),
    ]
    ok = att.groupby("correct")["cam_inside"].mean()
    record = {
        "images": int(len(att)),
        "cam_inside_mean": float(att["cam_inside"].mean()),
        "lesion_area_mean": float(att["lesion_area"].mean()),
        "ratio_mean": float(att["ratio"].mean()),
        "cam_inside_correct": float(ok.get(True, np.nan)),
        "cam_inside_wrong": float(ok.get(False, np.nan)),
        "per_class": by.drop(index="all").to_dict(orient="index"),
    }
    return by, record


def select_cases(
    pred: pd.DataFrame, classes: Sequence[str], per_class: int = 2, seed: int = 0
) -> pd.DataFrame:
    """Up to ``per_class`` correct and ``per_class`` wrong test cases per true class
    (seeded random choice), with a ``case`` column (correct / wrong)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in classes:
        for ok in (True, False):
            sub = pred[(pred["label"] == c) & (pred["correct"] == ok)]
            if len(sub):
                take = sub.iloc[np.sort(rng.permutation(len(sub))[:per_class])].copy()
                take["case"] = "correct" if ok else "wrong"
                picks.append(take)
    return pd.concat(picks, ignore_index=True) if picks else pred.head(0).assign(case=[])


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A CAM over an RGB uint8 image (jet colour map), as uint8."""
    from pytorch_grad_cam.utils.image import (
        show_cam_on_image,  # local: only Grad-CAM needs it (imports cv2 and more)
    )

    return show_cam_on_image(
        image.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=1 - alpha
    )


def plot_cam_gallery(
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    masks: Sequence[np.ndarray | None] | None = None,
    ncols: int = 6,
    title: str = "Grad-CAM",
    synthetic: bool = False,
    colors: Sequence[str] | None = None,
):
    """Image / CAM overlay pairs in a grid; the lesion outline in white where a mask is
    given. ``colors`` tints each title (e.g. green for correct, red for wrong)."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(
        nrows, 2 * ncols, figsize=(2 * ncols * 1.45, nrows * 1.75), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, ncols)
        a0, a1 = axes[r, 2 * c], axes[r, 2 * c + 1]
        a0.imshow(images[i])
        a1.imshow(overlay(images[i], cams[i]))
        if masks is not None and masks[i] is not None:
            a1.contour(masks[i].astype(float), levels=[0.5], colors="white", linewidths=0.8)
        a0.set_title(titles[i], fontsize=7, loc="left", color=(colors[i] if colors else "black"))
    fig.suptitle(synthetic_title(title, synthetic), fontsize=11)
    fig.tight_layout()
    return fig


def plot_image_gallery(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    ncols: int = 6,
    title: str = "",
    synthetic: bool = False,
):
    """A plain grid of images with small titles (e.g. the worst errors)."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 2.1, nrows * 2.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(images[i])
        ax.set_title(titles[i], fontsize=7.5)
    fig.suptitle(synthetic_title(title, synthetic), fontsize=11)
    fig.tight_layout()
    return fig


__all__ = [
    "MIN_CAM_SIDE",
    "cam_too_coarse",
    "find_target_layer",
    "layer_output_shape",
    "layer_name",
    "grad_cam",
    "cams_for_images",
    "load_mask",
    "cam_in_lesion",
    "lesion_attention",
    "select_cases",
    "overlay",
    "plot_cam_gallery",
    "plot_image_gallery",
]
