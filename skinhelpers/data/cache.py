"""The image cache: every image decoded, preprocessed and resized once.

The cache is one ``uint8`` array of shape ``(N, H, W, 3)`` in a memory-mapped file
plus a JSON sidecar. Its key hashes the dataset, size, preprocessing, resize mode, the
list of files with their content hashes and the source of :mod:`skinhelpers.data.imaging`,
so a change of any of them builds a new cache and an unchanged request reuses the old one.
Building runs in ``workers`` threads with a progress bar; the sidecar is written last, so an
interrupted build is never mistaken for a finished one. Raw data is only read.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from skinhelpers.data import imaging
from skinhelpers.data.imaging import (
    RESIZE_MODES,
    ImageReadError,
    canonical_size,
    image_shape,
    load_for_model,
    parse_preprocess,
    size_label,
)
from skinhelpers.files import PROJECT_ROOT, atomic_path, write_json
from skinhelpers.progress import progress

log = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_CACHE_DIR = PROJECT_ROOT / "data" / "cache"


@functools.lru_cache(maxsize=1)
def _imaging_code_hash() -> str:
    """A hash of the decoding/preprocessing code: a change to it invalidates caches."""
    return hashlib.sha1(inspect.getsource(imaging).encode()).hexdigest()[:12]


def cache_key(df: pd.DataFrame, size, preprocess: str, resize_mode: str) -> str:
    files = list(zip(df["relpath"].astype(str), df["sha1"].astype(str)))
    payload = json.dumps(
        {
            "v": CACHE_VERSION,
            "code": _imaging_code_hash(),
            "dataset": df.attrs.get("dataset"),
            "root": df.attrs.get("root"),
            "size": canonical_size(size),
            "preprocess": preprocess,
            "resize_mode": resize_mode,
            "files": files,
        }
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


@dataclass
class ImageCache:
    """A built cache: ``images[i]`` is the image of manifest row ``relpaths[i]``."""

    path: Path
    meta: dict
    images: np.ndarray  # read-only memmap (N, H, W, 3) uint8

    @classmethod
    def open(cls, meta_path: str | os.PathLike) -> "ImageCache":
        meta_path = Path(meta_path)
        meta = json.loads(meta_path.read_text())
        data = meta_path.with_suffix(".u8")
        h, w = image_shape(meta["size"])
        images = np.memmap(data, dtype=np.uint8, mode="r", shape=(meta["n"], h, w, 3))
        return cls(meta_path, meta, images)

    def __len__(self) -> int:
        return self.meta["n"]

    @property
    def size(self) -> int | list[int]:
        """The images' size: an int for squares, ``[height, width]`` otherwise."""
        return self.meta["size"]

    def rows_for(self, df: pd.DataFrame) -> np.ndarray:
        """Cache row of each manifest row (by ``relpath``); error if one is not cached."""
        pos = {r: i for i, r in enumerate(self.meta["relpaths"])}
        missing = [r for r in df["relpath"] if r not in pos]
        if missing:
            raise KeyError(
                f"{len(missing)} image(s) are not in cache {self.path.name}, e.g. "
                f"{missing[:3]}: build the cache from the same manifest"
            )
        return np.array([pos[r] for r in df["relpath"]], dtype=np.int64)


def _decode_into(
    arr: np.ndarray, row: int, path: str, size, preprocess: str, resize_mode: str
) -> str | None:
    """Decode one image into ``arr[row]``; return an error message instead of raising."""
    try:
        arr[row] = load_for_model(path, size, preprocess, resize_mode)
        return None
    except (ImageReadError, OSError, ValueError) as e:
        return f"{path}: {e}"


def build_cache(
    df: pd.DataFrame,
    size: int | list[int] = 128,
    preprocess: str = "none",
    resize_mode: str = "squash",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    rebuild: bool = False,
    show_progress: bool = True,
) -> ImageCache:
    """Build (or reuse) the cache of every image in ``df`` (a manifest, validated).

    ``size``: an int for square images, ``[height, width]`` otherwise (e.g. ``[150, 200]``
    keeps HAM10000's 4:3). Rows with a missing path are an error: run
    :func:`skinhelpers.data.validate.validate` and apply it first. An image that cannot be
    decoded fails the build, naming the file.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode '{resize_mode}' is not one of {RESIZE_MODES}")
    parse_preprocess(preprocess)  # validates the name early
    preprocess = preprocess or "none"
    size = canonical_size(size)  # a clear error for a bad size
    h, w = image_shape(size)
    if df["path"].isna().any():
        bad = df.loc[df["path"].isna(), "image_id"].tolist()[:5]
        raise ValueError(
            f"{df['path'].isna().sum()} manifest row(s) have no file (e.g. {bad}); "
            "validate the manifest and drop missing files first"
        )
    if not df["relpath"].is_unique:
        dup = df.loc[df["relpath"].duplicated(), "relpath"].tolist()[:3]
        raise ValueError(
            f"manifest rows repeat a file (e.g. {dup}); validate and apply the "
            "report (duplicate_id: dedupe) first"
        )
    if len(df) == 0:
        raise ValueError("the manifest is empty: nothing to cache")
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    dataset = df.attrs.get("dataset", "dataset")
    key = cache_key(df, size, preprocess, resize_mode)
    stem = f"{w if h == w else f'{w}x{h}'}px-{preprocess.replace('+', '_')}-{resize_mode}-{key}"
    out_dir = cache_dir / dataset
    meta_path = out_dir / f"{stem}.json"
    data_path = out_dir / f"{stem}.u8"
    if meta_path.exists() and data_path.exists() and not rebuild:
        return ImageCache.open(meta_path)

    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(df)
    shape = (n, h, w, 3)
    paths = df["path"].astype(str).tolist()
    workers = workers or min(os.cpu_count() or 1, 8)
    t0 = time.perf_counter()
    errors: list[tuple[int, str]] = []
    with atomic_path(data_path) as tmp:
        arr = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        bar = progress(
            total=n,
            desc=f"cache {dataset} {size_label(size)} {preprocess}",
            unit="img",
            disable=not show_progress,
        )
        # threads, not processes: OpenCV and NumPy release the GIL while decoding,
        # resizing and filtering, and threads share the memmap with no start-up cost
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            decode = partial(_decode_into, arr)
            with ThreadPoolExecutor(max(1, workers)) as ex:
                futs = ex.map(
                    lambda i: decode(i, paths[i], size, preprocess, resize_mode), range(n)
                )
                for i, err in enumerate(futs):
                    if err:
                        errors.append((i, err))
                    bar.update(1)
        finally:
            cv2.setNumThreads(cv_threads)
        bar.close()
        arr.flush()
        del arr
        if errors:
            lines = "\n  ".join(e for _, e in sorted(errors)[:10])
            raise ImageReadError(
                f"{len(errors)} image(s) could not be decoded while building "
                f"the cache (validate the manifest first):\n  {lines}"
            )
    seconds = time.perf_counter() - t0
    meta = {
        "version": CACHE_VERSION,
        "key": key,
        "dataset": dataset,
        "n": n,
        "size": size,
        "preprocess": preprocess,
        "resize_mode": resize_mode,
        "build_seconds": round(seconds, 2),
        "images_per_second": round(n / seconds, 1),
        "workers": workers,
        "relpaths": df["relpath"].astype(str).tolist(),
    }
    write_json(meta_path, meta)
    return ImageCache.open(meta_path)


def channel_stats(cache: ImageCache, rows, chunk: int = 512) -> tuple[tuple, tuple]:
    """Per-channel ``(mean, std)`` on the 0-1 scale of the cached images at ``rows`` (the
    featurewise normalisation of a training set), read in chunks of ``chunk`` images."""
    rows = np.asarray(rows)
    if rows.size == 0:
        raise ValueError("no images to compute channel statistics on")
    s1 = np.zeros(3)
    s2 = np.zeros(3)
    n = 0
    for i in range(0, len(rows), chunk):
        x = cache.images[np.sort(rows[i : i + chunk])].reshape(-1, 3).astype(np.float64) / 255.0
        s1 += x.sum(0)
        s2 += np.square(x).sum(0)
        n += len(x)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class CachedImageDataset:
    """A map-style torch dataset over an :class:`ImageCache` (usable by ``DataLoader``).

    Returns ``(image, label)`` with ``image`` a ``uint8`` CHW tensor, so augmentation runs
    on uint8 and the float conversion and normalisation happen once per batch on the
    device (see :mod:`skinhelpers.train.augment`). ``transform`` is applied to the tensor.
    """

    def __init__(
        self, cache: ImageCache, df: pd.DataFrame, transform=None, label_column: str = "label_idx"
    ):
        self.cache = cache
        self.rows = cache.rows_for(df)
        self.labels = df[label_column].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        import torch  # here, not at the top: chapters 01-04 read the cache without torch

        img = torch.from_numpy(np.array(self.cache.images[self.rows[i]])).permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])
