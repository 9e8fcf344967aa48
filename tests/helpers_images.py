"""Small image files for bad-input tests (made on the fly, never committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def rgb_array(h=40, w=50, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (120, 60, 30)
    return a


def write_jpg(path: Path, seed=0, h=40, w=50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb_array(h, w, seed)).save(path, quality=95)
    return path


def write_mode(path: Path, mode: str, seed=0) -> Path:
    """Write an image in an odd mode: L, RGBA, CMYK (JPEG), I;16 (PNG), P."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = rgb_array(seed=seed)
    im = Image.fromarray(a)
    if mode == "I;16":
        g = np.asarray(im.convert("L")).astype(np.uint16) * 257
        Image.fromarray(g).save(path)  # uint16 -> mode I;16
    else:
        im.convert(mode).save(path)
    return path


def write_truncated(path: Path, seed=0) -> Path:
    write_jpg(path, seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def contents_under_several_labels(root: Path) -> dict[str, set[str]]:
    """Straight from the files of a class-per-folder tree (``.../<class>/<file>``), with
    hashlib and no skinhelpers code: content hash -> the class folders holding it, for
    the contents filed under two or more classes (an independent count of label conflicts)."""
    import hashlib
    from collections import defaultdict

    by = defaultdict(set)
    for p in Path(root).rglob("*.jpg"):
        by[hashlib.sha1(p.read_bytes()).hexdigest()].add(p.parent.name)
    return {h: labels for h, labels in by.items() if len(labels) > 1}
