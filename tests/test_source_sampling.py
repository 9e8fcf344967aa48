"""Source-balanced sampling (several datasets in one run): the weights, the prior they
imply for the logit adjustment, and the draws of the sampler."""

from __future__ import annotations

import numpy as np
import pytest

from skinhelpers.train import sampling
from skinhelpers.train.config import TrainConfig


def _toy():
    # source a: 900 images (800 of class 0, 100 of class 1); source b: 100 (50/50)
    labels = np.array([0] * 800 + [1] * 100 + [0] * 50 + [1] * 50)
    sources = np.array(["a"] * 900 + ["b"] * 100)
    return labels, sources


def test_source_power_one_gives_every_source_the_same_weight():
    labels, sources = _toy()
    w = sampling.sample_weights(labels, 2, 0.0, sources, 1.0)
    assert w[sources == "a"].sum() == pytest.approx(0.5)
    assert w[sources == "b"].sum() == pytest.approx(0.5)
    # within a source, images stay equal (class power 0)
    assert np.ptp(w[sources == "a"]) == pytest.approx(0)
    # without sources: the class rule alone, as before
    plain = sampling.sample_weights(labels, 2, 0.5)
    n = np.bincount(labels)
    assert plain[0] / plain[920] == pytest.approx(1.0)  # same class, same weight
    assert plain[0] / plain[800] == pytest.approx((n[0] / n[1]) ** -0.5)


def test_prior_follows_the_weights():
    labels, sources = _toy()
    p = sampling.sampling_prior(labels, 2, 0.0, sources, 1.0).numpy()
    # half the draws from a (8/9 class 0), half from b (1/2 class 0)
    assert p[0] == pytest.approx(0.5 * 8 / 9 + 0.5 * 0.5, abs=1e-6)
    old = sampling.sampling_prior(labels, 2, 0.5).numpy()
    n = np.bincount(labels).astype(float)
    assert old == pytest.approx(n**0.5 / (n**0.5).sum(), abs=1e-6)


def test_sampler_draws_sources_equally_often():
    labels, sources = _toy()
    s = sampling.train_sampler(labels, 2, 0.0, seed=1, sources=sources, source_power=1.0)
    assert isinstance(s, sampling.BalancedSampler)
    drawn = np.array(list(s))
    share_b = (sources[drawn] == "b").mean()
    assert 0.45 < share_b < 0.55  # 1,000 draws: b is a tenth of the images, half the draws
    # off (power 0 or no sources): a plain shuffle sees b a tenth of the time
    plain = np.array(list(sampling.train_sampler(labels, 2, 0.0, seed=1)))
    assert (sources[plain] == "b").mean() == pytest.approx(0.1)


def test_one_source_draws_as_a_run_without_sources():
    """The default power (1) changes nothing for a run of one dataset: same sampler, same
    order, same prior as without sources."""
    labels, _ = _toy()
    one = np.array(["ham10000"] * len(labels))
    s = sampling.train_sampler(labels, 2, 0.0, seed=1, sources=one, source_power=1.0)
    assert not isinstance(s, sampling.BalancedSampler)
    assert list(s) == list(sampling.train_sampler(labels, 2, 0.0, seed=1))
    p = sampling.sampling_prior(labels, 2, 0.0, one, 1.0).numpy()
    assert p == pytest.approx(sampling.sampling_prior(labels, 2, 0.0).numpy(), abs=1e-7)
    assert TrainConfig().source_balance_power == 1.0


def test_config_refuses_a_negative_source_power():
    with pytest.raises(ValueError, match="source_balance_power"):
        TrainConfig(source_balance_power=-1).check()
