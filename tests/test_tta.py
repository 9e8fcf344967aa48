"""Test-time augmentation over the dihedral views (:mod:`skinhelpers.model.inference`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from skinhelpers.model import inference as tta

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class PointwiseNet(nn.Module):
    """1x1 convolutions + global pooling: invariant to every flip and rotation."""

    def __init__(self, c=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU())
        self.fc = nn.Linear(16, c)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


class PositionNet(nn.Module):
    """A linear layer over all pixels: sees where things are, so flips change it."""

    def __init__(self, s=8, c=4):
        super().__init__()
        self.fc = nn.Linear(3 * s * s, c)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _batch(n=6, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g)


def test_views_form_the_dihedral_group():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    outs = [tta.apply_view(x, v) for v in tta.VIEWS]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8  # all distinct
    assert torch.equal(tta.apply_view(x, "rot90"), torch.rot90(x, 1, (2, 3)))
    assert torch.equal(tta.apply_view(x, "hflip"), torch.flip(x, (3,)))
    for v in tta.VIEWS:  # every view is a permutation of the pixels
        assert sorted(tta.apply_view(x, v).flatten().tolist()) == list(range(16))
    assert tta.resolve_views(1) == ["identity"]
    assert tta.resolve_views("4") == list(tta.VIEWS[:4])
    assert tta.resolve_views(["hflip", "rot90"]) == ["hflip", "rot90"]
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        tta.resolve_views(3)
    with pytest.raises(ValueError, match="unknown tta view"):
        tta.resolve_views(["spin"])


def test_tta_of_a_flip_invariant_model_changes_nothing():
    torch.manual_seed(0)
    model = PointwiseNet().eval()
    x = _batch()
    p1, l1 = tta.predict_batch(model, x, MEAN, STD, 1)
    p8, l8 = tta.predict_batch(model, x, MEAN, STD, 8)
    assert torch.allclose(p1, p8, atol=1e-6)
    assert torch.allclose(p1.sum(1), torch.ones(len(x), dtype=p1.dtype))
    # log of the averaged probabilities gives the probabilities back
    assert torch.allclose(l8.softmax(1), p8, atol=1e-8)


def test_tta_changes_a_position_sensitive_model_and_averages_views():
    torch.manual_seed(0)
    model = PositionNet().eval()
    x = _batch()
    p1, _ = tta.predict_batch(model, x, MEAN, STD, 1)
    p2, _ = tta.predict_batch(model, x, MEAN, STD, 2)
    assert not torch.allclose(p1, p2, atol=1e-4)
    xf = tta.to_model_input(x, MEAN, STD)
    with torch.no_grad():
        manual = (model(xf).softmax(1) + model(xf.flip(-1)).softmax(1)) / 2
    assert torch.allclose(p2.float(), manual, atol=1e-6)


def test_normalisation_uses_mean_and_std():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = tta.to_model_input(x, MEAN, STD)
    expected = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(y[0, :, 0, 0], expected)


def test_predict_loader_matches_batches_and_keeps_labels():
    torch.manual_seed(0)
    model = PositionNet().eval()
    x = _batch(10)
    y = torch.arange(10) % 4
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    pred = tta.predict_loader(model, loader, MEAN, STD, views=4, desc=None)
    full, _ = tta.predict_batch(model, x, MEAN, STD, 4)
    assert pred.probs.shape == (10, 4)
    assert np.allclose(pred.probs, full.numpy())
    assert np.array_equal(pred.labels, y.numpy())
    assert pred.views == list(tta.VIEWS[:4])
