"""Input normalisation variants of the model trials (``name@weights|dataset|sample``): the
weights' statistics (ImageNet), the training set's featurewise mean/std, samplewise
centering; each carried by the checkpoint so that inference needs nothing else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_train import demo_run_folder

from skinhelpers.data.cache import ImageCache, channel_stats
from skinhelpers.model import checkpoints
from skinhelpers.model.factory import IMAGENET_MEAN, build_model, parse_variant
from skinhelpers.train import experiment
from skinhelpers.train.plots import paired_comparisons


def test_parse_variant_reads_the_normalisation():
    v = parse_variant("efficientnet_lite0:frozen@dataset")
    assert (v["arch"], v["pretrained"], v["frozen"], v["input_norm"]) == (
        "efficientnet_lite0",
        True,
        True,
        "dataset",
    )
    assert parse_variant("small_cnn")["input_norm"] == "weights"
    assert parse_variant("small_cnn@sample")["input_norm"] == "sample"
    with pytest.raises(ValueError, match=r"input normalisation 'zca'.*not one of"):
        parse_variant("small_cnn@zca")


def test_samplewise_centering_ignores_a_per_image_colour_shift():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    shift = torch.tensor([0.5, -0.3, 0.2]).view(1, 3, 1, 1)
    centred = build_model("small_cnn", 3, drop_rate=0.0, sample_center=True).eval()
    plain = build_model("small_cnn", 3, drop_rate=0.0).eval()
    plain.load_state_dict(centred.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(centred(x + shift), centred(x), atol=1e-5, rtol=0)
        # without it the shift reaches the features (the untrained head's logits are tiny)
        feats = plain.backbone(x)
        moved = (plain.backbone(x + shift) - feats).norm() / feats.norm()
        assert moved > 0.05  # measured 0.098: the shift changes the features by ~10%


def test_channel_stats_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    cache = ImageCache(path=tmp_path / "x", meta={}, images=imgs)
    rows = np.array([7, 1, 3, 4])
    mean, std = channel_stats(cache, rows, chunk=3)
    x = imgs[rows].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(std, x.std(0), atol=1e-9)
    with pytest.raises(ValueError, match="no images"):
        channel_stats(cache, [])


@pytest.mark.parametrize("norm", ["dataset", "sample"])
def test_the_checkpoint_carries_the_normalisation(demo_manifest, tmp_path, norm):
    run = demo_run_folder(demo_manifest, tmp_path / "run")
    data = experiment.load_data(run, 32, workers=0, show_progress=False)
    cfg = experiment.make_config(
        dict(arch=f"small_cnn@{norm}", epochs=1, batch_size=16, workers=0, tensorboard=False),
        None,
    )
    experiment.train(cfg, data, run / "out")
    path = run / "out" / "checkpoints" / "best.pt"
    model, info = checkpoints.model_from_checkpoint(path)
    if norm == "dataset":
        want = channel_stats(data.train_ds.cache, data.train_ds.rows)
        np.testing.assert_allclose(info["mean"], want[0])
        np.testing.assert_allclose(info["std"], want[1])
        assert not np.allclose(info["mean"], IMAGENET_MEAN, atol=0.01)
        assert not model.sample_center
    else:
        assert info["model_kwargs"]["sample_center"] and model.sample_center
        np.testing.assert_allclose(info["mean"], IMAGENET_MEAN)
    # the rebuilt checkpoint reproduces its recorded validation score
    check = experiment.evaluate_checkpoint(path, data.val_ds, 32)
    saved = info["metrics"]["balanced_accuracy"]
    assert check["balanced_accuracy"] == pytest.approx(saved, abs=1e-6)


def test_paired_comparisons_ask_the_normalisation_question():
    t = pd.DataFrame(
        {
            "trial": [
                "efficientnet_lite0",
                "efficientnet_lite0@dataset",
                "efficientnet_lite0:scratch",
            ],
            "balanced_accuracy": [0.5, 0.45, 0.3],
        }
    )
    q = paired_comparisons(t).set_index("question")
    assert q.loc["pretrained vs random init", "A - B"] == pytest.approx(0.2)
    row = q.loc["the weights' statistics vs dataset featurewise mean/std"]
    assert (row["A"], row["B"], row["A - B"]) == (
        "efficientnet_lite0",
        "efficientnet_lite0@dataset",
        pytest.approx(0.05),
    )
    assert len(q) == 2  # @dataset is not compared with :scratch
