"""Images at their own aspect (HAM10000's 4:3) instead of squashed to a square.

``image_size`` may be ``[height, width]`` everywhere a model input size travels: the
image cache, the augmentation, the TTA views, the checkpoint, prediction, the ONNX export
and Grad-CAM. Real HAM10000 images where the test needs pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from short_checkpoint import pick_images, train_short_checkpoint

from skinhelpers.__main__ import main as cli
from skinhelpers.data import cache as C
from skinhelpers.data.imaging import (
    canonical_size,
    fit_to_size,
    image_shape,
    load_for_model,
    model_size,
    read_rgb,
    size_label,
)
from skinhelpers.evaluate import explain
from skinhelpers.evaluate.predict import predict_images
from skinhelpers.model.checkpoints import load_checkpoint, model_from_checkpoint
from skinhelpers.model.inference import (
    SHAPE_KEEPING_VIEWS,
    apply_view,
    predict_batch,
    predict_loader,
    views_for_shape,
)
from skinhelpers.train.augment import RandomRot90, eval_transform, train_transform
from skinhelpers.train.batch_augment import BatchAugment

NATIVE = [150, 200]  # HAM10000's own 200x150, as [height, width]


def test_sizes_parse_and_bad_sizes_are_refused():
    assert image_shape(160) == (160, 160) and image_shape([150, 200]) == (150, 200)
    assert image_shape((120, 160)) == (120, 160)
    assert canonical_size([64, 64]) == 64 and canonical_size((150, 200)) == [150, 200]
    assert model_size(200, 150) == [150, 200] and model_size(160) == 160
    assert model_size(160, 160) == 160
    assert size_label(160) == "160 px" and size_label([150, 200]) == "200x150 px"
    for bad in (0, 7, [150], [150, 200, 3], "160", [1.5, 2], True, [True, 64]):
        with pytest.raises(ValueError, match="image size"):
            image_shape(bad)
    for w, h in ((200, -1), (200.0, 150), (200, "150")):
        with pytest.raises(ValueError, match="image_size|image_height"):
            model_size(w, h)


def test_native_size_keeps_every_pixel_and_turns_portraits(ham_manifest):
    path = ham_manifest.path.iloc[0]
    img = read_rgb(path)
    assert img.shape[:2] == (150, 200)
    assert np.array_equal(load_for_model(path, NATIVE), img)  # no resampling at all
    portrait = np.ascontiguousarray(np.rot90(img))
    for mode in ("squash", "crop", "pad"):
        out = fit_to_size(portrait, NATIVE, mode)
        assert out.shape == (150, 200, 3)
        # turned back to landscape, not squashed: the same pixels up to the turn
        assert np.array_equal(out, img) or np.array_equal(out, img[::-1, ::-1])
    # a square target never turns anything
    assert fit_to_size(portrait, 64).shape == (64, 64, 3)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_crop_and_pad_reach_any_aspect(mode):
    img = np.zeros((150, 200, 3), np.uint8)
    img[:, 100:] = 255  # right half white
    out = fit_to_size(img, [60, 120], mode)  # 2:1, wider than the image
    assert out.shape == (60, 120, 3)
    if mode == "crop":  # covers the width, crops top and bottom: halves stay halves
        assert out[:, :55].max() == 0 and out[:, 65:].min() == 255
    else:  # fits the height, reflected borders left and right
        assert out[:, 30:55].max() == 0 and out[:, 65:90].min() == 255
    assert fit_to_size(np.zeros((150, 200), np.uint8), [60, 120], mode).shape == (60, 120)


def test_cache_stores_height_by_width(tmp_path, ham_manifest):
    df = ham_manifest.iloc[::1000].reset_index(drop=True)
    df.attrs = dict(ham_manifest.attrs)
    c = C.build_cache(df, size=[48, 64], cache_dir=tmp_path, workers=1, show_progress=False)
    assert c.images.shape == (len(df), 48, 64, 3) and c.size == [48, 64]
    assert c.path.name.startswith("64x48px-")
    want = load_for_model(df.path[3], [48, 64])
    assert np.array_equal(c.images[3], want)
    again = C.build_cache(df, size=(48, 64), cache_dir=tmp_path, show_progress=False)
    assert again.path == c.path  # a tuple and a list are the same size
    square = C.build_cache(df, size=48, cache_dir=tmp_path, workers=1, show_progress=False)
    assert square.path != c.path and square.images.shape[1:] == (48, 48, 3)
    with pytest.raises(ValueError, match="image size"):
        C.build_cache(df, size=[48], cache_dir=tmp_path, show_progress=False)


@pytest.mark.parametrize("preset", ["basic", "strong", "autoaugment", "randaugment"])
def test_augmentation_keeps_a_non_square_shape(preset):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    tf = train_transform(preset, (30, 40))
    for _ in range(12):
        assert tuple(tf(x).shape) == (3, 30, 40)
    assert tuple(eval_transform([30, 40])(x).shape) == (3, 30, 40)
    assert tuple(train_transform(preset, [30, 40])(torch.zeros(3, 60, 60).byte()).shape) == (
        3,
        30,
        40,
    )


def test_right_angle_turns_of_non_square_images_are_0_or_180_degrees():
    torch.manual_seed(0)
    x = torch.arange(3 * 4 * 6, dtype=torch.uint8).view(3, 4, 6)
    seen = set()
    rot = RandomRot90()
    for _ in range(40):
        y = rot(x)
        assert y.shape == x.shape
        if torch.equal(y, x):
            seen.add(0)
        elif torch.equal(y, x.flip(-1).flip(-2)):
            seen.add(180)
        else:
            pytest.fail("a non-square image was turned by 90 degrees or changed otherwise")
    assert seen == {0, 180}
    sq = torch.arange(3 * 5 * 5, dtype=torch.uint8).view(3, 5, 5)
    kinds = {int(torch.equal(rot(sq), sq.rot90(1, (-2, -1)))) for _ in range(40)}
    assert kinds == {0, 1}  # squares still get the quarter turns
    b = BatchAugment("basic")(x[None].repeat(16, 1, 1, 1))
    assert b.shape == (16, 3, 4, 6) and b.dtype == torch.uint8


def test_tta_on_non_square_images_uses_the_shape_keeping_views():
    assert views_for_shape(["identity", "rot90", "hflip"], 30, 40) == ["identity", "hflip"]
    assert views_for_shape(["rot90"], 40, 40) == ["rot90"]
    with pytest.raises(ValueError, match="turn the image by 90 degrees"):
        views_for_shape(["rot90", "transpose"], 30, 40)
    with pytest.raises(ValueError, match="not square"):
        apply_view(torch.zeros(1, 3, 30, 40), "rot90")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    x = torch.randint(0, 256, (5, 3, 30, 40), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    p8, _ = predict_batch(model, x, mean, std, 8)
    p4, _ = predict_batch(model, x, mean, std, list(SHAPE_KEEPING_VIEWS))
    assert torch.allclose(p8, p4)
    p1, _ = predict_batch(model, x, mean, std, 1)
    assert not torch.allclose(p8, p1)  # the views do something
    pred = predict_loader(model, [x], mean, std, 8, desc=None)
    assert pred.views == list(SHAPE_KEEPING_VIEWS)  # the views used, not those asked for


@pytest.fixture(scope="module")
def native_ckpt(ham_manifest, tmp_path_factory):
    sub = pick_images(ham_manifest, per_class=2, seed=1)
    sub.attrs = ham_manifest.attrs
    d = tmp_path_factory.mktemp("native")
    return train_short_checkpoint(sub, d / "native.pt", size=[48, 64], steps=6), sub


def test_checkpoint_prediction_export_and_cam_at_4_to_3(native_ckpt, tmp_path):
    ckpt, sub = native_ckpt
    info = load_checkpoint(ckpt)
    assert info["image_size"] == [48, 64]
    model, _ = model_from_checkpoint(ckpt)
    paths = list(sub.path[:5])
    got = predict_images(ckpt, paths, tta=8, batch_size=2, show_progress=False, precision="float32")
    assert len(got) == 5 and not got.attrs["skipped"]
    probs = got.filter(like="p_").to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # by hand: the 4 shape-keeping views of the images as the cache prepares them
    x = torch.from_numpy(np.stack([load_for_model(p, [48, 64]) for p in paths])).permute(0, 3, 1, 2)
    want, _ = predict_batch(model, x, info["mean"], info["std"], list(SHAPE_KEEPING_VIEWS))
    np.testing.assert_allclose(probs, want.numpy(), atol=1e-5)
    # the ONNX export takes 48x64 inputs and gives the same probabilities
    out = tmp_path / "onnx"
    assert cli(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["image_size"] == [48, 64]
    onnx = predict_images(out / "model.onnx", paths, tta=8, batch_size=2, show_progress=False)
    np.testing.assert_allclose(onnx.filter(like="p_").to_numpy(), probs, atol=1e-4)
    # Grad-CAM maps and lesion masks in the same 48x64 geometry
    cams = explain.cams_for_images(
        model, np.stack([load_for_model(p, [48, 64]) for p in paths]), info["mean"], info["std"]
    )
    assert cams.shape == (5, 48, 64)
    masks = [m for m in sub["mask_path"] if isinstance(m, str)]
    assert masks  # HAM10000 has its lesion masks in ../shared/data
    mask = explain.load_mask(masks[0], [48, 64])
    assert mask.shape == (48, 64) and mask.dtype == bool and 0 < mask.mean() < 1
