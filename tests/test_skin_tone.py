"""Skin tone (ITA) on images whose skin colour is set by hand, and on real HAM10000."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skinhelpers.explore import skin_tone


def _image(L, a, b, lesion_rgb=(60, 30, 20), size=96, half=20):
    """A skin of CIELAB (L*, a*, b*) with a dark lesion in the middle, and its mask."""
    lab = np.zeros((size, size, 3), np.uint8)
    lab[:] = (round(L * 255 / 100), round(a + 128), round(b + 128))
    img = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    mask = np.zeros((size, size), bool)
    c = size // 2
    mask[c - half : c + half, c - half : c + half] = True
    img[mask] = lesion_rgb
    return img, mask


@pytest.mark.parametrize(
    "L,b,band",
    [
        (80, 12, "very light"),
        (66, 16, "light"),
        (60, 15, "intermediate"),
        (55, 18, "tan"),
        (45, 20, "brown"),
        (25, 15, "dark"),
    ],
)
def test_ita_of_a_hand_set_skin_colour(L, b, band):
    img, mask = _image(L, 10, b)
    expect = np.degrees(np.arctan((L - 50) / b))
    for lesion in (mask, None):  # outside the mask, or the border ring
        out = skin_tone.image_ita(img, lesion)
        assert out["ita"] == pytest.approx(expect, abs=2.5)  # 8-bit LAB rounding
        assert skin_tone.ita_band([out["ita"]]).iloc[0] == band


def test_the_lesion_does_not_count_as_skin():
    img, mask = _image(75, 8, 14, (150, 90, 60), half=36)  # a lesion over half the image
    with_mask = skin_tone.image_ita(img, mask)["ita"]
    everything = skin_tone.image_ita(img, np.zeros_like(mask))["ita"]  # lesion counted as skin
    assert with_mask > everything


def test_a_bluish_cast_is_the_limit_not_a_wrap_around():
    assert skin_tone.ita_of_lab(70, -5) == pytest.approx(90, abs=1e-3)
    assert skin_tone.ita_of_lab(30, -5) == pytest.approx(-90, abs=1e-3)
    assert -90 < float(skin_tone.ita_of_lab(50.5, 0.5)) < 90


def test_real_ham10000_images_are_mostly_light(ham_manifest):
    sub = ham_manifest.sample(200, random_state=0)
    t = skin_tone.ita_table(sub, show_progress=False)
    assert t["ita"].notna().mean() > 0.95
    assert (t["skin_from"] == "outside the lesion mask").all()  # HAM10000 ships masks
    counts = skin_tone.band_counts(t)["images"]
    light = counts[["very light", "light", "intermediate"]].sum()
    assert light > counts[["brown", "dark"]].sum()
