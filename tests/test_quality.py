"""Quality measures and the preprocessing methods behind notebook 02."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from skinhelpers.data import imaging
from skinhelpers.explore import quality

H, W = 150, 200
LINES = [((5, 10), (190, 140), 1), ((20, 140), (180, 5), 2), ((0, 60), (199, 80), 1)]


def skin_with_lesion(seed: int = 0) -> np.ndarray:
    """Smooth skin, a dark elliptical lesion in the middle, a little sensor noise."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), (210, 160, 140), np.float32) + rng.normal(0, 3, (H, W, 3))
    yy, xx = np.mgrid[0:H, 0:W]
    img[((yy - 75) / 30) ** 2 + ((xx - 100) / 40) ** 2 < 1] = (110, 70, 50)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    return np.clip(img, 0, 255).astype(np.uint8)


def with_hairs(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw dark thin lines; return the image and the mask of the drawn pixels."""
    out, mask = img.copy(), np.zeros(img.shape[:2], np.uint8)
    for p, q, t in LINES:
        cv2.line(out, p, q, (40, 30, 25), t, cv2.LINE_AA)
        cv2.line(mask, p, q, 255, t, cv2.LINE_AA)
    return out, mask


def with_vignette(img: np.ndarray, strength: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    rr = np.hypot((yy - H / 2) / (H / 2), (xx - W / 2) / (W / 2))
    v = np.clip(1 - strength * np.clip(rr - 0.8, 0, None), 0.02, 1)[..., None]
    return (img * v).astype(np.uint8)


# ----------------------------------------------------------------------------- measures


def test_blur_lowers_laplacian_variance():
    img = skin_with_lesion()
    img, _ = with_hairs(img)  # some edges to be sharp about
    sharp = quality.measure_image(img)["laplacian_var"]
    blurred = quality.measure_image(cv2.GaussianBlur(img, (9, 9), 3))["laplacian_var"]
    assert blurred < 0.5 * sharp


def test_hair_score_rises_with_drawn_lines():
    clean = skin_with_lesion()
    hairy, _ = with_hairs(clean)
    a, b = quality.measure_image(clean)["hair"], quality.measure_image(hairy)["hair"]
    assert a < 0.005
    assert b > 0.03


def test_brightness_and_contrast_move_the_right_way():
    img = skin_with_lesion()
    base = quality.measure_image(img)
    dark = quality.measure_image((img * 0.5).astype(np.uint8))
    flat = quality.measure_image(
        ((img.astype(np.float32) - img.mean()) * 0.3 + img.mean()).astype(np.uint8)
    )
    assert dark["brightness"] < base["brightness"] - 0.15
    assert flat["contrast"] < 0.5 * base["contrast"]
    assert 0 <= dark["brightness"] <= 1 and 0 <= base["contrast"] <= 1


def test_vignetting_detects_dark_corners():
    img = skin_with_lesion()
    plain = quality.measure_image(img)["vignetting"]
    ringed = quality.measure_image(with_vignette(img))["vignetting"]
    assert plain < 0.1
    assert ringed > 0.6


def test_size_is_reported_from_the_original():
    img = np.zeros((37, 91, 3), np.uint8) + 120
    m = quality.measure_image(img)
    assert (m["width"], m["height"]) == (91, 37)
    assert m["aspect"] == pytest.approx(91 / 37, rel=1e-3)


def test_measure_image_rejects_wrong_input():
    with pytest.raises(ValueError, match="RGB uint8"):
        quality.measure_image(np.zeros((10, 10), np.uint8))


def test_measure_file_reports_broken_files_instead_of_raising(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = quality.measure_file(str(bad))
    assert out["error"] and "broken.jpg" in out["error"]
    assert np.isnan(out["brightness"])


def test_measure_all_on_demo(demo_manifest):
    df = demo_manifest.iloc[:60]
    q = quality.measure_all(df, workers=2, show_progress=False)
    assert list(q["relpath"]) == list(df["relpath"])
    assert q["error"].isna().all()
    for m in quality.MEASURES:
        assert q[m].notna().all()
    assert (q["width"] == 200).all() and (q["height"] == 150).all()


def test_measure_all_needs_paths(demo_manifest):
    df = demo_manifest.iloc[:3].copy()
    df.loc[df.index[0], "path"] = None
    with pytest.raises(ValueError, match="path"):
        quality.measure_all(df, show_progress=False)


# ----------------------------------------------------------------------------- outliers


def test_flag_outliers_finds_the_planted_one():
    from scipy.stats import norm

    n = 200
    rng = np.random.default_rng(0)
    z = norm.ppf((np.arange(n) + 0.5) / n)  # a well-behaved bulk: |z| < 3 everywhere
    shuffle = lambda x: x[rng.permutation(n)]  # noqa: E731
    q = pd.DataFrame(
        {
            "relpath": [f"f{i}" for i in range(n)],
            "brightness": shuffle(0.6 + 0.03 * z),
            "contrast": shuffle(0.12 + 0.01 * z),
            "laplacian_var": shuffle(np.exp(4 + 0.2 * z)),
            "hair": shuffle(0.01 + 0.003 * z),
            "vignetting": shuffle(0.05 + 0.02 * z),
        }
    )
    q.loc[7, "laplacian_var"] = 0.5  # blurred
    q.loc[9, "hair"] = 0.6  # hairy
    q.loc[11, "brightness"] = 0.05  # black
    q.loc[13, "contrast"] = 0.5  # high contrast is not a bad tail: not flagged
    f = quality.flag_outliers(q, z=3.5)
    assert list(np.flatnonzero(f["laplacian_var_outlier"])) == [7]
    assert list(np.flatnonzero(f["hair_outlier"])) == [9]
    assert list(np.flatnonzero(f["brightness_outlier"])) == [11]
    assert not f["contrast_outlier"].iloc[13]
    ex = quality.extremes(q, "hair", 3)
    assert ex["relpath"].iloc[0] == "f9"
    assert quality.extremes(q, "laplacian_var", 1)["relpath"].iloc[0] == "f7"
    both = quality.extremes(q, "brightness", 4)
    assert "f11" in set(both["relpath"]) and len(both) == 4
    s = quality.outlier_summary(q)
    assert s.set_index("measure").loc["hair", "outliers"] == 1


# ----------------------------------------------------------------------------- hair removal


def test_hair_removal_changes_only_pixels_near_the_hairs():
    clean = skin_with_lesion()
    hairy, lines = with_hairs(clean)
    out = imaging.hair_removal(hairy)
    changed = np.abs(out.astype(int) - hairy.astype(int)).max(axis=2) > 10
    near = cv2.dilate(lines, np.ones((7, 7), np.uint8)) > 0
    assert changed.sum() > 0.7 * (lines > 0).sum()  # most hair pixels were repainted
    assert (changed & ~near).sum() <= 0.01 * changed.sum()  # (almost) nothing else
    # the repainted hair looks like the skin/lesion underneath again
    err_before = np.abs(hairy.astype(int) - clean.astype(int))[lines > 0].mean()
    err_after = np.abs(out.astype(int) - clean.astype(int))[lines > 0].mean()
    assert err_after < 0.2 * err_before


def test_hair_removal_leaves_a_hairless_image_alone():
    clean = skin_with_lesion()
    assert np.array_equal(imaging.hair_removal(clean), clean)


def test_hair_mask_ignores_pigment_network_dots_and_lens_ring():
    img = skin_with_lesion()
    for y in range(50, 100, 5):  # a dotted network inside the lesion
        for x in range(70, 130, 5):
            cv2.circle(img, (x, y), 1, (40, 25, 20), -1)
    assert (imaging.hair_mask(img) > 0).mean() < 0.002
    ring = with_vignette(skin_with_lesion(), strength=4.0)
    assert (imaging.hair_mask(ring) > 0).mean() < 0.002
    # without the length filter the dots do show up: the filter is doing the work
    assert (imaging.hair_mask(img, min_length_frac=0) > 0).mean() > 0.005


def test_hair_removal_lowers_the_hair_score_on_real_hairy_images(ham_manifest):
    df = ham_manifest.iloc[:200]
    q = quality.measure_all(df, workers=2, show_progress=False)
    hairy = q.nlargest(5, "hair")
    paths = dict(zip(df["relpath"], df["path"]))
    for rp, before in zip(hairy["relpath"], hairy["hair"]):
        img = imaging.read_rgb(paths[rp])
        after = quality.measure_image(imaging.hair_removal(img))["hair"]
        assert before > 0.05
        assert after < 0.5 * before, rp


def test_preprocessors_keep_shape_and_dtype():
    img = skin_with_lesion()
    for name in ("clahe", "shades_of_gray", "hair_removal"):
        out = imaging.PREPROCESSORS[name](img)
        assert out.shape == img.shape and out.dtype == np.uint8, name
    # Shades of Gray removes a colour cast: a blue-tinted copy comes out close to the original
    tinted = np.clip(img.astype(np.float32) * (0.8, 0.9, 1.25), 0, 255).astype(np.uint8)
    a, b = imaging.shades_of_gray(img), imaging.shades_of_gray(tinted)
    assert (
        np.abs(a.astype(int) - b.astype(int)).mean()
        < 0.4 * np.abs(img.astype(int) - tinted.astype(int)).mean()
    )


# ----------------------------------------------------------------------------- cost


def test_measure_cost_on_real_images(demo_manifest):
    paths = demo_manifest["path"].iloc[:12].tolist()
    cost = quality.measure_cost(
        paths, {"none": ("none", "squash"), "hair": ("hair_removal", "squash")}, 64
    )
    assert list(cost["method"]) == ["decode (read_rgb)", "none", "hair"]
    assert (cost["images"] == 12).all()
    assert (cost["images_per_s"] > 0).all()
    # hair removal (blackhat + inpainting) is far slower than a plain resize
    per = cost.set_index("method")["ms_per_image"]
    assert per["hair"] > per["none"]
    with pytest.raises(ValueError, match="unknown preprocessing"):
        quality.measure_cost(paths[:1], {"x": ("sharpen", "squash")}, 64)
    assert quality.cpu_count() >= 1


def test_plots_return_figures(demo_manifest):
    import matplotlib.pyplot as plt

    df = demo_manifest.iloc[:30]
    q = quality.measure_all(df, workers=1, show_progress=False)
    for fig in (
        quality.plot_measure_hists(q),
        quality.plot_outlier_gallery(q, df, k=3),
        quality.plot_before_after(
            df["path"].iloc[:2].tolist(), {"hair": ("hair_removal", "squash")}, 32
        ),
    ):
        assert len(fig.axes) > 1
        plt.close(fig)
