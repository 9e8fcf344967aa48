"""Batched augmentation on the device: shapes, per-image parameters, label pairing, order."""

import numpy as np
import pandas as pd
import pytest
import torch

from skinhelpers.data.cache import CachedImageDataset, ImageCache
from skinhelpers.train.batch_augment import BatchAugment, DeviceBatchLoader, RandomRot90Batch
from skinhelpers.train.sampling import train_sampler


def _stack(n=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("preset", ["none", "basic", "strong"])
def test_keeps_shape_dtype_and_device(preset):
    x = _stack()
    y = BatchAugment(preset)(x)
    assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device
    if preset == "none":
        assert torch.equal(x, y)


@pytest.mark.parametrize("preset", ["basic", "strong"])
def test_parameters_differ_per_image(preset):
    torch.manual_seed(0)
    one = _stack(1, 48)
    out = BatchAugment(preset)(one.repeat(16, 1, 1, 1))
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) >= 14  # the same image, augmented 16 ways


def test_same_seed_same_batch():
    x = _stack()
    torch.manual_seed(3)
    a = BatchAugment("strong")(x)
    torch.manual_seed(3)
    b = BatchAugment("strong")(x)
    assert torch.equal(a, b)


def test_rot90_is_lossless_and_per_image():
    torch.manual_seed(1)
    x = _stack(64, 8)
    y = RandomRot90Batch()(x)
    for a, b in zip(x, y):  # each output is some rotation of its own input
        assert any(torch.equal(torch.rot90(a, k, dims=(-2, -1)), b) for k in range(4))
    ks = [
        next(k for k in range(4) if torch.equal(torch.rot90(a, k, dims=(-2, -1)), b))
        for a, b in zip(x, y)
    ]
    assert len(set(ks)) == 4


def test_unknown_preset_and_bad_input_are_refused():
    with pytest.raises(ValueError, match="autoaugment"):
        BatchAugment("autoaugment")
    with pytest.raises(TypeError, match="uint8"):
        BatchAugment("basic")(torch.zeros(2, 3, 8, 8))


FILL = torch.tensor([10.0, 40.0, 100.0, 220.0])  # far apart even after +-15% brightness


def _cache_dataset(tmp_path, n=40, size=16):
    """A tiny ImageCache whose image i is filled with FILL[its label]."""
    labels = np.arange(n) % 4
    images = np.repeat(FILL.numpy().astype(np.uint8)[labels][:, None, None, None], size, 1)
    images = np.repeat(np.repeat(images, size, 2), 3, 3)
    relpaths = [f"img{i}.jpg" for i in range(n)]
    cache = ImageCache(tmp_path / "c.json", {"n": n, "size": size, "relpaths": relpaths}, images)
    df = pd.DataFrame({"relpath": relpaths[::-1], "label_idx": labels[::-1]})
    return CachedImageDataset(cache, df), labels[::-1]


def test_loader_follows_sampler_and_keeps_labels_paired(tmp_path):
    ds, labels = _cache_dataset(tmp_path)
    sampler = train_sampler(labels, 4, balance_power=0.5, seed=0)
    loader = DeviceBatchLoader(ds, sampler, batch_size=8, device="cpu", preset="none")
    sampler.set_epoch(2)
    order = list(iter(sampler))
    sampler.set_epoch(2)
    batches = list(loader)
    assert len(batches) == len(loader) == len(order) // 8
    seen = torch.cat([y for _, y in batches]).tolist()
    assert seen == [int(labels[i]) for i in order[: len(seen)]]
    for x, y in batches:  # the image's fill value encodes its label
        assert torch.equal(x[:, 0, 0, 0].float(), FILL[y])


def test_loader_augments_with_flips_keeping_pairs(tmp_path):
    ds, labels = _cache_dataset(tmp_path)
    sampler = train_sampler(labels, 4, seed=1)
    loader = DeviceBatchLoader(ds, sampler, batch_size=10, device="cpu", preset="basic")
    torch.manual_seed(0)
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape == (10, 3, 16, 16)
        # brightness jitter scales a uniform image by 0.85-1.15: the nearest fill value
        # is still its own label's
        centre = x[:, :, 6:10, 6:10].float().mean(dim=(1, 2, 3))
        assert torch.equal((centre[:, None].log() - FILL.log()).abs().argmin(1), y)


@pytest.mark.realdata
def test_trainer_trains_with_batched_augmentation_on_real_ham10000(ham_manifest, tmp_path):
    """augment_on="device": the trainer's batches come from DeviceBatchLoader (the cached
    images as one tensor, augmented per image on the device) and the loss goes down."""
    from skinhelpers.data.cache import build_cache
    from skinhelpers.train.config import DataMeta, TrainConfig
    from skinhelpers.train.trainer import Trainer

    df = ham_manifest.dropna(subset=["path"])
    train = df.groupby("label", sort=True).head(12).reset_index(drop=True)
    val = df[~df["group"].isin(train["group"])].groupby("label", sort=True).head(4)
    used = pd.concat([train, val], ignore_index=True)
    used.attrs = df.attrs
    cache = build_cache(used, 48, cache_dir=tmp_path / "cache", workers=2, show_progress=False)
    train_ds, val_ds = CachedImageDataset(cache, train), CachedImageDataset(cache, val)
    train_ds.augment_preset = "basic"
    meta = DataMeta(
        classes=df.attrs["classes"], image_size=48, dataset="ham10000", positive_class="mel"
    )
    cfg = TrainConfig(
        arch="small_cnn",
        epochs=3,
        batch_size=12,
        workers=0,
        lr=3e-3,
        patience=0,
        tensorboard=False,
        save="none",
        ema=False,
        augment_on="device",
    )
    tr = Trainer(cfg, train_ds, val_ds, train["label_idx"].to_numpy(), meta, tmp_path / "out")
    assert isinstance(tr.train_loader, DeviceBatchLoader)
    hist = tr.fit()["history"]
    assert np.isfinite(hist["train_loss"]).all() and len(hist) == 3
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]


def test_trainer_falls_back_to_per_image_for_other_presets(tmp_path, capsys):
    from helpers_train import toy_dataset

    from skinhelpers.train.config import DataMeta, TrainConfig
    from skinhelpers.train.trainer import Trainer

    ds, labels = toy_dataset(48, 16, 3)
    ds.augment_preset = "randaugment"
    meta = DataMeta(classes=["a", "b", "c"], image_size=16, dataset="toy")
    cfg = TrainConfig(
        arch="small_cnn",
        epochs=1,
        batch_size=8,
        workers=0,
        tensorboard=False,
        save="none",
        augment_on="device",
    )
    tr = Trainer(cfg, ds, ds, labels, meta, tmp_path / "out")
    assert isinstance(tr.train_loader, torch.utils.data.DataLoader)
    assert "augmenting per image instead" in capsys.readouterr().out
    with pytest.raises(ValueError, match="augment_on"):
        TrainConfig(augment_on="gpu").check()


def test_device_fallback_and_names(capsys):
    from skinhelpers.device import inference_dtype, pick_device

    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert pick_device("cuda").type == "cpu"
        assert "CUDA is not available" in capsys.readouterr().out
        assert inference_dtype("cpu", "float32") is None
    with pytest.raises(ValueError, match="not a device name"):
        pick_device("gpu0")


def test_inference_precision_follows_the_cpu_flags(tmp_path):
    from skinhelpers.device import cpu_has_native_bf16, inference_dtype

    native, plain = tmp_path / "native", tmp_path / "plain"
    native.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512vl\n")
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_native_bf16(str(native)) and not cpu_has_native_bf16(str(plain))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))  # not Linux: float32
    assert inference_dtype("cpu", "auto", str(native)) == torch.bfloat16
    assert inference_dtype("cpu", "auto", str(plain)) is None
    assert inference_dtype("cpu", "float32", str(native)) is None
    assert inference_dtype("cpu", "bfloat16", str(plain)) == torch.bfloat16  # asked for
    with pytest.raises(ValueError, match="precision 'half' is not one of auto"):
        inference_dtype("cpu", "half")
