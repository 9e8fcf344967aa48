"""Checkpoints: atomic, self-describing, weights_only-loadable, rebuilt strictly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skinhelpers.model import checkpoints
from skinhelpers.model import factory as models

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _save(path, model, **extra_kw):
    kw = dict(
        arch="small_cnn",
        model_kwargs=models.model_kwargs(7, 0.1, 8),
        classes=CLASSES,
        image_size=32,
        preprocess="shades_of_gray",
        resize_mode="squash",
        mean=models.IMAGENET_MEAN,
        std=models.IMAGENET_STD,
        dataset="ham10000",
        epoch=3,
        metrics={"balanced_accuracy": 0.5, "macro_f1": np.float64(0.25)},
    )
    kw.update(extra_kw)
    return checkpoints.save_checkpoint(path, model, **kw)


def test_round_trip_weights_only(tmp_path):
    torch.manual_seed(0)
    model = models.build_model("small_cnn", 7, drop_rate=0.1, hidden_dim=8).eval()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    path = _save(
        tmp_path / "ck" / "best.pt",
        model,
        extra={
            "optimizer": opt.state_dict(),
            "history": [{"epoch": 1, "loss": 1.0}],
            "rng": {"torch": torch.get_rng_state()},
        },
    )
    raw = torch.load(path, weights_only=True)  # the contract: plain types only
    assert raw["format"] == checkpoints.FORMAT
    for key in checkpoints.REQUIRED_KEYS:
        assert key in raw
    assert raw["classes"] == CLASSES and raw["image_size"] == 32
    assert raw["preprocess"] == "shades_of_gray" and raw["model_kwargs"]["pretrained"] is False
    assert raw["metrics"]["macro_f1"] == 0.25 and isinstance(raw["metrics"]["macro_f1"], float)
    assert "optimizer" in raw and raw["history"][0]["epoch"] == 1
    rebuilt, info = checkpoints.model_from_checkpoint(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x))
    assert not rebuilt.training
    assert "state_dict" not in info and "optimizer" not in info
    assert info["mean"] == list(model.mean)
    assert not list((tmp_path / "ck").glob(".*.tmp"))  # no temporary files left


def test_pretrained_model_is_rebuilt_without_downloading(tmp_path, monkeypatch):
    model = models.build_model("efficientnet_lite0", 7)  # offline package weights
    path = checkpoints.save_checkpoint(
        tmp_path / "b.pt",
        model,
        arch="efficientnet_lite0",
        model_kwargs=models.model_kwargs(7),
        classes=CLASSES,
        image_size=32,
        preprocess="none",
        resize_mode="crop",
        mean=model.mean,
        std=model.std,
        dataset="demo",
        epoch=1,
        metrics={},
    )

    def no_weights(*a, **k):
        raise AssertionError("rebuilding a checkpoint must not load pretrained weights")

    # build_model's own name for it (imported from skinhelpers.model.weights)
    monkeypatch.setattr(models, "pretrained_state_dict", no_weights)
    rebuilt, info = checkpoints.model_from_checkpoint(path)
    assert info["mean"] == [0.5, 0.5, 0.5]
    assert torch.equal(rebuilt.backbone.conv_stem.weight, model.backbone.conv_stem.weight)


def test_unwraps_ddp_style_and_compiled_wrappers(tmp_path):
    model = models.build_model("small_cnn", 7)

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    path = _save(tmp_path / "w.pt", Wrapper(model), mean=model.mean, std=model.std)
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert set(sd) == set(model.state_dict())


def test_unsafe_entries_are_refused(tmp_path):
    model = models.build_model("small_cnn", 7)
    with pytest.raises(TypeError, match=r"history.*ndarray"):
        _save(tmp_path / "x.pt", model, extra={"history": [np.zeros(3)]})
    with pytest.raises(ValueError, match="overwrite"):
        _save(tmp_path / "x.pt", model, extra={"classes": ["a"]})
    with pytest.raises(ValueError, match="3 values"):
        _save(tmp_path / "x.pt", model, mean=[0.5, 0.5])
    assert not (tmp_path / "x.pt").exists()


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoints.CheckpointError, match="corrupt.pt cannot be read"):
        checkpoints.load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(checkpoints.CheckpointError, match="not a skinlesion-lab checkpoint"):
        checkpoints.load_checkpoint(other)
    # a truncated real checkpoint
    model = models.build_model("small_cnn", 7)
    good = _save(tmp_path / "good.pt", model)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(checkpoints.CheckpointError, match="trunc.pt"):
        checkpoints.load_checkpoint(trunc)
    # weights that do not fit the recorded architecture
    ck = checkpoints.load_checkpoint(good)
    ck["model_kwargs"]["hidden_dim"] = 32
    with pytest.raises(checkpoints.CheckpointError, match="do not fit"):
        checkpoints.model_from_checkpoint(ck)
