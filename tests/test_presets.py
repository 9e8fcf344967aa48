"""One table of augmentation presets (skinhelpers.train.presets), read by both the
per-image torchvision path and the batched kornia path: both draw from its ranges."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from skinhelpers.train.augment import train_transform
from skinhelpers.train.batch_augment import BatchAugment, BatchColorJitter
from skinhelpers.train.presets import BATCH_PRESETS, PRESET_SPECS, PRESETS, spec


def _walk(t):
    """Every transform inside a torchvision Compose / RandomApply, depth first."""
    yield t
    for child in getattr(t, "transforms", []) or []:
        yield from _walk(child)


def _kornia_ops(aug: BatchAugment) -> list:
    return [m for seq in (aug.ops, aug.extra) for m in getattr(seq, "children", lambda: [])()]


def _one(items, kind):
    found = [t for t in items if isinstance(t, kind)]
    assert len(found) == 1, (kind, found)
    return found[0]


def test_policies_are_per_image_only_and_names_are_checked():
    assert set(BATCH_PRESETS) == {"none", "basic", "strong", "shift"}
    assert set(PRESETS) - set(BATCH_PRESETS) == {"autoaugment", "randaugment"}
    with pytest.raises(ValueError, match="unknown augmentation preset 'sharp'"):
        spec("sharp")
    with pytest.raises(ValueError, match="supports the presets"):
        BatchAugment("randaugment")


@pytest.mark.parametrize("preset", [p for p in BATCH_PRESETS if p != "none"])
def test_both_paths_draw_from_the_table(preset):
    import kornia.augmentation as K

    sp = PRESET_SPECS[preset]
    tv = list(_walk(train_transform(preset, 32)))
    ba = BatchAugment(preset)
    ko = _kornia_ops(ba)
    # geometry: flips both ways on both paths, then the affine ranges
    assert sum(isinstance(t, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)) for t in tv) == 2
    assert sum(isinstance(t, (K.RandomHorizontalFlip, K.RandomVerticalFlip)) for t in ko) == 2
    a = sp["affine"]
    ta, ka = _one(tv, v2.RandomAffine), _one(ko, K.RandomAffine)._param_generator
    assert list(ta.degrees) == [-a["degrees"], a["degrees"]] and ka.degrees == a["degrees"]
    assert tuple(ta.scale) == tuple(ka.scale) == a["scale"]
    assert (ta.translate and tuple(ta.translate)) == ka.translate == a.get("translate")
    assert (ta.shear and tuple(ta.shear)) == ka.shear == a.get("shear")
    # colour: torchvision's ColorJitter ranges are 1 +- the amounts of the batched jitter
    c = sp["color"]
    tj, kj = _one(tv, v2.ColorJitter), ba.color
    assert isinstance(kj, BatchColorJitter)
    amounts = (c["brightness"], c["contrast"], c["saturation"])
    assert kj.amounts == pytest.approx(amounts)
    for name, amount in zip(("brightness", "contrast", "saturation"), amounts):
        assert tuple(getattr(tj, name)) == pytest.approx((1 - amount, 1 + amount))
    # blur, noise, erasing: present on both paths exactly when the table has them
    apply_p = {type(t.transforms[0]).__name__: t.p for t in tv if isinstance(t, v2.RandomApply)}
    if "blur" in sp:
        b, tb = sp["blur"], _one(tv, v2.GaussianBlur)
        kb = _one(ko, K.RandomGaussianBlur)
        assert list(tb.kernel_size) == [b["kernel_size"]] * 2 and list(tb.sigma) == list(b["sigma"])
        assert apply_p["GaussianBlur"] == kb.p == b["p"]
        assert tuple(float(v) for v in kb._param_generator.sigma) == pytest.approx(b["sigma"])
    else:
        assert not any(isinstance(t, (v2.GaussianBlur, K.RandomGaussianBlur)) for t in tv + ko)
    if "noise" in sp:
        assert _one(tv, v2.GaussianNoise).sigma == sp["noise"]["sigma"]
        assert apply_p["ToDtype"] == _one(ko, K.RandomGaussianNoise).p == sp["noise"]["p"]
    else:
        assert not any(isinstance(t, (v2.GaussianNoise, K.RandomGaussianNoise)) for t in tv + ko)
    if "erasing" in sp:
        te, ke = _one(tv, v2.RandomErasing), _one(ko, K.RandomErasing)
        assert te.p == ke.p == sp["erasing"]["p"]
        assert tuple(te.scale) == tuple(ke._param_generator.scale) == sp["erasing"]["scale"]
    else:
        assert not any(isinstance(t, (v2.RandomErasing, K.RandomErasing)) for t in tv + ko)


@pytest.mark.parametrize("preset", BATCH_PRESETS)
def test_both_paths_keep_uint8_images_and_their_shape(preset):
    x = torch.randint(0, 256, (6, 3, 24, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    y = BatchAugment(preset)(x)
    z = train_transform(preset, (24, 32))(x[0])
    assert y.dtype == z.dtype == torch.uint8 and y.shape == x.shape and z.shape == x[0].shape
