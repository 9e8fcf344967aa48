"""Batched augmentation does no Python work per image and never reads the device."""

from __future__ import annotations

import sys

import pytest
import torch

from skinhelpers.train.batch_augment import BatchAugment

HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "nonzero")


def _python_calls(fn) -> int:
    """Python-level function calls made while ``fn`` runs."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
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
        torch.manual_seed(1)
        calls[n] = _python_calls(lambda x=x: aug(x))
    assert calls[4] == calls[32], calls


@pytest.mark.parametrize("preset", ["basic", "strong"])
def test_no_tensor_value_is_read_on_the_host(preset, monkeypatch):
    """On a GPU each such read waits for the device (a sync every batch)."""
    aug = BatchAugment(preset)
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
