"""Image quality: per-image measures, outliers, preprocessing cost, before/after panels.

Every image is measured at one working size (short side :data:`WORK_SIZE` px, aspect
kept), so the numbers compare across datasets whatever the source resolution:

=============  ===========================================================================
brightness     mean of the L channel of LAB, 0..1 (too dark / over-exposed)
contrast       standard deviation of L, 0..1 (flat, washed-out images are low)
laplacian_var  variance of the Laplacian of the gray image (sharpness: LOW = blurry)
hair           fraction of pixels in :func:`skinhelpers.data.imaging.hair_mask` (hair, rulers,
               ink marks: HIGH = occluded)
vignetting     darkness of the four corners relative to the skin in the centre, 0..1
               (the black ring of a dermatoscope lens: HIGH = dark corners)
width, height  of the file as stored; ``aspect`` = width / height
=============  ===========================================================================
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skinhelpers.data.imaging import hair_mask, prepare, read_rgb, size_label
from skinhelpers.progress import progress

log = logging.getLogger(__name__)

WORK_SIZE = 160
MEASURES = ("brightness", "contrast", "laplacian_var", "hair", "vignetting")
# which tail of each measure is the bad one ("both": either tail)
BAD_TAIL = {
    "brightness": "both",
    "contrast": "low",
    "laplacian_var": "low",
    "hair": "high",
    "vignetting": "high",
}
DESCRIPTION = {
    "brightness": "mean lightness (L of LAB, 0-1)",
    "contrast": "std of lightness (0-1)",
    "laplacian_var": "variance of the Laplacian (low: blurry)",
    "hair": "share of hair-like pixels",
    "vignetting": "dark corners vs centre (0-1)",
}


# ----------------------------------------------------------------------------- measures


def to_work_size(img: np.ndarray, short_side: int = WORK_SIZE) -> np.ndarray:
    """Resize so that the short side is ``short_side`` px (aspect kept)."""
    h, w = img.shape[:2]
    s = short_side / min(h, w)
    if s == 1:
        return img
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def vignetting_score(lightness: np.ndarray, corner_frac: float = 0.12) -> float:
    """Mean darkness of the four corner squares relative to the centre's skin, 0..1.

    The reference is the 90th percentile of lightness in the central half of the image
    (the skin around the lesion, not the lesion itself); 0 = corners as bright as that
    skin, 1 = black corners.
    """
    h, w = lightness.shape
    k = max(2, int(round(min(h, w) * corner_frac)))
    corners = np.concatenate(
        [
            lightness[:k, :k].ravel(),
            lightness[:k, -k:].ravel(),
            lightness[-k:, :k].ravel(),
            lightness[-k:, -k:].ravel(),
        ]
    )
    centre = lightness[h // 4 : h - h // 4, w // 4 : w - w // 4]
    ref = float(np.percentile(centre, 90))
    if ref <= 1e-6:
        return 0.0
    return float(np.clip(1.0 - corners.mean() / ref, 0.0, 1.0))


def measure_image(img: np.ndarray) -> dict:
    """The quality measures of one RGB uint8 image (see the module docstring)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    small = to_work_size(img)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    L = lab[:, :, 0].astype(np.float32) / 255.0
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    return {
        "width": int(w),
        "height": int(h),
        "aspect": round(w / h, 4),
        "brightness": float(L.mean()),
        "contrast": float(L.std()),
        "laplacian_var": float(lap.var()),
        "hair": float((hair_mask(small) > 0).mean()),
        "vignetting": vignetting_score(L),
    }


def measure_file(path: str) -> dict:
    """:func:`measure_image` of one file; ``error`` names the problem instead of raising."""
    try:
        out = measure_image(read_rgb(path))
        out["error"] = None
    except Exception as e:  # a broken file must not stop a scan of 10,000 images
        out = {k: np.nan for k in ("width", "height", "aspect", *MEASURES)}
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def measure_all(df: pd.DataFrame, workers: int = 2, show_progress: bool = True) -> pd.DataFrame:
    """Quality measures of every image of a manifest: one row per ``relpath``.

    Runs in ``workers`` threads (OpenCV releases the GIL while decoding and filtering).
    """
    if "path" not in df or df["path"].isna().any():
        raise ValueError(
            "measure_all needs a manifest whose rows all have a 'path' "
            "(validate and apply it first)"
        )
    paths = df["path"].astype(str).tolist()
    workers = max(1, int(workers or 1))
    with ThreadPoolExecutor(workers) as ex:
        it = ex.map(measure_file, paths, chunksize=32)
        rows = list(
            progress(it, total=len(paths), desc="quality", unit="img", disable=not show_progress)
        )
    q = pd.DataFrame(rows)
    q.insert(0, "relpath", df["relpath"].to_numpy())
    q.insert(1, "label", df["label"].to_numpy())
    return q


# ----------------------------------------------------------------------------- outliers


def robust_z(x: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 * MAD): a z-score that outliers themselves do not inflate."""
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    if not np.isfinite(mad) or mad == 0:
        mad = x.std() or 1.0
    return (x - med) / mad


def flag_outliers(q: pd.DataFrame, z: float = 3.5) -> pd.DataFrame:
    """Boolean columns ``<measure>_outlier``: beyond ``z`` robust z-scores in the bad tail.

    ``laplacian_var`` is judged on a log scale (it spans orders of magnitude).
    """
    out = pd.DataFrame({"relpath": q["relpath"]})
    for m in MEASURES:
        x = np.log10(q[m] + 1e-3) if m == "laplacian_var" else q[m]
        zz = robust_z(x)
        tail = BAD_TAIL[m]
        flag = zz.abs() > z if tail == "both" else (zz < -z if tail == "low" else zz > z)
        out[f"{m}_outlier"] = flag.fillna(False).to_numpy()
    return out


def outlier_summary(q: pd.DataFrame, z: float = 3.5) -> pd.DataFrame:
    """Per measure: median, 5th/95th percentile, the bad tail, outliers (count, share)."""
    flags = flag_outliers(q, z)
    rows = []
    for m in MEASURES:
        n = int(flags[f"{m}_outlier"].sum())
        rows.append(
            {
                "measure": m,
                "meaning": DESCRIPTION[m],
                "median": q[m].median(),
                "p05": q[m].quantile(0.05),
                "p95": q[m].quantile(0.95),
                "bad_tail": BAD_TAIL[m],
                "outliers": n,
                "share": n / max(1, len(q)),
            }
        )
    return pd.DataFrame(rows)


def extremes(q: pd.DataFrame, measure: str, k: int = 6) -> pd.DataFrame:
    """The ``k`` most extreme rows in the bad tail of ``measure`` (both tails: k/2 each)."""
    if measure not in BAD_TAIL:
        raise ValueError(f"unknown measure '{measure}'; choose from {list(BAD_TAIL)}")
    tail = BAD_TAIL[measure]
    s = q.dropna(subset=[measure])
    if tail == "low":
        return s.nsmallest(k, measure)
    if tail == "high":
        return s.nlargest(k, measure)
    lo = s.nsmallest(k - k // 2, measure)
    hi = s.nlargest(k // 2, measure)
    return pd.concat([lo, hi[~hi["relpath"].isin(lo["relpath"])]])


# ----------------------------------------------------------------------------- cost


def measure_cost(
    paths: list[str], methods: dict[str, tuple[str, str]], size: int, repeats: int = 1
) -> pd.DataFrame:
    """Images per second of each preprocessing method on real images, one core.

    ``methods`` maps a display name to ``(preprocess_spec, resize_mode)``, as passed to
    :func:`skinhelpers.data.imaging.prepare`. Images are decoded once up front (decoding is
    timed separately as ``decode``), so each row is the cost of the method alone.
    """
    if not paths:
        raise ValueError("measure_cost needs at least one image path")
    t0 = time.perf_counter()
    imgs = [read_rgb(p) for p in paths]
    rows = [
        {
            "method": "decode (read_rgb)",
            "preprocess": "-",
            "resize_mode": "-",
            "images": len(imgs),
            "seconds": time.perf_counter() - t0,
        }
    ]
    for name, (spec, mode) in methods.items():
        best = np.inf
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            for img in imgs:
                prepare(img, size, spec, mode)
            best = min(best, time.perf_counter() - t0)
        rows.append(
            {
                "method": name,
                "preprocess": spec,
                "resize_mode": mode,
                "images": len(imgs),
                "seconds": best,
            }
        )
    out = pd.DataFrame(rows)
    out["ms_per_image"] = 1000 * out["seconds"] / out["images"]
    out["images_per_s"] = out["images"] / out["seconds"]
    return out


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- plots


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def plot_measure_hists(q: pd.DataFrame, z: float = 3.5):
    """One histogram per measure, outliers (robust z beyond ``z``) in red."""
    flags = flag_outliers(q, z)
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(3.1 * len(MEASURES), 2.8))
    for ax, m in zip(axes, MEASURES):
        x = q[m].to_numpy(dtype=float)
        f = flags[f"{m}_outlier"].to_numpy()
        logx = m == "laplacian_var"
        v = np.log10(x + 1e-3) if logx else x
        bins = np.histogram_bin_edges(v[np.isfinite(v)], bins=40)
        ax.hist(v[~f], bins=bins, color="#4c72b0", alpha=0.85, label="typical")
        if f.any():
            ax.hist(v[f], bins=bins, color="crimson", alpha=0.9, label=f"outliers ({f.sum()})")
        ax.set_title(m + (" (log10)" if logx else ""), fontsize=10)
        ax.set_xlabel(DESCRIPTION[m], fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel("images")
    fig.suptitle(
        f"Image quality measures (n={len(q):,}; red: robust |z| > {z:g} in the bad tail)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def plot_outlier_gallery(
    q: pd.DataFrame, df: pd.DataFrame, k: int = 6, measures: tuple[str, ...] = MEASURES
):
    """One row per measure: the ``k`` most extreme images in its bad tail, value on top."""
    paths = dict(zip(df["relpath"], df["path"]))
    fig, axes = plt.subplots(
        len(measures), k, figsize=(1.75 * k + 1.4, 1.55 * len(measures)), squeeze=False
    )
    for i, m in enumerate(measures):
        ex = extremes(q, m, k)
        for j in range(k):
            ax = axes[i, j]
            _off(ax)
            if j < len(ex):
                r = ex.iloc[j]
                ax.imshow(read_rgb(paths[r["relpath"]]))
                ax.set_title(f"{r[m]:.3g}  {r['label']}", fontsize=7)
            if j == 0:
                ax.set_ylabel(m, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("The most extreme images per measure (bad tail)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_before_after(
    paths: list[str],
    methods: dict[str, tuple[str, str]],
    size: int | list[int],
    show_mask: bool = True,
    titles: list[str] | None = None,
):
    """Rows: images; columns: the original, the hair mask, then each method's output.

    ``methods`` maps a column title to ``(preprocess_spec, resize_mode)``; each output is
    what the cache would store at ``size`` px.
    """
    ncol = 1 + int(show_mask) + len(methods)
    fig, axes = plt.subplots(
        len(paths), ncol, figsize=(1.9 * ncol, 1.75 * len(paths) + 0.5), squeeze=False
    )
    for i, p in enumerate(paths):
        img = read_rgb(p)
        panels = [("original", img)]
        if show_mask:
            m = hair_mask(img) > 0
            over = img.copy()
            over[m] = (255, 0, 255)
            panels.append((f"hair mask ({m.mean():.1%})", over))
        for name, (spec, mode) in methods.items():
            panels.append((name, prepare(img, size, spec, mode)))
        for j, (name, im) in enumerate(panels):
            ax = axes[i, j]
            _off(ax)
            ax.imshow(im)
            if i == 0:
                ax.set_title(name, fontsize=8)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(
        f"Preprocessing before / after (outputs at {size_label(size)}, as cached)", fontsize=11
    )
    fig.tight_layout()
    return fig


def plot_cost(cost: pd.DataFrame, cores: int | None = None):
    """Horizontal bars: images per second per method (one core)."""
    c = cost.sort_values("images_per_s")
    fig, ax = plt.subplots(figsize=(7, 0.42 * len(c) + 1.2))
    bars = ax.barh(c["method"], c["images_per_s"], color="#55a868")
    ax.bar_label(
        bars,
        labels=[
            f"{v:,.0f}/s  ({ms:.2f} ms)" for v, ms in zip(c["images_per_s"], c["ms_per_image"])
        ],
        fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_xlabel("images per second, one core (log scale)")
    extra = f"; machine has {cores} core(s)" if cores else ""
    ax.set_title(
        f"Preprocessing cost on {int(c['images'].iloc[0])} real images{extra}", fontsize=10
    )
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlim(right=ax.get_xlim()[1] * 8)
    fig.tight_layout()
    return fig


def plot_cached(images: np.ndarray, labels: list[str], title: str, ncol: int = 8):
    """A grid of images taken from the cache (uint8 N x S x S x 3)."""
    n = len(images)
    nrow = max(1, int(np.ceil(n / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.5 * ncol, 1.6 * nrow + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        _off(ax)
        if k < n:
            ax.imshow(images[k])
            ax.set_title(labels[k], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = [
    "MEASURES",
    "BAD_TAIL",
    "WORK_SIZE",
    "measure_image",
    "measure_file",
    "measure_all",
    "vignetting_score",
    "robust_z",
    "flag_outliers",
    "outlier_summary",
    "extremes",
    "measure_cost",
    "cpu_count",
    "plot_measure_hists",
    "plot_outlier_gallery",
    "plot_before_after",
    "plot_cost",
    "plot_cached",
]
