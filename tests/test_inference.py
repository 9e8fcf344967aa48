"""The one input function, the one prediction loop and the one metrics function.

The headline test trains a small CNN for one epoch on real HAM10000 images and shows that
its checkpoint gives the same probabilities on the same validation images through the
trainer's validation pass, notebook 08's path (``tta.predict_frame`` over the image cache)
and ``predict_images`` on the image files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from skinhelpers.model import inference
from skinhelpers.model.metrics import VAL_COLUMNS, classification_metrics, val_metrics

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: probabilities of the three paths may differ by float32 rounding (the paths run the
#: network on batches of different sizes, which can change the order of float32
#: accumulation in the convolutions), never by more: 1e-5 is ~100x that rounding and far
#: below what a wrong normalisation, size or preprocessing does (> 1e-3 below)
ATOL = 1e-5


def _uint8(n=4, s=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g)


# ----------------------------------------------------------------------------- input


def test_model_input_normalises_per_channel_on_the_0_255_scale():
    x = _uint8()
    out = inference.to_model_input(x, MEAN, STD)
    assert out.dtype == torch.float32 and out.shape == x.shape and out.is_contiguous()
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(out, (x.float() - m * 255) / (s * 255))  # the training formula, exactly
    assert torch.allclose(out, (x.float() / 255 - m) / s, atol=1e-6)  # = the usual one
    white = inference.to_model_input(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), MEAN, STD)
    assert torch.allclose(white[0, :, 0, 0], (1 - torch.tensor(MEAN)) / torch.tensor(STD))


def test_model_input_memory_format_rounding_and_errors():
    x = _uint8()
    cl = inference.to_model_input(x, MEAN, STD, memory_format=torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    assert torch.equal(cl, inference.to_model_input(x, MEAN, STD))
    # a 0-255 float batch is rounded to uint8 first: the same input as the saved image
    assert torch.equal(
        inference.to_model_input(x.float() + 0.3, MEAN, STD), inference.to_model_input(x, MEAN, STD)
    )
    with pytest.raises(TypeError, match="tensor"):
        inference.to_model_input(x.numpy(), MEAN, STD)
    with pytest.raises(ValueError, match="mean"):
        inference.to_model_input(x, (0.5, 0.5), (0.25, 0.25))
    with pytest.raises(ValueError, match="std must be positive"):
        inference.to_model_input(x, MEAN, (0.2, 0.0, 0.2))


def test_trainer_feeds_the_network_through_the_input_function(tmp_path):
    from helpers_train import toy_dataset

    from skinhelpers.train.config import DataMeta, TrainConfig
    from skinhelpers.train.trainer import Trainer

    ds, labels = toy_dataset(16, size=16)
    meta = DataMeta(classes=["a", "b", "c"], image_size=16, dataset="toy")
    cfg = TrainConfig(
        arch="small_cnn", epochs=1, batch_size=8, workers=0, save="none", tensorboard=False
    )
    tr = Trainer(cfg, ds, ds, labels, meta, tmp_path)
    x = _uint8(2, 16)
    got = tr._to_input(x)
    assert torch.equal(got, inference.to_model_input(x, tr.model.mean, tr.model.std))
    assert got.is_contiguous(memory_format=torch.channels_last)  # cfg.channels_last


# ----------------------------------------------------------------------------- one checkpoint


@pytest.fixture(scope="module")
def one_epoch(ham_manifest, tmp_path_factory):
    """A small CNN trained by the Trainer for one epoch on 84 real HAM10000 images (12 per
    class), validated on 35 others from different lesions; a non-default preprocessing and
    resize mode, so that every path has to prepare the images as the cache did."""
    from skinhelpers.data.cache import CachedImageDataset, build_cache
    from skinhelpers.train.config import DataMeta, TrainConfig
    from skinhelpers.train.trainer import Trainer

    d = tmp_path_factory.mktemp("inference")
    df = ham_manifest.dropna(subset=["path"])
    train = df.groupby("label", sort=True).head(12).reset_index(drop=True)
    val = (
        df[~df["group"].isin(train["group"])]
        .groupby("label", sort=True)
        .head(5)
        .reset_index(drop=True)
    )
    used = pd.concat([train, val], ignore_index=True)
    used.attrs = df.attrs
    size, pre, mode = 40, "shades_of_gray", "crop"
    cache = build_cache(
        used, size, pre, mode, cache_dir=d / "cache", workers=2, show_progress=False
    )
    meta = DataMeta(
        classes=list(df.attrs["classes"]),
        image_size=size,
        preprocess=pre,
        resize_mode=mode,
        dataset="ham10000",
        positive_class="mel",
    )
    cfg = TrainConfig(
        arch="small_cnn",
        epochs=1,
        batch_size=6,
        eval_batch_size=16,
        workers=0,
        lr=1e-2,
        warmup_epochs=0,
        label_smoothing=0.0,
        ema=False,
        tensorboard=False,
        seed=0,
    )
    tr = Trainer(
        cfg,
        CachedImageDataset(cache, train),
        CachedImageDataset(cache, val),
        train["label_idx"].to_numpy(),
        meta,
        d / "run",
    )
    res = tr.fit()
    return tr, res, cache, val, d / "run" / "checkpoints" / "best.pt"


@pytest.mark.realdata
def test_one_checkpoint_gives_the_same_probabilities_on_every_path(one_epoch):
    from skinhelpers.evaluate import tta
    from skinhelpers.evaluate.predict import predict_images
    from skinhelpers.model.checkpoints import model_from_checkpoint

    tr, res, cache, val, best = one_epoch
    # (a) the trainer's validation pass (the model best.pt was saved from: epoch 1 of 1)
    logits, y = tr.predict(tr.model, tr.val_loader)
    p_trainer = torch.softmax(logits.double(), 1).numpy()
    # the pass that fit() ran is the one recorded in history.csv and in best.pt
    row = res["history"].iloc[-1]
    again = val_metrics(logits, y, tr.pos_index)
    for col in VAL_COLUMNS:
        assert again[col] == row[f"val_{col}"] or (
            math.isnan(again[col]) and math.isnan(row[f"val_{col}"])
        ), col

    # (b) notebook 08: the checkpoint, prepared for prediction, over the image cache
    model, info = model_from_checkpoint(best)
    model = tta.prepare_model(model, channels_last=True)
    nb08 = tta.predict_frame(
        model, cache, val, info["mean"], info["std"], views=1, batch_size=64, desc=None
    )
    assert np.array_equal(nb08.labels, y.numpy())

    # (c) predict on the original image files (decoded and prepared from scratch)
    out = predict_images(
        best, list(val["path"]), batch_size=7, show_progress=False, precision="float32"
    )
    assert list(out["image_id"]) == [Path(p).stem for p in val["path"]]
    p_files = out[[f"p_{c}" for c in info["classes"]]].to_numpy()

    spread = p_trainer.std(0).max()
    assert spread > 1e-3, "a trained model's probabilities vary between images"
    for name, p in (("notebook 08", nb08.probs), ("predict", p_files)):
        diff = np.abs(p - p_trainer).max()
        print(f"max |p({name}) - p(trainer)| = {diff:.2e}")
        assert diff <= ATOL, name
    assert (p_files.argmax(1) == p_trainer.argmax(1)).all()
    # and what they agree on is a real difference: images not normalised as in training
    # (no mean/std) give probabilities more than 1e-3 away
    x = torch.stack([tr.val_loader.dataset[i][0] for i in range(len(val))])
    with torch.inference_mode():
        raw = model((x.float() / 255).contiguous(memory_format=torch.channels_last))
    assert np.abs(raw.double().softmax(1).numpy() - p_trainer).max() > 1e-3

    # notebook 07's check reproduces the recorded validation metrics
    from skinhelpers.train.experiment import evaluate_checkpoint

    check = evaluate_checkpoint(best, tr.val_loader.dataset, batch_size=16)
    recorded = info["metrics"]
    assert check["balanced_accuracy"] == recorded["balanced_accuracy"]
    assert math.isclose(check["loss"], recorded["loss"], abs_tol=1e-6)


# ----------------------------------------------------------------------------- metrics


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")  # float32 softmax
def test_validation_columns_come_from_the_one_metrics_function():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(60, 4)) * 3, dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 4, 60))
    cols = val_metrics(logits, y, 2)
    assert (
        list(cols)
        == list(VAL_COLUMNS)
        == ["loss", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "positive_auc"]
    )
    full = classification_metrics(y.numpy(), torch.softmax(logits, 1).numpy(), 2, logits)
    assert cols == {c: full[k] for c, k in VAL_COLUMNS.items()}
    assert cols["loss"] == torch.nn.functional.cross_entropy(logits, y).item()
    from sklearn.metrics import roc_auc_score

    assert cols["positive_auc"] == roc_auc_score(y.numpy() == 2, full_probs(logits)[:, 2])
    # the keys notebook 08 reports, unchanged
    assert list(classification_metrics(y.numpy(), full_probs(logits))) == [
        "n",
        "accuracy",
        "balanced_accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "roc_auc_macro_ovr",
        "pr_auc_macro",
        "log_loss",
    ]


def full_probs(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), 1).numpy()


def test_macro_auc_over_present_classes_and_absent_class_f1():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), 40)
    y = rng.integers(0, 4, 40)
    m = classification_metrics(y, probs)
    assert m["roc_auc_macro_ovr"] == roc_auc_score(y, probs, multi_class="ovr")
    y3 = np.where(y == 3, 0, y)  # class 3 absent from y
    probs3 = probs.copy()
    probs3[:, 3] = 0  # ... and never predicted: left out of the macro F1, not scored 0
    probs3 /= probs3.sum(1, keepdims=True)
    m3 = classification_metrics(y3, probs3)
    assert m3["f1_macro"] == f1_score(y3, probs3.argmax(1), average="macro")
    assert m3["roc_auc_macro_ovr"] == np.mean(
        [roc_auc_score(y3 == c, probs3[:, c]) for c in range(3)]
    )
    assert math.isnan(classification_metrics(np.zeros(5, int), probs[:5], 1)["positive_auc"])
    yb = rng.integers(0, 2, 30)
    pb = rng.dirichlet(np.ones(2), 30)
    assert classification_metrics(yb, pb)["roc_auc_macro_ovr"] == roc_auc_score(yb, pb[:, 1])
