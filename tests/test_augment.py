"""Augmentation presets, normalisation, CutMix/MixUp batches, the saved choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from skinhelpers.data.imaging import load_for_model
from skinhelpers.train import augment

SIZE = 48


@pytest.fixture(scope="module")
def images(demo_manifest) -> torch.Tensor:
    """Eight real (synthetic-demo) images as the cache would hold them: uint8 (N, 3, S, S)."""
    paths = demo_manifest["path"].iloc[:8]
    return torch.stack(
        [
            torch.from_numpy(load_for_model(p, SIZE, "none", "squash")).permute(2, 0, 1)
            for p in paths
        ]
    )


@pytest.mark.parametrize("preset", augment.PRESETS)
def test_preset_keeps_shape_and_dtype_and_changes_images(preset, images):
    tf = augment.train_transform(preset, SIZE)
    torch.manual_seed(0)
    outs = [tf(img) for img in images for _ in range(3)]
    for out in outs:
        assert out.dtype == torch.uint8
        assert tuple(out.shape) == (3, SIZE, SIZE)
    srcs = [img for img in images for _ in range(3)]
    changed = [not torch.equal(o, s) for o, s in zip(outs, srcs)]
    if preset == "none":
        assert not any(changed)
    else:
        assert np.mean(changed) > 0.6, f"{preset} left most images unchanged"
        # not destroyed: still correlated with the source (same content, new view)
        diff = np.mean([(o.float() - s.float()).abs().mean().item() for o, s in zip(outs, srcs)])
        assert 0 < diff < 120


def test_presets_resize_other_sizes(images):
    big = torch.nn.functional.interpolate(images[:1].float(), size=(70, 70)).to(torch.uint8)[0]
    for preset in augment.PRESETS:
        assert augment.train_transform(preset, SIZE)(big).shape == (3, SIZE, SIZE)
    assert augment.eval_transform(SIZE)(big).shape == (3, SIZE, SIZE)


def test_eval_transform_is_identity_at_size(images):
    tf = augment.eval_transform(SIZE)
    assert torch.equal(tf(images[0]), images[0])


def test_seeded_augmentation_is_reproducible(images):
    tf = augment.train_transform("strong", SIZE)
    torch.manual_seed(5)
    a = tf(images[0])
    torch.manual_seed(5)
    b = tf(images[0])
    assert torch.equal(a, b)


def test_rot90_is_lossless(images):
    tf = augment.RandomRot90()
    img = images[0]
    for _ in range(8):
        out = tf(img)
        assert any(torch.equal(out, torch.rot90(img, k, dims=(-2, -1))) for k in range(4))


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="randaugment"):
        augment.train_transform("heavy", 64)


@pytest.mark.parametrize("cutmix,mixup", [(1.0, 0.0), (0.0, 0.4), (1.0, 0.4)])
def test_batch_mixer_targets(images, cutmix, mixup):
    torch.manual_seed(0)
    x = images.float() / 255
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0], dtype=torch.int64)
    mixer = augment.BatchMixer(7, cutmix_alpha=cutmix, mixup_alpha=mixup, prob=1.0)
    assert mixer.active
    mixed_any = False
    for _ in range(4):
        out, t = mixer(x.clone(), y)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert t.shape == (8, 7) and t.dtype == torch.float32
        assert torch.allclose(t.sum(1), torch.ones(8), atol=1e-5)
        assert (t >= 0).all()
        mixed_any |= bool((t.max(1).values < 0.999).any()) and not torch.equal(out, x)
    assert mixed_any, "the mixer never mixed"


def test_batch_mixer_off_is_one_hot(images):
    x = images.float() / 255
    y = torch.arange(8, dtype=torch.int64) % 7
    for mixer in (
        augment.BatchMixer(7),
        augment.BatchMixer(7, 1.0, 0.2, prob=0.0),
        augment.BatchMixer(7, 0.0, 0.0, prob=1.0),
    ):
        assert not mixer.active
        out, t = mixer(x, y)
        assert torch.equal(out, x)
        assert torch.equal(t, torch.nn.functional.one_hot(y, 7).float())
    with pytest.raises(ValueError, match="prob"):
        augment.BatchMixer(7, 1.0, 0.0, prob=1.5)
    with pytest.raises(TypeError, match="int64"):
        augment.BatchMixer(7)(x, y.float())


def test_save_and_read_augmentation(tmp_path):
    with pytest.raises(FileNotFoundError, match="augmentation.json"):
        augment.read_augmentation(tmp_path)
    augment.save_augmentation(tmp_path, "strong", 1.0, 0.2, 0.5)
    assert augment.read_augmentation(tmp_path) == {
        "preset": "strong",
        "cutmix_alpha": 1.0,
        "mixup_alpha": 0.2,
        "mix_prob": 0.5,
    }
    with pytest.raises(ValueError, match="preset"):
        augment.save_augmentation(tmp_path, "wild")
    (tmp_path / "augmentation.json").write_text(json.dumps({"preset": "basic"}))
    with pytest.raises(ValueError, match="missing key"):
        augment.read_augmentation(tmp_path)


def test_throughput_and_plots(images):
    import matplotlib

    matplotlib.use("Agg")
    ips = augment.measure_throughput("basic", SIZE, n=16, images=images)
    assert ips > 0 and np.isfinite(ips)
    assert augment.measure_throughput("none", SIZE, n=16, images=images) > ips
    # cache layout (N, S, S, 3) is accepted too
    assert (
        augment.measure_throughput("none", SIZE, n=4, images=images.permute(0, 2, 3, 1).numpy()) > 0
    )
    table = augment.throughput_table(SIZE, images=images, n=8, presets=("none", "basic"))
    assert list(table.index) == ["none", "basic"]
    assert len(augment.plot_throughput(table).axes) == 1
    fig = augment.plot_gallery(images[:3], "strong", n=4)
    assert len(fig.axes) == 3 * 5
    mixed, t = augment.BatchMixer(7, 1.0, prob=1.0)(
        images.float() / 255, torch.arange(8, dtype=torch.int64) % 7
    )
    assert len(augment.plot_mix_batch(mixed, t, [f"c{i}" for i in range(7)]).axes) == 8
