"""The ``demo`` dataset: SYNTHETIC dermoscopy-like images, generated offline.

Deterministic from a seed, laid out like the Kaggle HAM10000 release (so the HAM10000
loader reads it), with HAM10000-shaped metadata: several images per lesion, age, sex,
localization, dx_type, and lesion masks. Classes differ in colour, border irregularity,
texture and structures (vessels, blue-grey veil, central white patch, lobules), and the
metadata carry the same kind of shortcuts the real data has (dx_type depends on the
diagnosis, age on the class), so every notebook, the leakage checks included, has
something real to show. Two byte-identical image pairs are planted, as in HAM10000, and
one re-scaled, re-encoded copy of a melanoma filed as a nevus under another lesion id (a
cross-lesion near-duplicate with a conflicting label, for the leakage chapter).

Nothing here is medical data. Every figure made from it is stamped SYNTHETIC.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from filelock import FileLock

from skinhelpers.data.registry import HAM_CLASSES

log = logging.getLogger(__name__)

DEMO_VERSION = 2
# images per class (HAM-like imbalance, scaled down); lesions get 1-3 images each
DEFAULT_COUNTS = {"nv": 210, "mel": 80, "bkl": 80, "bcc": 50, "akiec": 40, "vasc": 30, "df": 30}
WIDTH, HEIGHT = 200, 150
LOCALIZATIONS = [
    "back",
    "lower extremity",
    "trunk",
    "upper extremity",
    "abdomen",
    "face",
    "chest",
    "foot",
    "scalp",
    "neck",
    "hand",
]

# class look: base RGB colour, colour spread, border irregularity, size, structures
STYLE = {
    "nv": dict(rgb=(130, 85, 55), spread=18, irregular=0.05, radius=(24, 40)),
    "mel": dict(rgb=(70, 45, 35), spread=40, irregular=0.22, radius=(30, 52)),
    "bkl": dict(rgb=(165, 125, 85), spread=20, irregular=0.12, radius=(26, 46)),
    "bcc": dict(rgb=(205, 150, 145), spread=15, irregular=0.10, radius=(20, 38)),
    "akiec": dict(rgb=(200, 120, 110), spread=20, irregular=0.14, radius=(22, 40)),
    "vasc": dict(rgb=(165, 40, 70), spread=20, irregular=0.08, radius=(14, 28)),
    "df": dict(rgb=(150, 105, 80), spread=12, irregular=0.06, radius=(16, 28)),
}
# metadata tendencies (a real-data-like shortcut risk): age mean, share of histology
AGE = {"nv": 45, "mel": 62, "bkl": 60, "bcc": 66, "akiec": 68, "vasc": 50, "df": 48}
DX_TYPES = {
    "nv": {"follow_up": 0.5, "histo": 0.3, "consensus": 0.2},
    "mel": {"histo": 1.0},
    "bkl": {"histo": 0.5, "consensus": 0.3, "confocal": 0.2},
    "bcc": {"histo": 1.0},
    "akiec": {"histo": 1.0},
    "vasc": {"consensus": 0.6, "histo": 0.4},
    "df": {"histo": 0.5, "consensus": 0.5},
}


def _smooth_noise(rng, h, w, scale):
    n = rng.standard_normal((max(2, h // scale), max(2, w // scale))).astype(np.float32)
    n = cv2.resize(n, (w, h), interpolation=cv2.INTER_CUBIC)
    return n / (np.abs(n).max() + 1e-6)


def _lesion(rng, dx, size):
    """One lesion at canvas ``size`` x ``size``: RGB float image, alpha mask in [0, 1]."""
    st = STYLE[dx]
    c = size / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = np.arctan2(yy - c, xx - c)
    r0 = rng.uniform(*st["radius"]) * size / 160
    elong = rng.uniform(0.8, 1.2)
    r = r0 * (1 + 0 * theta)
    for k in range(2, 9):
        r += (
            r0
            * st["irregular"]
            * rng.uniform(0, 1)
            / math.sqrt(k - 1)
            * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        )
    if dx == "mel":  # asymmetry
        r += r0 * 0.25 * np.cos(theta + rng.uniform(0, 2 * np.pi))
    dist_e = np.hypot((yy - c) * elong, (xx - c) / elong)
    alpha = np.clip((r - dist_e) / (2.0 + r0 * 0.08), 0, 1)
    base = (
        np.array(st["rgb"], np.float32)
        + rng.normal(0, st["spread"] * 0.4)
        + rng.normal(0, 5, 3).astype(np.float32)
    )
    tex = _smooth_noise(rng, size, size, 6)[..., None]
    img = (base + tex * st["spread"]).astype(np.float32)
    inner = np.clip(1 - dist_e / (r + 1e-6), 0, 1)[..., None]
    if dx == "nv":  # a darker centre, regular network-like dots
        img -= 25 * inner
        net = (np.sin(xx * 0.9) * np.sin(yy * 0.9) > 0.6)[..., None]
        img -= 12 * net
    elif dx == "mel":  # multicolour: black blotches, blue-grey veil, regression
        blot = (_smooth_noise(rng, size, size, 10) > 0.35)[..., None]
        img = np.where(blot, img * 0.45, img)
        veil = (_smooth_noise(rng, size, size, 14) > 0.4)[..., None]
        img = np.where(veil, 0.5 * img + 0.5 * np.array([95, 110, 140], np.float32), img)
        for _ in range(rng.integers(8, 25)):
            y, x = rng.normal(c, r0 / 2, 2)
            cv2.circle(img, (int(x), int(y)), int(rng.integers(1, 3)), (25, 20, 20), -1)
    elif dx == "bkl":  # waxy, milia-like cysts and comedo-like openings
        for _ in range(rng.integers(10, 30)):
            y, x = rng.normal(c, r0 / 2, 2)
            col = (235, 225, 200) if rng.random() < 0.5 else (60, 40, 30)
            cv2.circle(img, (int(x), int(y)), int(rng.integers(1, 3)), col, -1)
    elif dx == "bcc":  # arborizing red vessels on a pink translucent base
        for _ in range(rng.integers(3, 7)):
            pts = [rng.normal(c, r0 / 2.5, 2)]
            for _ in range(6):
                pts.append(pts[-1] + rng.normal(0, r0 / 4, 2))
            cv2.polylines(
                img, [np.array(pts, np.int32)], False, (170, 20, 35), int(rng.integers(1, 3))
            )
    elif dx == "akiec":  # rough surface with white scale
        scale = (_smooth_noise(rng, size, size, 3) > 0.55)[..., None]
        img = np.where(scale, 0.4 * img + 0.6 * 240, img)
    elif dx == "vasc":  # red-purple lagoons
        for _ in range(rng.integers(4, 9)):
            y, x = rng.normal(c, r0 / 3, 2)
            cv2.circle(
                img,
                (int(x), int(y)),
                int(r0 * rng.uniform(0.2, 0.4)),
                (int(120 + rng.integers(0, 60)), 10, 50),
                -1,
            )
    elif dx == "df":  # central white scar-like patch, brown ring
        w = np.clip(1 - dist_e / (0.45 * r0), 0, 1)[..., None]
        img = img * (1 - 0.8 * w) + 235 * 0.8 * w
    return np.clip(img, 0, 255), alpha


def _render(rng, lesion_rgb, lesion_alpha, skin, view):
    """Place a lesion on skin with a view transform, add hairs and vignetting."""
    h, w = HEIGHT, WIDTH
    size = lesion_rgb.shape[0]
    m = cv2.getRotationMatrix2D((size / 2, size / 2), view["angle"], view["scale"])
    m[:, 2] += [w / 2 - size / 2 + view["dx"], h / 2 - size / 2 + view["dy"]]
    les = cv2.warpAffine(
        lesion_rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    a = cv2.warpAffine(lesion_alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    img = skin * (1 - a) + les * a
    mask = (a[..., 0] > 0.5).astype(np.uint8) * 255
    for _ in range(view["hairs"]):  # dark thin curved hairs
        p0 = rng.uniform([0, 0], [w, h])
        p1 = p0 + rng.normal(0, 60, 2)
        p2 = p1 + rng.normal(0, 60, 2)
        t = np.linspace(0, 1, 40)[:, None]
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.int32)
        cv2.polylines(img, [pts], False, (35, 25, 20), int(rng.integers(1, 3)), cv2.LINE_AA)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rr = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    vig = np.clip(1 - view["vignette"] * np.clip(rr - 0.75, 0, None) * 2.2, 0.05, 1)[..., None]
    img = img * vig * view["brightness"]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _choice(rng, probs: dict):
    keys = list(probs)
    return keys[rng.choice(len(keys), p=np.array(list(probs.values())) / sum(probs.values()))]


def generate_demo(
    root: str | os.PathLike, seed: int = 0, counts: dict[str, int] | None = None
) -> Path:
    """Write the demo dataset into ``root`` (HAM10000 layout). Returns ``root``."""
    counts = counts or DEFAULT_COUNTS
    unknown = set(counts) - set(HAM_CLASSES)
    if unknown:
        raise ValueError(f"unknown demo classes {sorted(unknown)}")
    root = Path(root)
    img_dir = root / "HAM10000_images_part_1"
    mask_dir = root / "HAM10000_segmentations_lesion_200x150"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence(seed)
    rows = []
    n_img = n_les = 0
    for dx in HAM_CLASSES:
        target = counts.get(dx, 0)
        made = 0
        while made < target:
            n_les += 1
            rng = np.random.default_rng(ss.spawn(1)[0])
            lesion_id = f"SYNL_{n_les:06d}"
            n_views = min(target - made, int(rng.choice([1, 1, 2, 2, 3])))
            sex = _choice(rng, {"male": 0.54, "female": 0.45, "unknown": 0.01})
            age = float(np.clip(round(rng.normal(AGE[dx], 12) / 5) * 5, 5, 85))
            loc = LOCALIZATIONS[int(rng.integers(len(LOCALIZATIONS)))]
            if dx in ("bcc", "akiec") and rng.random() < 0.5:
                loc = "face"
            dx_type = _choice(rng, DX_TYPES[dx])
            tone = rng.uniform(0.75, 1.05)
            skin_rgb = np.array([225, 175, 150], np.float32) * tone
            rgb, alpha = _lesion(rng, dx, 160)
            for _ in range(n_views):
                skin = skin_rgb + _smooth_noise(rng, HEIGHT, WIDTH, 25)[..., None] * 12
                skin = skin + rng.normal(0, 4, (HEIGHT, WIDTH, 3))
                view = {
                    "angle": rng.uniform(0, 360),
                    "scale": rng.uniform(0.85, 1.15),
                    "dx": rng.normal(0, 8),
                    "dy": rng.normal(0, 6),
                    "hairs": int(rng.integers(0, 9 if loc == "scalp" else 4)),
                    "vignette": rng.choice([0.0, 0.5, 1.0, 2.0]),
                    "brightness": rng.uniform(0.85, 1.1),
                }
                img, mask = _render(rng, rgb, alpha, skin, view)
                n_img += 1
                image_id = f"SYN_{n_img:07d}"
                cv2.imwrite(
                    str(img_dir / f"{image_id}.jpg"),
                    cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92],
                )
                cv2.imwrite(str(mask_dir / f"{image_id}_segmentation.png"), mask)
                rows.append(
                    {
                        "lesion_id": lesion_id,
                        "image_id": image_id,
                        "dx": dx,
                        "dx_type": dx_type,
                        "age": age,
                        "sex": sex,
                        "localization": loc,
                    }
                )
                made += 1
    # plant two byte-identical pairs under new ids, as in the real HAM10000
    for src in (rows[3], rows[len(rows) // 2]):
        n_img += 1
        image_id = f"SYN_{n_img:07d}"
        shutil.copyfile(img_dir / f"{src['image_id']}.jpg", img_dir / f"{image_id}.jpg")
        shutil.copyfile(
            mask_dir / f"{src['image_id']}_segmentation.png",
            mask_dir / f"{image_id}_segmentation.png",
        )
        rows.append({**src, "image_id": image_id})
    # and one near-duplicate across lesions: a melanoma, re-scaled and re-encoded, filed
    # as a nevus of another lesion (the kind of error the leakage chapter must find)
    src = next(r for r in rows if r["dx"] == "mel")
    n_img += 1
    n_les += 1
    image_id = f"SYN_{n_img:07d}"
    img = cv2.imread(str(img_dir / f"{src['image_id']}.jpg"))
    crop = img[3:-3, 4:-4]
    img = cv2.resize(crop, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(img_dir / f"{image_id}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    mask = cv2.imread(str(mask_dir / f"{src['image_id']}_segmentation.png"), 0)
    cv2.imwrite(
        str(mask_dir / f"{image_id}_segmentation.png"),
        cv2.resize(mask[3:-3, 4:-4], (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST),
    )
    rows.append(
        {
            **src,
            "image_id": image_id,
            "lesion_id": f"SYNL_{n_les:06d}",
            "dx": "nv",
            "dx_type": "follow_up",
        }
    )
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    (root / "SYNTHETIC.txt").write_text(
        "SYNTHETIC dermoscopy-like images made by skinhelpers.data.synthetic for demos and tests.\n"
        "Not medical data. Nothing learned from it says anything about real lesions.\n"
    )
    (root / ".demo.json").write_text(
        json.dumps({"version": DEMO_VERSION, "seed": seed, "counts": counts})
    )
    return root


def ensure_demo(root: str | os.PathLike, seed: int = 0) -> Path:
    """Generate the demo set into ``root`` unless the same version and seed is there.

    Generation goes to a temporary sibling folder that is renamed into place, so an
    interrupted run never leaves a half-made dataset behind; a lock file beside ``root``
    makes processes that ask at the same time (test workers, two notebooks) wait for the
    first one's dataset instead of racing to rename theirs onto it.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(root.with_name(f".{root.name}.lock")):
        return _ensure_demo_locked(root, seed)


def _ensure_demo_locked(root: Path, seed: int) -> Path:
    stamp = root / ".demo.json"
    replace_old = False
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("seed") != seed:
            raise ValueError(
                f"{root} holds a demo dataset made with {info}; use another "
                f"folder for seed {seed} (or delete it)"
            )
        if info.get("version") == DEMO_VERSION:
            return root
        replace_old = True  # made by an older generator: make it anew
    elif root.exists() and any(root.iterdir()):
        raise ValueError(
            f"{root} is not empty and holds no demo dataset; refusing to write into it"
        )
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate_demo(tmp, seed=seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replace_old:
        shutil.rmtree(root)
    elif root.exists():
        root.rmdir()
    os.replace(tmp, root)
    return root
