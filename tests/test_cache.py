"""The image cache: exact pixels, reuse, rebuild on a new key, parallel = serial."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers_images import write_jpg, write_truncated

from skinhelpers.data import cache as C
from skinhelpers.data.imaging import ImageReadError, fit_to_size, load_for_model, read_rgb
from skinhelpers.data.manifest import load_manifest


@pytest.fixture()
def ham_small(ham_manifest):
    df = ham_manifest.iloc[::250].reset_index(drop=True)  # 41 real images
    df.attrs = dict(ham_manifest.attrs)
    return df


def test_round_trip_pixels_and_reuse(tmp_path, ham_small):
    c1 = C.build_cache(ham_small, size=48, cache_dir=tmp_path, workers=1, show_progress=False)
    assert c1.images.shape == (len(ham_small), 48, 48, 3) and c1.images.dtype == np.uint8
    for i in (0, 7, len(ham_small) - 1):
        want = fit_to_size(read_rgb(ham_small.path[i]), 48, "squash")
        assert np.array_equal(c1.images[i], want)
    stamp = os.stat(c1.path).st_mtime_ns
    c2 = C.build_cache(ham_small, size=48, cache_dir=tmp_path, show_progress=False)
    assert c2.path == c1.path and os.stat(c2.path).st_mtime_ns == stamp  # reused, not rebuilt
    assert np.array_equal(np.asarray(c2.images), np.asarray(c1.images))
    # rows_for maps any subset / order of the manifest onto cache rows
    sub = ham_small.iloc[[5, 2, 9]]
    assert c2.rows_for(sub).tolist() == [5, 2, 9]


def test_new_key_builds_a_new_cache(tmp_path, ham_small):
    base = C.build_cache(ham_small, size=32, cache_dir=tmp_path, show_progress=False, workers=1)
    other_size = C.build_cache(
        ham_small, size=40, cache_dir=tmp_path, show_progress=False, workers=1
    )
    other_pre = C.build_cache(
        ham_small, size=32, preprocess="clahe", cache_dir=tmp_path, show_progress=False, workers=1
    )
    other_rows = C.build_cache(
        ham_small.iloc[:10], size=32, cache_dir=tmp_path, show_progress=False, workers=1
    )
    paths = {base.path, other_size.path, other_pre.path, other_rows.path}
    assert len(paths) == 4
    assert not np.array_equal(np.asarray(base.images), np.asarray(other_pre.images))
    want = load_for_model(ham_small.path[3], 32, "clahe", "squash")
    assert np.array_equal(other_pre.images[3], want)


def test_changed_file_content_changes_the_key(tmp_path):
    for i in range(3):
        write_jpg(tmp_path / "data" / "a" / f"x{i}.jpg", seed=i)
    df = load_manifest("folder", tmp_path / "data")
    k1 = C.cache_key(df, 32, "none", "squash")
    write_jpg(tmp_path / "data" / "a" / "x1.jpg", seed=99)
    df2 = load_manifest("folder", tmp_path / "data")
    assert C.cache_key(df2, 32, "none", "squash") != k1


def test_parallel_build_equals_serial(tmp_path, ham_manifest):
    df = ham_manifest.iloc[:160].reset_index(drop=True)
    df.attrs = dict(ham_manifest.attrs)
    serial = C.build_cache(df, 40, cache_dir=tmp_path / "s", workers=1, show_progress=False)
    par = C.build_cache(df, 40, cache_dir=tmp_path / "p", workers=2, show_progress=False)
    assert par.meta["workers"] == 2
    assert np.array_equal(np.asarray(serial.images), np.asarray(par.images))


def test_bad_inputs(tmp_path, ham_small):
    with pytest.raises(ValueError, match="resize_mode 'stretch'"):
        C.build_cache(ham_small, 32, resize_mode="stretch", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown preprocessing \\['sharpen'\\]"):
        C.build_cache(ham_small, 32, preprocess="clahe+sharpen", cache_dir=tmp_path)
    missing = ham_small.copy()
    missing.loc[2, "path"] = None
    with pytest.raises(ValueError, match="have no file"):
        C.build_cache(missing, 32, cache_dir=tmp_path)
    for i in range(3):
        write_jpg(tmp_path / "d" / "a" / f"ok{i}.jpg", seed=i)
    write_truncated(tmp_path / "d" / "a" / "broken.jpg")
    (tmp_path / "d" / "a" / "junk.jpg").write_bytes(b"junk")
    df = load_manifest("folder", tmp_path / "d")
    with pytest.raises(ImageReadError, match="junk.jpg"):
        C.build_cache(df, 32, cache_dir=tmp_path / "c", workers=1, show_progress=False)
    # an interrupted/failed build leaves no cache behind to be reused later
    assert not list((tmp_path / "c").rglob("*.json"))


def test_dataset_over_cache(tmp_path, ham_small):
    cache = C.build_cache(ham_small, 32, cache_dir=tmp_path, workers=1, show_progress=False)
    sub = ham_small.iloc[[3, 1]]
    ds = C.CachedImageDataset(cache, sub)
    assert len(ds) == 2
    img, label = ds[0]
    assert tuple(img.shape) == (3, 32, 32) and str(img.dtype) == "torch.uint8"
    assert label == int(sub.label_idx.iloc[0])
    assert np.array_equal(img.permute(1, 2, 0).numpy(), cache.images[3])
    flipped = C.CachedImageDataset(cache, sub, transform=lambda t: t.flip(-1))
    assert np.array_equal(flipped[0][0].numpy(), img.flip(-1).numpy())
    import torch

    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert tuple(xb.shape) == (2, 3, 32, 32) and yb.tolist() == sub.label_idx.tolist()


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_fit_to_size_modes(mode):
    img = np.zeros((150, 200, 3), np.uint8)
    img[:, 100:] = 255  # right half white
    out = fit_to_size(img, 64, mode)
    assert out.shape == (64, 64, 3)
    if mode == "crop":  # the centre crop keeps the middle: left 1/3 of it black
        assert out[:, :10].max() == 0 and out[:, -10:].min() == 255
    mask = fit_to_size(np.zeros((150, 200), np.uint8), 64, mode)
    assert mask.shape == (64, 64)
