"""Grad-CAM: target layers, that the map points where the evidence is, lesion masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from skinhelpers.data.imaging import load_for_model
from skinhelpers.evaluate import explain
from skinhelpers.model import factory as models


class PatchNet(nn.Module):
    """Class 1 evidence = brightness of channel 0 (after a 3x3 conv stage), pooled."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].bias.zero_()
            self.features[0].weight[:, 0, 1, 1] = 1.0  # identity on channel 0
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_cam_points_at_the_evidence():
    model = PatchNet().eval()
    x = torch.zeros(2, 3, 32, 32)
    x[0, 0, 2:12, 3:13] = 1.0  # bright patch top left
    x[1, 0, 20:30, 18:28] = 1.0  # bright patch bottom right
    layer = explain.find_target_layer(model, 32)
    assert layer is model.features  # the last spatial map (the ReLU's container)
    cams = explain.grad_cam(model, x, targets=[1, 1], target_layer=layer)
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    for i, (ys, xs) in enumerate([(slice(2, 12), slice(3, 13)), (slice(20, 30), slice(18, 28))]):
        mask = np.zeros((32, 32), bool)
        mask[ys, xs] = True
        r = explain.cam_in_lesion(cams[i], mask)
        assert r["cam_inside"] > 0.9
        assert r["ratio"] > 5
    # the map follows the patch, it is not a fixed pattern
    assert np.argmax(cams[0].sum(1)) < 16 < np.argmax(cams[1].sum(1))


def test_cam_in_lesion_arithmetic():
    cam = np.zeros((4, 4))
    cam[0, :2] = 1.0
    cam[3, 3] = 2.0
    mask = np.zeros((4, 4), bool)
    mask[0] = True
    r = explain.cam_in_lesion(cam, mask)
    assert r["cam_inside"] == pytest.approx(0.5)
    assert r["lesion_area"] == pytest.approx(0.25)
    assert r["ratio"] == pytest.approx(2.0)
    assert np.isnan(explain.cam_in_lesion(np.zeros((4, 4)), mask)["cam_inside"])
    with pytest.raises(ValueError, match="differ in shape"):
        explain.cam_in_lesion(cam, mask[:2])


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "efficientnet_lite0"])
def test_grad_cam_on_the_suite_models(arch):
    torch.manual_seed(0)
    m = models.build_model(arch, 3, pretrained=False).eval()
    layer = explain.find_target_layer(m, 64)
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
    cams = explain.grad_cam(m, x, targets=[0, 2])
    assert cams.shape == (2, 64, 64)
    assert np.isfinite(cams).all() and cams.max() <= 1 + 1e-6
    assert explain.layer_name(m, layer) != "?"
    fmap = explain.layer_output_shape(m, layer, 64)
    assert len(fmap) == 4 and fmap[0] == 1 and 1 < fmap[-1] <= 64
    assert all(p.grad is None for p in m.parameters())  # no gradients left behind


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_ham_masks_line_up_with_the_cached_image(ham_manifest, mode):
    """Lesions are darker than the skin around them: with the mask in the same geometry
    as the image, pixels inside must be darker for (nearly) every image."""
    rows = ham_manifest[ham_manifest["mask_path"].notna()].sample(24, random_state=0)
    darker, shifted = 0, 0
    for _, r in rows.iterrows():
        img = load_for_model(r["path"], 64, "none", mode).mean(2)
        mask = explain.load_mask(r["mask_path"], 64, mode)
        assert mask.shape == (64, 64) and mask.dtype == bool
        if mask.all() or not mask.any():
            continue
        darker += img[mask].mean() < img[~mask].mean()
        wrong = np.roll(mask, 20, axis=1)  # a misaligned mask should do worse
        shifted += img[wrong].mean() < img[~wrong].mean()
    assert darker >= 20
    assert darker > shifted


def test_lesion_attention_table_and_gallery(ham_manifest, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    rows = ham_manifest[ham_manifest["mask_path"].notna()].head(3).reset_index(drop=True)
    imgs = np.stack([load_for_model(p, 48, "none", "squash") for p in rows["path"]])
    m = models.build_model("small_cnn", 7, pretrained=False).eval()
    cams = explain.cams_for_images(m, imgs, m.mean, m.std, targets=[4, 4, 4])
    rows.loc[1, "mask_path"] = None
    t = explain.lesion_attention(rows, cams, 48, "squash")
    assert np.isnan(t.loc[1, "cam_inside"]) and t["cam_inside"].notna().sum() == 2
    assert ((t["cam_inside"].dropna() >= 0) & (t["cam_inside"].dropna() <= 1)).all()
    masks = [explain.load_mask(p, 48) if isinstance(p, str) else None for p in rows["mask_path"]]
    fig = explain.plot_cam_gallery(list(imgs), list(cams), ["a", "b", "c"], masks, ncols=2)
    fig.savefig(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 5000
    pred = pd.DataFrame({"label": ["a", "a", "b", "b"], "correct": [True, False, True, True]})
    sel = explain.select_cases(pred, ["a", "b"], per_class=1)
    assert list(sel["case"]) == ["correct", "wrong", "correct"]
