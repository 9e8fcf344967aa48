"""Batched augmentation does no Python work per image and never reads the device."""

from __future__ import annotations

import gc
import sys

import pytest
import torch

from skinhelpers.train.batch_augment import BatchAugment, BatchColorJitter, RandomRot90Batch

HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "nonzero")


def _python_calls(fn) -> int:
    """Python-level function calls made while ``fn`` runs (the garbage collector is held
    off: a collection runs the callbacks other libraries registered with ``gc``, which is
    Python work that depends on what ran before in the process, not on ``fn``)."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    gc.collect()
    gc.disable()
    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
        gc.enable()
    return calls


@pytest.mark.parametrize("preset", ["basic", "strong"])
@pytest.mark.parametrize("shape", [(16, 16), (12, 16)])
def test_python_work_does_not_grow_with_the_batch(preset, shape):
    aug = BatchAugment(preset)
    calls = {}
    for n in (4, 32):
        x = torch.randint(0, 256, (n, 3, *shape), dtype=torch.uint8)
        torch.manual_seed(0)
        aug(x)  # first calls: lazy set-up
        aug(x)
        # the fewest of three: one-off work (a warning's first report, a lazy import in a
        # branch) is not work per image; work per image would show in every repeat
        counts = []
        for seed in (1, 2, 3):
            torch.manual_seed(seed)
            counts.append(_python_calls(lambda x=x: aug(x)))
        calls[n] = min(counts)
    assert calls[4] == calls[32], calls


@pytest.mark.parametrize("preset", ["basic", "strong"])
def test_no_tensor_value_is_read_on_the_host(preset, monkeypatch):
    """On a GPU each such read waits for the device (a sync every batch); the GPU's path
    (sync_free, the default off the CPU) is checked here on the CPU."""
    aug = BatchAugment(preset, sync_free=True)
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    aug(x)
    reads = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(*a, _original=original, _name=name, **kw):
            reads.append(_name)
            return _original(*a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    aug(x)
    assert reads == []


@pytest.mark.parametrize("shape", [(16, 16), (12, 16)])
def test_the_gpu_and_the_cpu_turn_images_alike(shape):
    x = torch.randint(0, 256, (64, 3, *shape), dtype=torch.uint8)
    torch.manual_seed(5)
    a = RandomRot90Batch(sync_free=True)(x)
    torch.manual_seed(5)
    b = RandomRot90Batch(sync_free=False)(x)
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_colour_jitter_is_torchvisions_per_image():
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(6, 3, 10, 12)
    jitter = BatchColorJitter(0.3, 0.3, 0.2)
    torch.manual_seed(1)
    got = jitter(x)
    torch.manual_seed(1)
    f = 1 + torch.tensor(jitter.amounts) * (2 * torch.rand(6, 3) - 1)
    for img, out, (b, c, s) in zip(x, got, f.tolist()):
        want = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), s)
        assert torch.allclose(out, want, atol=1e-5)
