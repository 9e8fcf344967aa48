"""The out-of-distribution guard (skinhelpers.evaluate.ood) on real images: HAM10000 as the
in-distribution set, the photos that ship inside scikit-image and matplotlib as the far
out-of-distribution set, with the ImageNet-pretrained EfficientNet-Lite0 backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skinhelpers.data.imaging import load_for_model
from skinhelpers.evaluate import ood
from skinhelpers.model.factory import build_model

SIZE = 64


@pytest.fixture(scope="module")
def feats(ham_manifest):
    sub = ham_manifest.sample(420, random_state=0).reset_index(drop=True)
    x = torch.from_numpy(np.stack([load_for_model(p, SIZE) for p in sub["path"]]))
    model = build_model("efficientnet_lite0", 7, pretrained=True)
    f, lg = ood.features_and_logits(
        model, x.permute(0, 3, 1, 2).contiguous(), model.mean, model.std
    )
    photos = ood.package_photos(crops_per_photo=2)
    xo = ood.images_to_batch([im for _, im in photos], SIZE)
    fo, lo = ood.features_and_logits(model, xo, model.mean, model.std)
    return f, lg, sub["label_idx"].to_numpy(), fo, lo, len(photos)


def test_photos_that_ship_with_packages_are_real_and_varied():
    photos = ood.package_photos(crops_per_photo=1)
    names = {n.split("/")[0] for n, _ in photos}
    assert {"astronaut", "chelsea", "coffee", "grace_hopper"} <= names
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for _, im in photos)
    # the 2 x 2 tiles of a photo cover it exactly
    whole = dict(p for p in photos if "/" not in p[0])["astronaut"]
    tiles = [im for n, im in photos if n.startswith("astronaut/tile")]
    assert (
        len(tiles) == 4
        and sum(t.shape[0] * t.shape[1] for t in tiles) == whole.shape[0] * whole.shape[1]
    )
    assert np.array_equal(tiles[0], whole[: whole.shape[0] // 2, : whole.shape[1] // 2])


def test_guard_passes_validation_at_its_rate_and_flags_photos(feats):
    f, lg, y, fo, lo, n_photos = feats
    guard = ood.fit_guard(f[:300], y[:300], f[300:], lg[300:], fo, lo, pass_rate=0.95)
    val_scores = guard.score(f[300:], lg[300:])
    passed = guard.in_distribution(val_scores).mean()
    assert 0.93 <= passed <= 0.97  # the threshold is validation's 95% quantile
    flagged = (~guard.in_distribution(guard.score(fo, lo))).mean()
    assert flagged >= 0.7, guard.measured
    assert guard.measured["auroc_vs_far_ood"][guard.method] >= 0.9
    assert guard.measured["n_far_ood"] == n_photos
    # the stored state gives the same scores back
    again = ood.OODGuard.from_state(guard.state())
    assert np.allclose(again.score(fo, lo), guard.score(fo, lo), rtol=1e-5)
    assert again.threshold == guard.threshold and again.method == guard.method


def test_energy_is_minus_logsumexp():
    logits = np.array([[2.0, 0.0, -1.0], [10.0, 10.0, 10.0]])
    expect = -np.log(np.exp(logits).sum(1))
    assert np.allclose(ood.energy_score(logits), expect)


def test_guard_refuses_a_bad_pass_rate(feats):
    f, lg, y, fo, lo, _ = feats
    with pytest.raises(ValueError, match="pass_rate"):
        ood.fit_guard(f[:50], y[:50], f[50:60], lg[50:60], fo, lo, pass_rate=1.0)
