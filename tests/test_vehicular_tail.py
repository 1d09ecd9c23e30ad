"""The GPD tail model: likelihood, moments, batched MLE, federated against centralised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import genpareto

from fl_gym.sim.vehicular.tail import (
    GPDParams,
    _gradients,
    federated_round,
    fit_gpd_centralised,
    fit_gpd_federated,
    gpd_conditional_moments,
    gpd_log_likelihood,
    gpd_survival,
    local_gpd_steps,
    pad_samples,
)

PARAMS = [(3.0, 0.25), (1.0, -0.2), (500.0, 0.0), (2.0, 1e-8)]


@pytest.mark.parametrize(("scale", "shape"), PARAMS)
def test_log_likelihood_survival_and_moments_match_scipy(scale: float, shape: float) -> None:
    dist = genpareto(shape, scale=scale)
    x = dist.ppf(np.linspace(0.0, 0.999, 50))
    np.testing.assert_allclose(gpd_log_likelihood(x, scale, shape), dist.logpdf(x), rtol=1e-9)
    np.testing.assert_allclose(gpd_survival(x, scale, shape), dist.sf(x), rtol=1e-7, atol=1e-12)
    mean, second = gpd_conditional_moments(scale, shape)
    assert mean == pytest.approx(dist.mean(), rel=1e-7)
    assert second == pytest.approx(dist.var() + dist.mean() ** 2, rel=1e-7)
    if shape < 0:  # beyond the end of the support
        end = -scale / shape
        assert gpd_log_likelihood(end * 1.01, scale, shape) == -np.inf
        assert gpd_survival(end * 1.01, scale, shape) == 0.0


def test_moments_do_not_exist_for_heavy_tails() -> None:
    mean, second = gpd_conditional_moments([1.0, 1.0], [0.6, 1.2])
    assert np.isfinite(mean[0]) and mean[1] == np.inf and np.all(second == np.inf)


@pytest.mark.parametrize("shape", [0.3, 1e-5, 0.0, -0.1])
def test_gradients_match_finite_differences(shape: float) -> None:
    rng = np.random.default_rng(0)
    x = genpareto.rvs(0.1, scale=2.0, size=(3, 40), random_state=rng)
    mask = rng.uniform(size=x.shape) < 0.8
    log_scale = np.log(np.array([2.0, 3.0, 4.5]))
    xi = np.full(3, shape)

    def mean_ll(ls: np.ndarray, s: np.ndarray) -> np.ndarray:
        ll = gpd_log_likelihood(x, np.exp(ls)[:, None], s[:, None])
        return np.where(mask, ll, 0.0).sum(axis=1) / mask.sum(axis=1)

    g_scale, g_shape = _gradients(x, mask, log_scale, xi)
    h = 1e-6
    fd_scale = (mean_ll(log_scale + h, xi) - mean_ll(log_scale - h, xi)) / (2 * h)
    fd_shape = (mean_ll(log_scale, xi + h) - mean_ll(log_scale, xi - h)) / (2 * h)
    np.testing.assert_allclose(g_scale, fd_scale, atol=1e-6)
    np.testing.assert_allclose(g_shape, fd_shape, atol=1e-5)


def test_batched_mle_recovers_each_vehicles_parameters() -> None:
    """One batched computation, three vehicles with different true GPDs and sample counts."""
    rng = np.random.default_rng(1)
    truths = [(3.0, 0.2), (1.0, -0.2), (800.0, 0.05)]
    samples = [
        genpareto.rvs(xi, scale=s, size=n, random_state=rng)
        for (s, xi), n in zip(truths, (20000, 15000, 25000), strict=True)
    ]
    x, mask = pad_samples(samples)
    assert mask.sum(axis=1).tolist() == [20000, 15000, 25000]
    start_scale = np.array([np.mean(s) for s in samples])
    sigma, xi = local_gpd_steps(x, mask, start_scale, 0.0, steps=600, learning_rate=0.3)
    for k, (s, shape) in enumerate(truths):
        assert sigma[k] == pytest.approx(s, rel=0.05)
        assert xi[k] == pytest.approx(shape, abs=0.03)
        # The gradient steps reach the maximum likelihood found by scipy.
        mle = fit_gpd_centralised(samples[k])
        assert sigma[k] == pytest.approx(mle.scale, rel=1e-3)
        assert xi[k] == pytest.approx(mle.shape, abs=1e-3)
    # A wrong parameter has a lower likelihood than the estimate.
    ll = gpd_log_likelihood(samples[0], sigma[0], xi[0]).mean()
    assert ll > gpd_log_likelihood(samples[0], sigma[0], xi[0] + 0.1).mean()


def test_centralised_fit_recovers_known_parameters() -> None:
    rng = np.random.default_rng(2)
    for scale, shape in [(5.0, 0.3), (2.0, -0.25)]:
        fit = fit_gpd_centralised(genpareto.rvs(shape, scale=scale, size=30000, random_state=rng))
        assert fit.scale == pytest.approx(scale, rel=0.04)
        assert fit.shape == pytest.approx(shape, abs=0.03)
    with pytest.raises(ValueError, match="exceedances"):
        fit_gpd_centralised([1.0])


def _iid_vehicles(num: int = 40, per_vehicle: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    sizes = rng.integers(per_vehicle // 3, per_vehicle * 2, num)
    return [genpareto.rvs(0.15, scale=1500.0, size=n, random_state=rng) for n in sizes]


def test_federated_estimate_converges_to_the_centralised_one_on_iid_vehicles() -> None:
    samples = _iid_vehicles()
    central = fit_gpd_centralised(np.concatenate(samples))
    # One local step per round: weighted FedAvg of the steps is a step on the pooled likelihood.
    one = fit_gpd_federated(samples, rounds=400, local_steps=1, learning_rate=0.3)
    assert one.params.scale == pytest.approx(central.scale, rel=1e-3)
    assert one.params.shape == pytest.approx(central.shape, abs=1e-3)
    # Several local steps drift a little on finite local samples, but not far.
    five = fit_gpd_federated(samples, rounds=100, local_steps=5, learning_rate=0.3)
    assert five.params.scale == pytest.approx(central.scale, rel=0.03)
    assert five.params.shape == pytest.approx(central.shape, abs=0.02)
    # The error shrinks over the rounds.
    err = np.abs(five.history[:, 1] - central.shape)
    assert err[-1] < 0.2 * err[0]


def test_one_local_step_converges_to_the_pooled_mle_on_heterogeneous_vehicles() -> None:
    # Four vehicles with different tails and sample counts: the pooled MLE is none of theirs.
    # With one local step, averaging (log sigma, xi) makes each round a step on the pooled
    # likelihood; averaging sigma itself leaves a Jensen bias of several per cent.
    rng = np.random.default_rng(7)
    spec = [(400.0, 0.0, 150), (900.0, 0.1, 60), (1500.0, 0.2, 100), (2500.0, -0.1, 40)]
    samples = [genpareto.rvs(xi, scale=s, size=n, random_state=rng) for s, xi, n in spec]
    central = fit_gpd_centralised(np.concatenate(samples))
    fed = fit_gpd_federated(samples, rounds=600, local_steps=1, learning_rate=0.3)
    assert fed.params.scale == pytest.approx(central.scale, rel=2e-3)
    assert fed.params.shape == pytest.approx(central.shape, rel=2e-3)


def test_values_exchanged_are_counted() -> None:
    samples = _iid_vehicles(10, 50)
    samples[3] = np.array([])  # a vehicle without exceedances takes no part
    result = fit_gpd_federated(samples, rounds=7, local_steps=2)
    active = 9
    assert result.values_uploaded == 2 * active + 3 * active * 7
    assert result.values_downloaded == 2 * 10 * 7
    assert result.values_exchanged == result.values_uploaded + result.values_downloaded
    assert result.history.shape == (8, 2)


def test_round_is_a_sample_weighted_average_of_local_log_scales_and_shapes() -> None:
    samples = _iid_vehicles(5, 100)
    samples[2] = np.array([])
    x, mask = pad_samples(samples)
    start = GPDParams(1000.0, 0.05)
    new, active = federated_round(x, mask, start, local_steps=3, learning_rate=0.2)
    assert active == 4
    local = [
        local_gpd_steps(x[k : k + 1], mask[k : k + 1], 1000.0, 0.05, steps=3, learning_rate=0.2)
        for k in (0, 1, 3, 4)
    ]
    counts = np.array([len(samples[k]) for k in (0, 1, 3, 4)], dtype=float)
    # (log sigma, xi) are averaged: the coordinates the vehicles step in.
    log_scales = [np.log(s[0][0]) for s in local]
    expected_scale = np.exp(np.dot(counts, log_scales) / counts.sum())
    expected_shape = sum(c * s[1][0] for c, s in zip(counts, local, strict=True)) / counts.sum()
    assert new.scale == pytest.approx(expected_scale, rel=1e-12)
    assert new.shape == pytest.approx(expected_shape, rel=1e-12, abs=1e-15)
    # Nobody with samples: nothing changes.
    empty = np.zeros((3, 4)), np.zeros((3, 4), dtype=bool)
    assert federated_round(*empty, start, local_steps=3, learning_rate=0.2) == (start, 0)
    assert torch.get_default_dtype() == torch.float32  # nothing changed torch's defaults


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        GPDParams(-1.0, 0.1)
    with pytest.raises(ValueError, match="rounds"):
        fit_gpd_federated([np.ones(3)], rounds=0)
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_gpd_federated([np.array([])], rounds=2)
