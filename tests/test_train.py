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
        _cfg(arch="vgg16").check()


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

        def _to_input(self, x):
            Stall.steps_seen += 1
            clock.t += 120.0 if Stall.steps_seen == 1 else 60.0 / len(self.train_loader)
            return super()._to_input(x)

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
