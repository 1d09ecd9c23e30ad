"""Over-the-air aggregation: closed forms, Monte Carlo checks of the MSE, beamformer optimality."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fl_gym.sim.config import ConfigTypeError
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig
from fl_gym.sim.radio.over_the_air import (
    cs_ota_aggregate,
    gaussian_measurement_matrix,
    niht_recover,
    ota_aggregate,
    ota_channels,
    ota_mse,
    receive_beamformer,
    select_ota_devices,
    top_k_sparsify,
)


def rayleigh(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """``(k, n)`` i.i.d. ``CN(0, 1)`` channels."""
    return (rng.standard_normal((k, n)) + 1j * rng.standard_normal((k, n))) / math.sqrt(2.0)


def random_updates(k: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def weighted_mean(updates: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=updates.dtype)
    return (w[:, None] * updates).sum(dim=0) / w.sum()


# -- beamformed aggregation (Yang et al. 2020) -----------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_free_ota_equals_weighted_fedavg_on_cell_channels(dtype: torch.dtype) -> None:
    # Real cell channels: large-scale gains around 1e-10 must not spoil the zero forcing.
    cell = WirelessCell(WirelessConfig(num_antennas=4), num_devices=7)
    cell.reset(np.random.default_rng(3))
    channels = ota_channels(cell.large_scale_gain, cell.fading)
    np.testing.assert_allclose(
        np.abs(channels) ** 2, cell.large_scale_gain[:, None] * np.abs(cell.fading) ** 2
    )
    weights = np.array([12.0, 40.0, 7.0, 100.0, 33.0, 5.0, 61.0])
    updates = random_updates(7, 300, seed=0, dtype=dtype)
    design = receive_beamformer(channels, weights)
    result = ota_aggregate(
        updates, weights, channels, design.beamformer, power_w=cell.config.p_max_w, noise_power_w=0
    )
    assert result.aggregate.dtype == dtype
    assert result.channel_uses == 300
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(
        result.aggregate, weighted_mean(updates, weights), rtol=tolerance, atol=tolerance
    )
    assert result.mse == 0.0 and result.aggregate_mse == 0.0


def test_noise_free_ota_is_exact_for_any_beamformer_not_orthogonal_to_a_channel() -> None:
    rng = np.random.default_rng(1)
    channels = rayleigh(rng, 5, 3)
    weights = rng.uniform(1.0, 50.0, 5)
    beamformer = rayleigh(rng, 1, 3)[0] * 7.0  # not unit norm, not optimised
    updates = random_updates(5, 64, seed=1)
    result = ota_aggregate(updates, weights, channels, beamformer, power_w=0.2, noise_power_w=0.0)
    torch.testing.assert_close(result.aggregate, weighted_mean(updates, weights))


def test_mse_formula_matches_empirical_error_over_noise_draws() -> None:
    rng = np.random.default_rng(2)
    channels = rayleigh(rng, 6, 4) * np.sqrt(rng.uniform(0.3, 3.0, 6))[:, None]
    weights = rng.uniform(5.0, 60.0, 6)
    updates = (
        random_updates(6, 4000, seed=2) * torch.linspace(0.2, 2.0, 6, dtype=torch.float64)[:, None]
    )
    beamformer = receive_beamformer(channels, weights).beamformer
    power_w, noise_w = 0.5, 0.8
    errors = []
    for seed in range(10):  # 40,000 independent channel uses in all
        result = ota_aggregate(
            updates,
            weights,
            channels,
            beamformer,
            power_w=power_w,
            noise_power_w=noise_w,
            generator=torch.Generator().manual_seed(seed),
        )
        errors.append(result.aggregate - weighted_mean(updates, weights))
    error = torch.cat(errors)
    # The paper's MSE, computed here from its definition rather than through the module.
    inner = np.abs(channels @ beamformer.conj()) ** 2
    paper_mse = (
        noise_w / power_w * np.max(weights**2 * np.vdot(beamformer, beamformer).real / inner)
    )
    assert result.mse == pytest.approx(paper_mse, rel=1e-12)
    assert result.mse == pytest.approx(
        ota_mse(channels, weights, beamformer, power_w=power_w, noise_power_w=noise_w), rel=1e-12
    )
    # Real part of the estimate: half the complex noise, in the units of the weighted average.
    scale = float(updates.pow(2).mean(dim=1).sqrt().max())
    expected = scale**2 * paper_mse / (2.0 * weights.sum() ** 2)
    assert result.aggregate_mse == pytest.approx(expected, rel=1e-12)
    assert float(error.pow(2).mean()) == pytest.approx(expected, rel=0.03)
    # Unbiased: the mean error is within a few standard errors of zero.
    assert abs(float(error.mean())) < 4.0 * math.sqrt(expected / error.numel())


def test_transmit_power_respects_budget_and_bottleneck_device_uses_all_of_it() -> None:
    rng = np.random.default_rng(4)
    channels = rayleigh(rng, 8, 2)
    weights = rng.uniform(1.0, 10.0, 8)
    # Equal-power rows: every device sends symbols of mean power exactly 1.
    updates = torch.sign(random_updates(8, 128, seed=4)) * 3.0
    beamformer = receive_beamformer(channels, weights).beamformer
    result = ota_aggregate(updates, weights, channels, beamformer, power_w=0.1, noise_power_w=0.0)
    gains = np.abs(channels @ beamformer.conj()) ** 2 / weights**2
    expected = 0.1 * gains.min() / gains  # |b_k|^2 = eta phi_k^2 / |m^H h_k|^2
    np.testing.assert_allclose(result.transmit_power_w, expected, rtol=1e-12)
    assert result.transmit_power_w.max() == pytest.approx(0.1, rel=1e-12)
    assert result.eta == pytest.approx(0.1 * gains.min(), rel=1e-12)


def test_more_antennas_give_lower_mean_mse() -> None:
    rng = np.random.default_rng(5)
    weights = np.full(8, 20.0)
    mean_mse = []
    for antennas in (1, 2, 4, 8):
        values = []
        for _ in range(25):
            channels = rayleigh(rng, 8, antennas)
            design = receive_beamformer(channels, weights, num_iterations=40, num_starts=2)
            values.append(
                ota_mse(channels, weights, design.beamformer, power_w=1.0, noise_power_w=1.0)
            )
        mean_mse.append(float(np.mean(values)))
    assert all(a > 1.5 * b for a, b in itertools.pairwise(mean_mse)), mean_mse


def test_same_generator_seed_gives_identical_aggregate() -> None:
    rng = np.random.default_rng(6)
    channels, weights = rayleigh(rng, 4, 2), np.ones(4)
    updates = random_updates(4, 50, seed=6)
    beamformer = receive_beamformer(channels, weights).beamformer

    def run(seed: int) -> torch.Tensor:
        return ota_aggregate(
            updates,
            weights,
            channels,
            beamformer,
            power_w=1.0,
            noise_power_w=1.0,
            generator=torch.Generator().manual_seed(seed),
        ).aggregate

    assert torch.equal(run(9), run(9))
    assert not torch.equal(run(9), run(10))


# -- receive beamformer ----------------------------------------------------------------------


def test_beamformer_single_device_is_maximum_ratio_combining() -> None:
    h = rayleigh(np.random.default_rng(7), 1, 6)
    design = receive_beamformer(h, [3.0])
    assert design.min_gain == pytest.approx(np.vdot(h[0], h[0]).real / 9.0, rel=1e-9)
    assert design.upper_bound == pytest.approx(design.min_gain, rel=1e-9)
    assert np.linalg.norm(design.beamformer) == pytest.approx(1.0)


def test_beamformer_orthogonal_channels_closed_form() -> None:
    # For orthogonal g_k the optimum gives each device the same gain 1 / sum_k 1 / ||g_k||^2.
    rng = np.random.default_rng(8)
    basis, _ = np.linalg.qr(rayleigh(rng, 5, 5))
    strengths = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    channels = basis.T[:4] * np.sqrt(strengths[:4])[:, None]
    weights = np.array([1.0, 2.0, 1.0, 3.0])
    norms = strengths[:4] / weights**2
    design = receive_beamformer(channels, weights)
    assert design.min_gain == pytest.approx(1.0 / np.sum(1.0 / norms), rel=1e-6)
    # The dual bound is tight here; mirror descent approaches it at rate O(1 / sqrt(T)).
    assert design.min_gain * (1 - 1e-12) <= design.upper_bound <= 1.02 * design.min_gain


def test_beamformer_matches_exhaustive_search_for_two_antennas() -> None:
    # Unit m in C^2 up to a phase: (cos t, sin t e^{i p}); a dense grid finds the optimum.
    t, p = np.meshgrid(np.linspace(0.0, np.pi / 2, 301), np.linspace(0.0, 2 * np.pi, 601))
    grid = np.stack([np.cos(t).ravel(), np.sin(t).ravel() * np.exp(1j * p.ravel())], axis=1)
    rng = np.random.default_rng(9)
    for num_devices in (3, 6, 12):
        channels = rayleigh(rng, num_devices, 2)
        weights = rng.uniform(1.0, 3.0, num_devices)
        design = receive_beamformer(channels, weights)
        exhaustive = float((np.abs(grid.conj() @ channels.T) ** 2 / weights**2).min(axis=1).max())
        achieved = float(np.min(np.abs(channels @ design.beamformer.conj()) ** 2 / weights**2))
        assert achieved == pytest.approx(design.min_gain, rel=1e-9)
        assert achieved >= 0.999 * exhaustive
        assert design.upper_bound >= exhaustive * (1 - 1e-9)


def test_beamformer_never_worse_than_its_starting_directions() -> None:
    rng = np.random.default_rng(10)
    for _ in range(5):
        channels = rayleigh(rng, 20, 4)
        weights = rng.uniform(1.0, 5.0, 20)
        design = receive_beamformer(channels, weights, num_iterations=50)
        directions = channels / np.linalg.norm(channels, axis=1, keepdims=True)
        starts = np.vstack([directions.sum(axis=0), directions])
        starts /= np.linalg.norm(starts, axis=1, keepdims=True)
        start_values = (np.abs(starts.conj() @ channels.T) ** 2 / weights**2).min(axis=1)
        assert design.min_gain >= start_values.max() * (1 - 1e-12)
        assert design.min_gain <= design.upper_bound * (1 + 1e-12)


# -- device selection ------------------------------------------------------------------------


def test_selection_all_and_greedy_channel() -> None:
    rng = np.random.default_rng(11)
    channels = rayleigh(rng, 10, 3)
    weights = rng.uniform(1.0, 4.0, 10)
    assert select_ota_devices(channels, weights, method="all").all()
    mask = select_ota_devices(channels, weights, method="greedy_channel", num_devices=4)
    strength = np.linalg.norm(channels, axis=1) ** 2 / weights**2
    assert mask.sum() == 4
    assert strength[mask].min() > strength[~mask].max()


def test_sparse_selection_meets_mse_target_and_sets_are_nested() -> None:
    rng = np.random.default_rng(12)
    channels = rayleigh(rng, 12, 4) * np.sqrt(rng.uniform(0.05, 2.0, 12))[:, None]
    weights = rng.uniform(1.0, 3.0, 12)
    power_w, noise_w = 1.0, 0.1
    everyone = receive_beamformer(channels, weights)
    mse_all = noise_w / power_w / everyone.min_gain
    kept = select_ota_devices(
        channels,
        weights,
        method="sparse",
        mse_target=mse_all * 1.001,
        power_w=power_w,
        noise_power_w=noise_w,
    )
    assert kept.all()
    previous = kept
    for fraction in (0.5, 0.2, 0.05, 0.01):
        target = mse_all * fraction
        mask = select_ota_devices(
            channels,
            weights,
            method="sparse",
            mse_target=target,
            power_w=power_w,
            noise_power_w=noise_w,
        )
        if mask.any():
            # Recompute the MSE of the chosen set independently of the selection's bookkeeping.
            design = receive_beamformer(channels[mask], weights[mask])
            mse = ota_mse(
                channels[mask],
                weights[mask],
                design.beamformer,
                power_w=power_w,
                noise_power_w=noise_w,
            )
            assert mse <= target * (1 + 1e-9)
        # Greedy removal follows one order whatever the target: a tighter target keeps a subset.
        assert not np.any(mask & ~previous)
        previous = mask
    assert previous.sum() < 12


def test_sparse_selection_is_empty_when_no_device_can_meet_the_target() -> None:
    channels = rayleigh(np.random.default_rng(13), 4, 2)
    mask = select_ota_devices(
        channels, np.ones(4), method="sparse", mse_target=1e-12, power_w=1.0, noise_power_w=1.0
    )
    assert not mask.any()


# -- compressive-sensing over the air --------------------------------------------------------


def test_top_k_sparsify_keeps_largest_magnitudes() -> None:
    updates = torch.tensor([[0.1, -3.0, 2.0, 0.5], [4.0, 0.0, -0.2, -5.0]])
    expected = torch.tensor([[0.0, -3.0, 2.0, 0.0], [4.0, 0.0, 0.0, -5.0]])
    assert torch.equal(top_k_sparsify(updates, 2), expected)


def test_measurement_matrix_is_seeded_with_variance_one_over_s() -> None:
    a = gaussian_measurement_matrix(200, 500, seed=3)
    assert torch.equal(a, gaussian_measurement_matrix(200, 500, seed=3))
    assert not torch.equal(a, gaussian_measurement_matrix(200, 500, seed=4))
    assert float(a.var()) == pytest.approx(1.0 / 200, rel=0.02)
    assert abs(float(a.mean())) < 4 * math.sqrt(1.0 / 200 / a.numel())


def test_niht_recovers_generic_sparse_vector_exactly() -> None:
    generator = torch.Generator().manual_seed(16)
    x = torch.zeros(400, dtype=torch.float64)
    support = torch.randperm(400, generator=generator)[:15]
    x[support] = torch.randn(15, generator=generator, dtype=torch.float64)
    a = gaussian_measurement_matrix(100, 400, seed=16)
    recovered = niht_recover(a @ x, a, 15)
    torch.testing.assert_close(recovered, x, rtol=1e-9, atol=1e-10)


def test_noise_free_cs_ota_recovers_weighted_sum_of_sparsified_updates() -> None:
    updates = random_updates(5, 300, seed=17)
    weights = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    result = cs_ota_aggregate(
        updates,
        sparsity=4,
        num_measurements=90,
        matrix_seed=17,
        receive_power_w=1.0,
        noise_power_w=0.0,
        weights=weights,
    )
    assert result.channel_uses == 90
    # Error accumulation: what was kept plus what remains is the update.
    assert torch.equal(top_k_sparsify(updates, 4), result.sparse_updates)
    assert int((result.sparse_updates != 0).sum(dim=1).max()) == 4
    expected = weighted_mean(result.sparse_updates, weights)
    torch.testing.assert_close(result.aggregate, expected, rtol=1e-9, atol=1e-10)


def test_noisy_cs_ota_error_is_of_the_noise_order() -> None:
    updates = random_updates(4, 200, seed=18)
    result = cs_ota_aggregate(
        updates,
        sparsity=3,
        num_measurements=80,
        matrix_seed=18,
        receive_power_w=1.0,
        noise_power_w=1e-4,
        generator=torch.Generator().manual_seed(18),
    )
    expected = result.sparse_updates.mean(dim=0)
    error = float((result.aggregate - expected).pow(2).sum())
    # Least squares on the right 12-entry support: error energy about 12 noise variances,
    # amplified by at most the conditioning of a 80 x 12 Gaussian submatrix.
    assert error < 50.0 * 12 * result.noise_variance
    assert result.noise_variance > 0.0


# -- validation ------------------------------------------------------------------------------


def test_invalid_inputs_name_the_problem() -> None:
    rng = np.random.default_rng(19)
    channels = rayleigh(rng, 3, 2)
    updates = random_updates(3, 4, seed=19)
    m = np.array([1.0, 0.0], dtype=complex)
    with pytest.raises(ValueError, match=r"torch\.Generator is required"):
        ota_aggregate(updates, np.ones(3), channels, m, power_w=1.0, noise_power_w=1.0)
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        ota_aggregate(updates, [1.0, 0.0, 1.0], channels, m, power_w=1.0, noise_power_w=0.0)
    with pytest.raises(ValueError, match="channels must have one row per device"):
        ota_aggregate(updates, np.ones(3), channels[:2], m, power_w=1.0, noise_power_w=0.0)
    with pytest.raises(ValueError, match="orthogonal to the channels of devices"):
        ota_aggregate(
            updates, np.ones(3), np.array([[1, 0], [0, 1], [1, 1]]), m, power_w=1, noise_power_w=0
        )
    with pytest.raises(ValueError, match=r"updates must be finite; rows \[0, 1, 2\] hold NaN"):
        ota_aggregate(
            updates.index_fill(1, torch.tensor([0]), math.nan),
            np.ones(3),
            channels,
            m,
            power_w=1.0,
            noise_power_w=0.0,
        )
    with pytest.raises(ValueError, match="method must be one of"):
        select_ota_devices(channels, np.ones(3), method="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs mse_target"):
        select_ota_devices(channels, np.ones(3), method="sparse")
    with pytest.raises(TypeError, match=r"updates must be a torch\.Tensor"):
        top_k_sparsify(np.ones((2, 3)), 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, "2.0", math.nan, -1.0, 0.0])
def test_power_is_validated_as_everywhere_else(bad: object) -> None:
    """The radio functions share the validators of ``fl_gym.sim.config``: a bool or a string is
    not a power (a type error), and a power must be finite and > 0."""
    updates = random_updates(3, 8, seed=0)
    channels = rayleigh(np.random.default_rng(0), 3, 2)
    m = receive_beamformer(channels, np.ones(3)).beamformer
    error = ConfigTypeError if isinstance(bad, (bool, str)) else ValueError
    with pytest.raises(error, match="power_w"):
        ota_aggregate(updates, np.ones(3), channels, m, power_w=bad, noise_power_w=0.0)
