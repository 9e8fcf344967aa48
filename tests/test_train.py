"""The trainer: learns on real data, resumes exactly, stops early, writes loadable checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers_train import toy_dataset

from skinhelpers.model import checkpoints
from skinhelpers.model.metrics import val_metrics
from skinhelpers.train.config import DataMeta, TrainConfig
from skinhelpers.train.losses import FocalLoss, build_loss
from skinhelpers.train.sampling import (
    BalancedSampler,
    class_weights,
    sampling_prior,
    train_sampler,
)
from skinhelpers.train.trainer import Trainer

META = DataMeta(classes=["a", "b", "c"], image_size=32, positive_class="b", dataset="toy")


def _cfg(**kw):
    base = dict(
        arch="small_cnn",
        epochs=3,
        batch_size=16,
        workers=0,
        lr=3e-3,
        patience=0,
        tensorboard=False,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- real data
def test_short_run_on_real_ham10000_lowers_the_loss(ham_manifest, tmp_path):
    from skinhelpers.data.cache import CachedImageDataset, build_cache

    df = ham_manifest.dropna(subset=["path"])
    train = df.groupby("label", sort=True).head(12).reset_index(drop=True)
    val = df[~df["group"].isin(train["group"])].groupby("label", sort=True).head(6)
    used = pd.concat([train, val], ignore_index=True)
    used.attrs = df.attrs
    cache = build_cache(used, 48, cache_dir=tmp_path / "cache", workers=2, show_progress=False)
    train_ds, val_ds = CachedImageDataset(cache, train), CachedImageDataset(cache, val)
    meta = DataMeta(
        classes=df.attrs["classes"], image_size=48, dataset="ham10000", positive_class="mel"
    )
    cfg = _cfg(
        arch="efficientnet_lite0",
        epochs=3,
        freeze_epochs=1,
        lr=2e-3,
        ema=False,
        label_smoothing=0.0,
        batch_size=12,
        save="none",
    )
    tr = Trainer(cfg, train_ds, val_ds, train["label_idx"].to_numpy(), meta, tmp_path / "out")
    plain = torch.utils.data.DataLoader(train_ds, batch_size=64)
    logits, y = tr.predict(tr.model, plain)
    before = F.cross_entropy(logits, y).item()
    res = tr.fit()
    logits, y = tr.predict(tr.model, plain)
    after = F.cross_entropy(logits, y).item()
    hist = res["history"]
    print(
        hist[
            [
                "epoch",
                "phase",
                "train_loss",
                "val_loss",
                "val_balanced_accuracy",
                "val_macro_auc",
                "images_per_s",
            ]
        ].to_string()
    )
    assert after < 0.8 * before, (before, after)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert list(hist["phase"]) == ["warmup_head", "finetune", "finetune"]
    assert hist["lr_backbone"].iloc[0] == 0 and hist["lr_backbone"].iloc[1] > 0
    assert hist["val_macro_auc"].max() > 0.6  # chance is 0.5


# ----------------------------------------------------------------------------- resume
def test_resume_continues_from_the_saved_epoch_with_the_same_state(tmp_path):
    ds, labels = toy_dataset(32, size=24)

    def cfg():  # two phases, cosine schedule, EMA: everything resume must restore
        return _cfg(
            arch="efficientnet_lite0", epochs=3, freeze_epochs=1, ema=True, tensorboard=True
        )

    full = Trainer(cfg(), ds, ds, labels, META, tmp_path / "full").fit()

    def interrupt(epoch, row):
        if epoch == 1:  # after the second epoch (the first fine-tuning one) is saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(), ds, ds, labels, META, tmp_path / "cut", on_epoch_end=interrupt).fit()
    last = checkpoints.load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and len(last["history"]) == 2

    resumed = Trainer(cfg(), ds, ds, labels, META, tmp_path / "cut")
    assert resumed.maybe_resume() == 2
    saved, now = last["optimizer"], resumed.optimizer.state_dict()
    assert saved["state"].keys() == now["state"].keys() and len(saved["state"]) > 0
    for k in saved["state"]:
        assert torch.equal(saved["state"][k]["exp_avg"], now["state"][k]["exp_avg"])
        assert torch.equal(saved["state"][k]["step"], now["state"][k]["step"])

    resumed = Trainer(cfg(), ds, ds, labels, META, tmp_path / "cut")
    res = resumed.fit()
    assert list(res["history"]["epoch"]) == [1, 2, 3]
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    for k in a["state_dict"]:  # the resumed run ends where the uninterrupted one did
        assert torch.allclose(a["state_dict"][k].float(), b["state_dict"][k].float(), atol=1e-6), k
    for k in a["ema_state_dict"]:
        assert torch.allclose(
            a["ema_state_dict"][k].float(), b["ema_state_dict"][k].float(), atol=1e-6
        ), k
    pd.testing.assert_series_equal(full["history"]["train_loss"], res["history"]["train_loss"])

    # a finished run resumes to "nothing to do"; a changed recipe is refused
    again = Trainer(cfg(), ds, ds, labels, META, tmp_path / "cut").fit()
    assert again["epochs_run"] == 3
    changed = cfg()
    changed.lr = 1.0
    with pytest.raises(ValueError, match="different settings"):
        Trainer(changed, ds, ds, labels, META, tmp_path / "cut").fit()


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_stops(tmp_path):
    ds, labels = toy_dataset(48)
    res = Trainer(
        _cfg(epochs=8, lr=0.0, patience=2, ema=False), ds, ds, labels, META, tmp_path
    ).fit()  # lr 0: the score can never improve after epoch 1
    assert res["stopped_early"] and res["epochs_run"] == 3 and res["best_epoch"] == 1
    hist = pd.read_csv(tmp_path / "history.csv")
    assert len(hist) == 3


def test_no_early_stop_while_improving(tmp_path):
    ds, labels = toy_dataset(64)
    res = Trainer(
        _cfg(epochs=3, patience=3, ema=False, save="none"), ds, ds, labels, META, tmp_path
    ).fit()
    assert not res["stopped_early"] and res["epochs_run"] == 3


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoints_reload_with_weights_only(tmp_path):
    ds, labels = toy_dataset(64)
    tr = Trainer(_cfg(epochs=2, ema=True, tensorboard=True), ds, ds, labels, META, tmp_path)
    res = tr.fit()
    files = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert files == {"best.pt", "best_ema.pt", "final_ema.pt", "last.pt"}
    final = torch.load(tmp_path / "checkpoints" / "final_ema.pt", weights_only=True)
    ema_end = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert final["epoch"] == 2 and all(  # the EMA weights of the last epoch
        torch.equal(v, ema_end["ema_state_dict"][k]) for k, v in final["state_dict"].items()
    )
    for name in files:
        raw = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert raw["classes"] == ["a", "b", "c"] and raw["image_size"] == 32
        assert raw["arch"] == "small_cnn"
        model, info = checkpoints.model_from_checkpoint(tmp_path / "checkpoints" / name)
        logits, y = tr.predict(model, tr.val_loader)
        m = val_metrics(logits, y, 1)
        assert math.isclose(
            m["balanced_accuracy"], info["metrics"]["balanced_accuracy"], abs_tol=1e-6
        )
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    for key in (
        "optimizer",
        "scheduler",
        "scaler",
        "ema_state_dict",
        "history",
        "rng",
        "train_state",
        "config",
    ):
        assert key in last, key
    assert (tmp_path / "history.csv").exists() and any((tmp_path / "tb").iterdir())
    assert res["best_epoch"] >= 1


# ----------------------------------------------------------------------------- recipe parts
def test_mixing_focal_plateau_and_class_weights_run(tmp_path):
    ds, labels = toy_dataset(48)
    cfg = _cfg(
        epochs=4,
        cutmix_alpha=1.0,
        mixup_alpha=0.2,
        mix_prob=1.0,
        loss="focal",
        scheduler="plateau",
        plateau_patience=0,
        class_weight_power=1.0,
        balance_power=1.0,
        logit_adjust_tau=1.0,
        ema=False,
        save="all",
        hidden_dim=8,
    )
    res = Trainer(cfg, ds, ds, labels, META, tmp_path).fit()
    hist = res["history"]
    assert res["epochs_run"] == 4 and np.isfinite(hist["train_loss"]).all()
    # the plateau schedule only ever lowers the learning rate
    assert (np.diff(hist["lr_head"]) <= 1e-12).all()
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert "best" in last["scheduler"]


def test_config_errors():
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="monitor"):
        _cfg(monitor="accuracy").check()
    with pytest.raises(ValueError, match="unknown model"):
        _cfg(arch="vgg17").check()


def test_losses():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    soft = F.one_hot(y, 4).float()
    ce = build_loss("ce")
    assert torch.allclose(ce(logits, y), F.cross_entropy(logits, y))
    assert torch.allclose(ce(logits, soft), F.cross_entropy(logits, y))
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, y), F.cross_entropy(logits, y), atol=1e-6)
    assert FocalLoss(gamma=2.0)(logits, y) < F.cross_entropy(logits, y)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(
        FocalLoss(0.0, w)(logits, y), F.cross_entropy(logits, y, weight=w), atol=1e-6
    )
    prior = torch.tensor([0.7, 0.1, 0.1, 0.1])
    la = build_loss("ce", 4, logit_adjust_tau=1.0, prior=prior)
    assert torch.allclose(la(logits, y), F.cross_entropy(logits + prior.log(), y))
    with pytest.raises(ValueError, match="prior"):
        build_loss("ce", 4, logit_adjust_tau=1.0)
    with pytest.raises(ValueError, match="loss"):
        build_loss("hinge")


def test_sampling():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    w = class_weights(labels, 3, power=1.0)
    assert math.isclose(float((w[labels]).mean()), 1.0, rel_tol=1e-6)
    assert w[2] > w[1] > w[0]
    assert torch.allclose(sampling_prior(labels, 3, 0.0), torch.tensor([0.8, 0.15, 0.05]))
    assert torch.allclose(sampling_prior(labels, 3, 1.0), torch.full((3,), 1 / 3))
    s = BalancedSampler(labels, 3, power=1.0, num_samples=3000, seed=1)
    counts = np.bincount(labels[list(s)], minlength=3)
    assert counts.min() > 850  # about 1000 each, not 2400/450/150
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) != first
    r0 = list(BalancedSampler(labels, 3, 1.0, seed=1, rank=0, world_size=2))
    r1 = list(BalancedSampler(labels, 3, 1.0, seed=1, rank=1, world_size=2))
    assert len(r0) == len(r1) == 50
    plain = train_sampler(labels, 3, 0.0, seed=0)
    assert sorted(plain) == list(range(100))


# ----------------------------------------------------------------------------- time budget
def test_schedule_is_fitted_to_the_time_budget_and_anneals(tmp_path, monkeypatch):
    """A 20-epoch cosine schedule on a machine where an epoch takes a minute and the
    budget is 5.5 minutes (a fake clock): the trainer measures the epochs, shortens the
    schedule to the 5 that fit, and the last epoch runs at an annealed learning rate
    instead of being cut mid-schedule with the learning rate still high."""
    import skinhelpers.train.trainer as trainer_module

    class Clock:  # every reading advances a millisecond; an epoch adds a minute
        t = 0.0

        def perf_counter(self):
            self.t += 1e-3
            return self.t

    clock = Clock()
    monkeypatch.setattr(trainer_module, "time", clock)

    class Slow(Trainer):
        def train_epoch(self, epoch):
            clock.t += 60.0
            return super().train_epoch(epoch)

    ds, labels = toy_dataset(48)
    cfg = _cfg(epochs=20, ema=False, save="none", max_minutes=5.5, warmup_epochs=0.0)
    res = Slow(cfg, ds, ds, labels, META, tmp_path).fit()
    hist = res["history"]
    assert res["epochs_planned"] == 5 and res["epochs_run"] == 5
    assert hist["lr_head"].iloc[-1] < 0.2 * hist["lr_head"].max()
    assert cfg.epochs == 20  # the config itself is not changed

    # a first fine-tuning step that stalls (compilation, cuDNN autotuning: 20 s for one
    # step was seen on a GPU) does not shrink the schedule: the epoch is counted at the
    # speed of its later steps (a minute an epoch here), so 3 of the 20 epochs fit
    class Stall(Trainer):
        steps_seen = 0

        def _step(self, model, x, target):  # one training step
            Stall.steps_seen += 1
            clock.t += 120.0 if Stall.steps_seen == 1 else 60.0 / len(self.train_loader)
            return super()._step(model, x, target)

    ds96, labels96 = toy_dataset(160)
    cfg = _cfg(epochs=20, ema=False, save="none", max_minutes=5.5, warmup_epochs=0.0)
    res = Stall(cfg, ds96, ds96, labels96, META, tmp_path / "stall").fit()
    hist = res["history"]
    assert len(hist) == 3 and res["epochs_run"] == 3
    assert hist["train_seconds"].iloc[0] > 170  # the stall is in the epoch's own time
    assert abs(hist["train_seconds_steady"].iloc[0] - 60) < 1  # but not in its speed
    assert hist["lr_head"].iloc[-1] < 0.3 * hist["lr_head"].max()

    # without a budget the whole schedule runs
    res = Trainer(
        _cfg(epochs=4, ema=False, save="none"), ds, ds, labels, META, tmp_path / "b"
    ).fit()
    assert res["epochs_planned"] == 4 and res["epochs_run"] == 4


# ------------------------------------------------------------------------ step speed (issue 26)
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "nonzero")


class HostReads:
    """Counts the reads of a tensor's value by the host (``.item()``, ``.cpu()``,
    ``bool(t)``, ...): on a GPU each one waits for the device (a sync)."""

    def __init__(self, monkeypatch):
        self.n = 0
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(*a, _original=original, **kw):
                self.n += 1
                return _original(*a, **kw)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def during(self, fn) -> int:
        before = self.n
        fn()
        return self.n - before


def _cached_toy(tmp_path, n: int, size: int = 16):
    """A toy dataset over an ImageCache, so that augment_on='device' can take it."""
    from skinhelpers.data.cache import CachedImageDataset, ImageCache

    ds, labels = toy_dataset(n, size=size)
    images = ds.tensors[0].permute(0, 2, 3, 1).contiguous().numpy()
    relpaths = [f"img{i}.jpg" for i in range(n)]
    cache = ImageCache(
        tmp_path / f"c{n}.json", {"n": n, "size": size, "relpaths": relpaths}, images
    )
    cds = CachedImageDataset(cache, pd.DataFrame({"relpath": relpaths, "label_idx": labels}))
    cds.augment_preset = "basic"
    return cds, labels


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_a_training_step_does_not_read_the_device(tmp_path, monkeypatch, augment_on):
    """No host sync per step: the host reads tensor values a fixed number of times per
    epoch (the sampler's order, the loss at the end), however many steps it has. A
    per-step ``loss.item()`` or ``if not torch.isfinite(loss)`` coming back fails this."""
    counts = {}
    for n in (64, 192):  # 4 and 12 steps of 16
        ds, labels = _cached_toy(tmp_path, n)
        cfg = _cfg(epochs=1, ema=True, save="none", augment_on=augment_on, sync_every=1000)
        tr = Trainer(cfg, ds, ds, labels, META, tmp_path / f"{augment_on}{n}")
        if augment_on == "device":  # the GPU's path (the CPU turns images by indexing)
            tr.train_loader.augment.rot90.sync_free = True
        tr._enter_phase("finetune", 0, 1, None)
        tr.train_epoch(0)  # lazily made constants, first-call work
        reads = HostReads(monkeypatch)
        counts[n] = reads.during(lambda tr=tr: tr.train_epoch(1))
        monkeypatch.undo()
    assert counts[64] == counts[192], counts  # none per step
    assert counts[192] <= 4, counts


def test_the_loss_is_read_every_sync_every_steps_and_a_nan_still_stops_training(
    tmp_path, monkeypatch
):
    ds, labels = toy_dataset(192)  # 12 steps of 16
    tr = Trainer(
        _cfg(epochs=1, ema=False, save="none", sync_every=1000), ds, ds, labels, META, tmp_path
    )
    tr._enter_phase("finetune", 0, 1, None)
    reads = HostReads(monkeypatch)
    once = reads.during(lambda: tr.train_epoch(0))  # the order, the loader's seed, the loss
    tr.cfg.sync_every = 4
    assert reads.during(lambda: tr.train_epoch(1)) == once + 12 // 4
    monkeypatch.undo()
    criterion, calls = tr.criterion, []

    def poisoned(logits, target):  # the 6th step's loss is NaN
        calls.append(1)
        loss = criterion(logits, target)
        return loss * float("nan") if len(calls) == 6 else loss

    tr.criterion = poisoned
    with pytest.raises(FloatingPointError, match=r"loss is nan in epoch 3, within its first 8"):
        tr.train_epoch(2)


class CountingLoader:
    """A loader that counts how often it is read from start to end."""

    def __init__(self, loader):
        self.loader, self.dataset, self.reads = loader, loader.dataset, 0

    def __iter__(self):
        self.reads += 1
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


@pytest.mark.parametrize("val_passes", [1, 2])
def test_one_validation_pass_per_epoch_unless_asked(tmp_path, val_passes):
    """The raw and the EMA weights are scored in one pass over the validation images (two
    with ``val_passes=2``), the images are read from the loader once for all epochs, and
    the scores are those of a separate prediction of each network."""
    ds, labels = toy_dataset(64)
    cfg = _cfg(epochs=3, ema=True, save="none", val_passes=val_passes)
    tr = Trainer(cfg, ds, ds, labels, META, tmp_path)
    tr.val_loader = CountingLoader(tr.val_loader)
    res = tr.fit()
    assert tr.val_passes_run == 3 * val_passes
    assert tr.val_loader.reads == 1  # kept after the first pass
    last = res["history"].iloc[-1]
    for prefix, model in (("val_", tr.model), ("ema_val_", tr.ema.module)):
        m = val_metrics(*tr.predict(model, tr.val_loader.loader), tr.pos_index)
        for k, v in m.items():
            assert v == last[prefix + k] or (math.isnan(v) and math.isnan(last[prefix + k]))


def test_compile_modes_for_the_gpu_are_off_on_the_cpu_and_a_failed_compile_trains_eagerly(
    tmp_path, monkeypatch, capsys
):
    from skinhelpers import device

    ds, labels = toy_dataset(48)
    monkeypatch.setattr(device, "compile_blocker", lambda dev: None)  # a compiler "exists"
    for mode, expected in (
        ("reduce-overhead", None),
        ("max-autotune", None),
        ("default", "default"),
    ):
        tr = Trainer(_cfg(torch_compile=True, compile_mode=mode), ds, ds, labels, META, tmp_path)
        assert tr._compile_mode() == expected, mode
    assert "is a GPU mode" in capsys.readouterr().out
    with pytest.raises(ValueError, match="compile_mode"):
        _cfg(compile_mode="fast").check()

    class Broken(torch.nn.Module):  # what torch.compile returns, failing like a compiler
        def forward(self, x):
            raise RuntimeError("backend compiler failed")

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: Broken())
    cfg = _cfg(epochs=2, torch_compile=True, ema=False, save="none")
    res = Trainer(cfg, ds, ds, labels, META, tmp_path / "eager").fit()
    assert res["epochs_run"] == 2 and np.isfinite(res["history"]["train_loss"]).all()
    assert "failed on the first step (RuntimeError: backend compiler failed)" in (
        capsys.readouterr().out
    )


# ----------------------------------------------------------------------------- any timm model
def test_a_timm_model_by_name_trains_from_random_init_and_from_a_weights_file(tmp_path):
    """``arch`` takes any timm model: convnext_nano trains from random init offline, and
    from a local state dict file; its checkpoints rebuild it."""
    import timm

    ds, labels = toy_dataset(32, size=32)
    cfg = _cfg(arch="convnext_nano:scratch", epochs=1, batch_size=16, ema=False, save="best")
    res = Trainer(cfg, ds, ds, labels, META, tmp_path / "scratch").fit()
    assert res["pretrained"] is False and res["pretrained_source"] == "none"
    assert np.isfinite(res["history"]["train_loss"]).all()

    src = timm.create_model("convnext_nano", pretrained=False)
    weights = tmp_path / "convnext_nano.pth"
    torch.save(src.state_dict(), weights)
    cfg = _cfg(arch="convnext_nano", pretrained=str(weights), epochs=2, freeze_epochs=1)
    cfg.batch_size, cfg.ema, cfg.save = 16, False, "best"
    tr = Trainer(cfg, ds, ds, labels, META, tmp_path / "file")
    assert torch.equal(tr.model.backbone.stem[0].weight, src.stem[0].weight)
    res = tr.fit()
    assert res["pretrained_source"] == str(weights)
    assert list(res["history"]["phase"]) == ["warmup_head", "finetune"]
    model, info = checkpoints.model_from_checkpoint(tmp_path / "file" / "checkpoints" / "best.pt")
    assert info["arch"] == "convnext_nano" and info["pretrained_source"] == str(weights)
