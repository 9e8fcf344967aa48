"""Skin tone: the Individual Typology Angle (ITA) of the skin around each lesion.

Dermatology AI is most often criticised on skin tone (Daneshjou et al. 2022: AUC 0.72 on
Fitzpatrick I-II against 0.57 on V-VI), and dermoscopy sets carry no skin-type label. The
ITA estimates one from colour: ``ITA = atan((L* - 50) / b*) * 180 / pi`` on CIELAB, from
skin pixels only: outside the lesion mask where the dataset has one (HAM10000), else a
ring along the image border; dark pixels (vignetting, hairs) are left out. Bands (Chardon
et al. 1991; Kinyanjui et al.): very light > 55, light 41-55, intermediate 28-41, tan 10-28,
brown -30-10, dark < -30.

What it can and cannot say: a dermatoscope lights the skin with its own polarised or
non-polarised LEDs and sits on it through gel or glass, so the measured colour depends on
the device and its white balance as much as on the skin; ITA estimators disagree with each
other on ISIC data (FAIMI 2023). Read it as an estimate that ranks images by lightness,
never as a Fitzpatrick type; :data:`ITA_NOTE` says so where it is shown.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pandas as pd

from skinhelpers.data.imaging import read_rgb
from skinhelpers.progress import progress

log = logging.getLogger(__name__)

#: (lower bound, name), lightest first: an ITA above the bound falls in the band
ITA_BANDS = (
    (55.0, "very light"),
    (41.0, "light"),
    (28.0, "intermediate"),
    (10.0, "tan"),
    (-30.0, "brown"),
    (-np.inf, "dark"),
)
BAND_ORDER = [name for _, name in ITA_BANDS]
ITA_NOTE = (
    "ITA (Individual Typology Angle) is estimated from the colour of the skin around the "
    "lesion under the dermatoscope's own light: it ranks images by skin lightness but "
    "depends on the device and its white balance, ITA estimators disagree on ISIC data, "
    "and it is not a Fitzpatrick skin type. Read the bands as estimates."
)
#: pixels darker than this L* (0-100) are vignetting, hairs or shadow, not skin
MIN_L = 15.0


def ita_of_lab(L, b) -> np.ndarray:
    """ITA in degrees, in (-90, 90), from CIELAB ``L*`` (0-100) and ``b*``. A ``b*`` at or
    below zero (a bluish cast of the dermatoscope's light, a quarter of HAM10000's images)
    counts as the limit ``b* -> 0+``: +90 above L* = 50, -90 below."""
    b = np.maximum(np.asarray(b, float), 1e-6)
    return np.degrees(np.arctan((np.asarray(L, float) - 50.0) / b))


def ita_band(ita) -> pd.Series:
    """ITA degrees -> band names (NaN -> ``unknown``)."""
    ita = pd.Series(np.asarray(ita, dtype=float))
    out = pd.Series("unknown", index=ita.index, dtype=object)
    for lo, name in reversed(ITA_BANDS):
        out[ita > lo] = name
    return out


def skin_mask(shape: tuple[int, int], lesion: np.ndarray | None, ring: float = 0.12):
    """Where the skin is: outside the lesion mask (dilated a little), or, without a mask,
    a ring of ``ring`` of the shorter side along the border."""
    h, w = shape
    if lesion is not None:
        les = cv2.resize(lesion.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        les = cv2.dilate(les.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        return ~les
    r = max(1, int(round(ring * min(h, w))))
    m = np.zeros((h, w), dtype=bool)
    m[:r], m[-r:], m[:, :r], m[:, -r:] = True, True, True, True
    return m


def image_ita(img: np.ndarray, lesion: np.ndarray | None = None) -> dict:
    """ITA of one RGB uint8 image: the median L* and b* of its skin pixels."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float64)
    L = lab[:, :, 0] * 100.0 / 255.0  # OpenCV's 8-bit LAB: L*255/100, a and b + 128
    b = lab[:, :, 2] - 128.0
    m = skin_mask(img.shape[:2], lesion) & (L > MIN_L)
    if m.sum() < 20:
        return {"ita": np.nan, "skin_L": np.nan, "skin_b": np.nan, "skin_pixels": int(m.sum())}
    Lm, bm = float(np.median(L[m])), float(np.median(b[m]))
    return {
        "ita": float(ita_of_lab(Lm, bm)),
        "skin_L": Lm,
        "skin_b": bm,
        "skin_pixels": int(m.sum()),
    }


def _one(args) -> dict:
    path, mask_path = args
    try:
        img = read_rgb(path)
        lesion = None
        if isinstance(mask_path, str) and mask_path:
            m = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
            lesion = None if m is None else m > 127
        out = image_ita(img, lesion)
        out["skin_from"] = "outside the lesion mask" if lesion is not None else "border ring"
        return out
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the scan
        return {"ita": np.nan, "skin_from": f"error: {type(e).__name__}: {e}"}


def ita_table(df: pd.DataFrame, workers: int = 2, show_progress: bool = True) -> pd.DataFrame:
    """ITA and its band for every image of a manifest (``path``, optional ``mask_path``)."""
    masks = df["mask_path"] if "mask_path" in df else pd.Series([None] * len(df))
    jobs = list(zip(df["path"].astype(str), masks))
    with ThreadPoolExecutor(max(1, int(workers or 1))) as ex:
        rows = list(
            progress(
                ex.map(_one, jobs, chunksize=32),
                total=len(jobs),
                desc="skin tone (ITA)",
                unit="img",
                disable=not show_progress,
            )
        )
    out = pd.DataFrame(rows)
    out.insert(0, "relpath", df["relpath"].to_numpy())
    out["ita_band"] = ita_band(out["ita"]).to_numpy()
    return out


def band_counts(ita: pd.DataFrame, labels: pd.Series | None = None) -> pd.DataFrame:
    """Images per ITA band (lightest first), by class when ``labels`` are given."""
    bands = pd.Categorical(ita["ita_band"], categories=[*BAND_ORDER, "unknown"], ordered=True)
    if labels is None:
        return pd.Series(bands).value_counts(sort=False).rename("images").to_frame()
    return pd.crosstab(
        pd.Series(bands, name="ita_band"), pd.Series(labels.to_numpy(), name="class")
    )


__all__ = [
    "BAND_ORDER",
    "ITA_BANDS",
    "ITA_NOTE",
    "band_counts",
    "image_ita",
    "ita_band",
    "ita_of_lab",
    "ita_table",
    "skin_mask",
]
