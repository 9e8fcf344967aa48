"""Decoding, resizing and the preprocessing methods that can flow into the image cache.

Every function takes and returns RGB ``uint8`` arrays of shape ``(H, W, 3)``.
Preprocessing is named by a string so that it can be a notebook parameter and part of
the cache key: ``"none"``, ``"clahe"``, ``"shades_of_gray"``, ``"hair_removal"``, or a
chain joined by ``+`` (``"hair_removal+shades_of_gray"``), applied left to right.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from skinhelpers.files import read_json

log = logging.getLogger(__name__)

RESIZE_MODES = ("squash", "crop", "pad")


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read any image as RGB uint8: grayscale, RGBA, CMYK, palette and 16-bit included.

    16-bit images are scaled to 8 bits (not clipped); alpha is dropped; grayscale is
    replicated to three channels. Raises :class:`ImageReadError` naming the file.
    """
    path = str(path)
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:  # formats or modes OpenCV cannot read: let Pillow try
        try:
            with Image.open(path) as im:
                im.load()
                img = _pil_to_rgb(im)
        except Exception as e:
            raise ImageReadError(f"cannot read image {path}: {e}") from e
        return img
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float64)
        lo, hi = np.nanmin(f), np.nanmax(f)
        img = ((f - lo) / (hi - lo + 1e-12) * 255).round().astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.uint32)
        a = (a * 255 // max(int(a.max()), 65535 if a.max() > 255 else 255)).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def image_shape(size) -> tuple[int, int]:
    """``(height, width)`` of a model input size: an int is a square, a pair is (h, w).

    Raises a clear error for anything else (sizes under 8 px, three numbers, text).
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    ):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"image size must be an int (square) or [height, width], got {size!r}")
    if min(h, w) < 8:
        raise ValueError(f"image size must be at least 8 px a side, got {size!r}")
    return h, w


def canonical_size(size) -> int | list[int]:
    """An int for a square, ``[height, width]`` otherwise: the form the cache key, the
    training config and the checkpoint store (JSON-friendly, and a square stays an int)."""
    h, w = image_shape(size)
    return h if h == w else [h, w]


def model_size(image_size: int, image_height: int = 0) -> int | list[int]:
    """The notebooks' ``image_size`` (the width) and ``image_height`` (0: square) as one
    :func:`canonical_size` value, e.g. ``model_size(200, 150) == [150, 200]``."""
    for name, v in (("image_size", image_size), ("image_height", image_height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a whole number of pixels, got {v!r}")
    return canonical_size((int(image_height) or int(image_size), int(image_size)))


def size_label(size) -> str:
    """``"160 px"`` for a square, ``"200x150 px"`` (width x height) otherwise."""
    h, w = image_shape(size)
    return f"{w} px" if h == w else f"{w}x{h} px"


def fit_to_size(
    img: np.ndarray, size, mode: str = "squash", interpolation: int | None = None
) -> np.ndarray:
    """Resize to the model input ``size``: an int (square) or ``(height, width)``.

    ``squash`` resizes ignoring the aspect ratio (keeps the whole field of view),
    ``crop`` scales until the image covers the target and centre-crops, ``pad`` scales
    until it fits and pads with the border colour (reflect). For a non-square target an
    image of the other orientation (portrait for a landscape target) is first turned by
    90 degrees, which dermoscopy allows (no canonical orientation) and which keeps its
    pixels undistorted. Works for masks (2-D) as well.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode '{mode}' is not one of {RESIZE_MODES}")
    th, tw = image_shape(size)
    h, w = img.shape[:2]
    if th != tw and h != w and (h > w) != (th > tw):
        img = np.ascontiguousarray(np.rot90(img))
        h, w = w, h
    interp = interpolation
    if mode == "squash":
        if interp is None:
            interp = cv2.INTER_AREA if (h > th or w > tw) else cv2.INTER_LINEAR
        return cv2.resize(img, (tw, th), interpolation=interp)
    scale = max(th / h, tw / w) if mode == "crop" else min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if mode == "crop":  # rounding must not leave the cover a pixel short
        nh, nw = max(nh, th), max(nw, tw)
    else:
        nh, nw = min(nh, th), min(nw, tw)
    if interp is None:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(img, (nw, nh), interpolation=interp)
    if mode == "crop":
        y, x = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(img[y : y + th, x : x + tw])
    top, left = (th - nh) // 2, (tw - nw) // 2
    return cv2.copyMakeBorder(img, top, th - nh - top, left, tw - nw - left, cv2.BORDER_REFLECT_101)


# ------------------------------------------------------------------ preprocessing methods


def clahe(img: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation on the L channel of LAB."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    lab[:, :, 0] = op.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def shades_of_gray(img: np.ndarray, power: int = 6, gamma: float | None = None) -> np.ndarray:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004), Minkowski norm ``power``.

    Used by the ISIC 2017-2019 winners (Barata et al. 2015) to remove the colour cast of
    different dermatoscopes.
    """
    f = img.astype(np.float32)
    if gamma is not None:
        f = 255.0 * np.power(f / 255.0, 1.0 / gamma)
    illum = np.power(np.mean(np.power(f, power), axis=(0, 1)), 1.0 / power)
    illum = illum / (np.sqrt(np.sum(illum**2)) + 1e-6)
    f = f / (illum * np.sqrt(3.0) + 1e-6)
    return np.clip(f, 0, 255).astype(np.uint8)


def hair_mask(
    img: np.ndarray, kernel_frac: float = 0.06, threshold: int = 15, min_length_frac: float = 0.15
) -> np.ndarray:
    """Binary mask (uint8 0/255) of thin, long, dark hair-like structures.

    DullRazor-style: a morphological blackhat (closing minus image) with a cross-shaped
    element finds structures darker than their surroundings and thinner than the
    element; the element scales with the image (``kernel_frac`` of the short side), so
    the same setting works at 150 px and at 450 px. Two refinements keep the mask to
    hairs: the image is padded by replication first, so the dark lens ring cut off by the
    image border is not mistaken for a hair, and connected pieces shorter than
    ``min_length_frac`` of the short side (bounding-box diagonal) are dropped, so the dots
    and meshes of a pigment network (diagnostic structure) are kept out of the mask.
    ``min_length_frac=0`` keeps every piece.
    """
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    short = min(img.shape[:2])
    k = max(3, int(round(short * kernel_frac)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (k, k))
    padded = cv2.copyMakeBorder(gray, k, k, k, k, cv2.BORDER_REPLICATE)
    blackhat = cv2.morphologyEx(padded, cv2.MORPH_BLACKHAT, kernel)[k:-k, k:-k]
    blackhat = cv2.GaussianBlur(blackhat, (3, 3), 0)
    mask = (blackhat > threshold).astype(np.uint8)
    if min_length_frac > 0 and mask.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        length = np.hypot(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
        keep = length >= min_length_frac * short
        keep[0] = False  # background
        mask = keep[labels].astype(np.uint8)
    return mask * 255


def hair_removal(
    img: np.ndarray,
    kernel_frac: float = 0.06,
    threshold: int = 15,
    inpaint_radius: int = 3,
    min_length_frac: float = 0.15,
) -> np.ndarray:
    """DullRazor-style hair removal: :func:`hair_mask` + Telea inpainting of the masked pixels.

    Only the masked pixels change; everything else is returned as it was.
    """
    mask = hair_mask(img, kernel_frac, threshold, min_length_frac)
    if not mask.any():
        return img.copy()
    return cv2.inpaint(img, mask, inpaint_radius, cv2.INPAINT_TELEA)


PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda img: img,
    "clahe": clahe,
    "shades_of_gray": shades_of_gray,
    "hair_removal": hair_removal,
}


def parse_preprocess(spec: str | None) -> list[str]:
    """``"hair_removal+clahe"`` -> ``["hair_removal", "clahe"]``, checked."""
    if spec is None or spec == "" or spec == "none":
        return []
    steps = [s.strip() for s in str(spec).split("+") if s.strip()]
    bad = [s for s in steps if s not in PREPROCESSORS]
    if bad:
        raise ValueError(
            f"unknown preprocessing {bad} in '{spec}'; choose from "
            f"{sorted(PREPROCESSORS)} (chain with '+')"
        )
    return [s for s in steps if s != "none"]


def preprocess(img: np.ndarray, spec: str | None) -> np.ndarray:
    for step in parse_preprocess(spec):
        img = PREPROCESSORS[step](img)
    return img


def load_for_model(
    path: str | os.PathLike,
    size: int | tuple[int, int],
    preprocess_spec: str | None = "none",
    resize_mode: str = "squash",
) -> np.ndarray:
    """Read, preprocess and resize one image exactly as the cache does.

    Large images are first brought down to about twice the target size so preprocessing
    costs the same whatever the source resolution.
    """
    img = read_rgb(path)
    return prepare(img, size, preprocess_spec, resize_mode)


def prepare(
    img: np.ndarray,
    size: int | tuple[int, int],
    preprocess_spec: str | None = "none",
    resize_mode: str = "squash",
) -> np.ndarray:
    steps = parse_preprocess(preprocess_spec)
    if steps:
        h, w = img.shape[:2]
        side = max(image_shape(size))
        if min(h, w) > 2 * side:
            s = 2 * side / min(h, w)
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        for step in steps:
            img = PREPROCESSORS[step](img)
    return fit_to_size(img, size, resize_mode)


# ----------------------------------------------------------------------------- the run's choice

DEFAULT_PREPROCESSING = {"preprocess": "none", "resize_mode": "squash"}


def read_preprocessing(run_dir, verbose: bool = True) -> dict:
    """``preprocessing.json`` of notebook 02, or none/squash (with a note) if it is absent."""
    path = Path(run_dir) / "preprocessing.json"
    if not path.exists():
        if verbose:
            log.warning(
                f"note: {path.name} not found in the run folder (notebook 02 writes it); "
                "using no preprocessing and squash resizing"
            )
        return dict(DEFAULT_PREPROCESSING)
    d = read_json(path)
    return {
        "preprocess": d.get("preprocess") or "none",
        "resize_mode": d.get("resize_mode") or "squash",
    }
