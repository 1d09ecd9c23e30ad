"""Broadband analog aggregation (fl_gym.sim.radio.broadband_analog,
fl_gym.sim.transports.broadband) and the model-broadcast downlink of the cell."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.integrate import quad

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.sim import (
    BroadbandAnalog,
    DigitalUplink,
    Federation,
    FederationConfig,
    make_federated_dataset,
)
from fl_gym.sim.radio.broadband_analog import (
    baa_airtime_s,
    baa_receive_power,
    broadband_analog_aggregate,
    broadband_fading,
    expected_truncation_ratio,
)
from fl_gym.sim.radio.cell import WirelessCell, WirelessConfig

NOISELESS_DBM_PER_HZ = -250.0
"""The lowest noise density a cell takes: receiver noise some 250 dB below the signals."""


def _federation(
    seed: int, *, num_devices: int = 6, **wireless: object
) -> tuple[Federation, np.random.Generator]:
    rng = np.random.default_rng(seed)
    data = make_federated_dataset("digits", num_clients=num_devices, rng=rng)
    config = WirelessConfig(
        num_subchannels=num_devices,
        battery_min_j=1e3,
        battery_max_j=1e3,
        **wireless,  # type: ignore[arg-type]
    )
    cell = WirelessCell(config, num_devices)
    return Federation(data, FederationConfig(), cell=cell, rng=rng), rng


def _weighted_mean(updates: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    w = torch.as_tensor(weights / weights.sum(), dtype=updates.dtype)
    return (w[:, None] * updates).sum(dim=0)


# -- the physics -----------------------------------------------------------------------------


def test_without_noise_and_truncation_it_is_fedavg() -> None:
    rng = np.random.default_rng(0)
    updates = torch.as_tensor(rng.standard_normal((5, 203)) * rng.uniform(0.1, 10, (5, 1)))
    weights = rng.integers(10, 100, 5).astype(float)
    gain = 10 ** rng.uniform(-13, -8, 5)
    fading = broadband_fading(rng, 5, 16)
    result = broadband_analog_aggregate(
        updates,
        weights,
        gain,
        fading,
        gain_threshold=1e-12,
        p_max_w=0.2,
        bandwidth_hz=1e6,
        noise_psd_w_per_hz=0.0,
    )
    assert not (np.abs(fading) ** 2 < 1e-12).any()  # the threshold truncates nothing here
    assert result.truncation_ratio == 0.0
    torch.testing.assert_close(
        result.aggregate, _weighted_mean(updates, weights), rtol=0, atol=1e-12
    )


def test_truncated_entries_average_the_devices_left() -> None:
    updates = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], dtype=torch.float64)
    # Two sub-carriers: device 1 is in a fade on sub-carrier 1, entries 1 and 3 ride on it.
    fading = np.array([[1.0, 1.0], [1.0, 0.1]], dtype=complex)
    result = broadband_analog_aggregate(
        updates,
        np.array([1.0, 3.0]),
        np.array([1e-10, 1e-10]),
        fading,
        gain_threshold=0.5,
        p_max_w=0.2,
        bandwidth_hz=1e6,
        noise_psd_w_per_hz=0.0,
    )
    expected = torch.tensor(
        [0.25 * 1 + 0.75 * 5, 2.0, 0.25 * 3 + 0.75 * 7, 4.0], dtype=torch.float64
    )
    torch.testing.assert_close(result.aggregate, expected, rtol=0, atol=1e-12)
    assert result.truncation_ratio == pytest.approx(2 / 8)
    assert result.active.tolist() == [[True, True], [True, False]]


def test_transmit_power_never_exceeds_the_budget() -> None:
    """Property over many draws: every device's average power over the round is within
    p_max, and either the paper's rho0 or the budget of the hungriest device is binding."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        k = int(rng.integers(1, 12))
        d = int(rng.integers(1, 300))
        m = int(rng.integers(1, 64))
        p_max = float(10 ** rng.uniform(-3, 0))
        threshold = float(10 ** rng.uniform(-4, 0.5))
        scale = 10 ** rng.uniform(-3, 3, (k, 1))
        updates = torch.as_tensor(rng.standard_cauchy((k, d)) * scale)
        gain = 10 ** rng.uniform(-14, -7, k)
        result = broadband_analog_aggregate(
            updates,
            rng.integers(1, 100, k).astype(float),
            gain,
            broadband_fading(rng, k, m),
            gain_threshold=threshold,
            p_max_w=p_max,
            bandwidth_hz=1e6,
            noise_psd_w_per_hz=1e-20,
            generator=torch.Generator().manual_seed(0),
        )
        assert np.all(result.transmit_power_w >= 0.0)
        assert result.transmit_power_w.max() <= p_max * (1 + 1e-12)
        paper = baa_receive_power(gain, p_max_w=p_max, gain_threshold=threshold, num_subcarriers=m)
        assert result.receive_power_w <= paper * (1 + 1e-12)
        binding = math.isclose(result.receive_power_w, paper, rel_tol=1e-12) or math.isclose(
            result.transmit_power_w.max(), p_max, rel_tol=1e-9
        )
        assert binding or result.active.sum() == 0
        assert np.isfinite(result.aggregate.numpy()).all()


def test_paper_receive_power_meets_the_expected_budget() -> None:
    """rho0 = p_max G_min / (M E1(g_th)): the weakest device's expected power over M Rayleigh
    sub-carriers, integrated numerically, is exactly p_max."""
    gain = np.array([3e-11, 1e-12, 5e-10])
    p_max, threshold, m = 0.2, 0.3, 8
    rho0 = baa_receive_power(gain, p_max_w=p_max, gain_threshold=threshold, num_subcarriers=m)
    inverse, _ = quad(lambda x: math.exp(-x) / x, threshold, math.inf)
    assert m * rho0 / gain.min() * inverse == pytest.approx(p_max, rel=1e-9)


def test_truncation_ratio_and_noise_match_their_closed_forms() -> None:
    rng = np.random.default_rng(2)
    k, d, m = 8, 20_000, 500
    updates = torch.as_tensor(rng.standard_normal((k, d)))
    weights = np.ones(k)
    result = broadband_analog_aggregate(
        updates,
        weights,
        np.full(k, 1e-11),
        broadband_fading(rng, k, m),
        gain_threshold=0.2,
        p_max_w=0.2,
        bandwidth_hz=1e6,
        noise_psd_w_per_hz=1e-17,
        generator=torch.Generator().manual_seed(3),
    )
    # k * m = 4000 sub-carrier draws: the truncated fraction is within 4 standard errors.
    expected = expected_truncation_ratio(0.2)
    assert abs(result.truncation_ratio - expected) < 4 * math.sqrt(
        expected * (1 - expected) / (k * m)
    )
    clean = broadband_analog_aggregate(
        updates,
        weights,
        np.full(k, 1e-11),
        broadband_fading(np.random.default_rng(2).spawn(1)[0], k, m),
        gain_threshold=0.2,
        p_max_w=0.2,
        bandwidth_hz=1e6,
        noise_psd_w_per_hz=0.0,
    )
    assert clean.aggregate_mse == 0.0
    # The same fading again (same draws) without noise: the difference is the noise alone.
    rng = np.random.default_rng(2)
    rng.standard_normal((k, d))
    fading = broadband_fading(rng, k, m)
    noisy, quiet = (
        broadband_analog_aggregate(
            updates,
            weights,
            np.full(k, 1e-11),
            fading,
            gain_threshold=0.2,
            p_max_w=0.2,
            bandwidth_hz=1e6,
            noise_psd_w_per_hz=n0,
            generator=torch.Generator().manual_seed(3),
        )
        for n0 in (1e-17, 0.0)
    )
    error = (noisy.aggregate - quiet.aggregate).pow(2).mean().item()
    assert noisy.receive_power_w == quiet.receive_power_w
    assert error == pytest.approx(noisy.aggregate_mse, rel=0.05)


def test_airtime_closed_form() -> None:
    assert baa_airtime_s(4810, 64, 10e6) == pytest.approx(76 * 64 / 10e6)
    assert baa_airtime_s(128, 64, 1e6) == pytest.approx(128 / 1e6)
    with pytest.raises(ValueError, match="num_subcarriers"):
        baa_airtime_s(10, 0, 1e6)


def test_bad_inputs_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match=r"gain_threshold must be a number in \(0, 100\], got 0"):
        BroadbandAnalog(gain_threshold=0)
    with pytest.raises(ValueError, match="num_subcarriers"):
        BroadbandAnalog(num_subcarriers=0)
    with pytest.raises(ValueError, match="power_scale"):
        BroadbandAnalog(power_scale=1.5)
    with pytest.raises(ValueError, match="fading must be finite of shape"):
        broadband_analog_aggregate(
            torch.zeros(2, 4),
            np.ones(2),
            np.ones(2),
            np.ones((3, 2)),
            gain_threshold=0.1,
            p_max_w=1.0,
            bandwidth_hz=1.0,
            noise_psd_w_per_hz=0.0,
        )


# -- the transport ---------------------------------------------------------------------------


def test_transport_without_noise_or_truncation_equals_digital_fedavg() -> None:
    """The same round through BAA (no truncation, noise 250 dB down) and through an error-free
    digital uplink moves the model to the same FedAvg of the same trained updates."""
    analog, rng_a = _federation(3, noise_psd_dbm_per_hz=NOISELESS_DBM_PER_HZ, deadline_s=100.0)
    digital, rng_d = _federation(3, noise_psd_dbm_per_hz=NOISELESS_DBM_PER_HZ, deadline_s=100.0)
    before = analog.params.clone()
    plan = analog.plan(selected="all", local_steps=2)
    report_a = analog.run_round(plan, rng_a, transport=BroadbandAnalog(gain_threshold=1e-30))
    report_d = digital.run_round(plan, rng_d, transport=DigitalUplink())
    assert report_a.delivered.all() and report_d.delivered.all()
    assert report_a.aggregation_mse < 1e-9  # against updates of order 1e-2
    moved = (analog.params - before).abs().max().item()
    # What is left is the receiver noise the report accounts for (a deep but untruncated fade
    # lowers rho0), within 6 standard deviations, plus float32 rounding.
    allowed = 6 * math.sqrt(report_a.aggregation_mse) + 1e-6
    assert moved > 100 * allowed
    assert (analog.params - digital.params).abs().max().item() <= allowed


def test_transport_latency_and_energy_match_the_closed_form() -> None:
    fed, rng = _federation(4, num_devices=4, deadline_s=10.0)
    cell = fed.cell
    assert cell is not None
    transport = BroadbandAnalog(num_subcarriers=32)
    steps, batch = 3, fed.config.batch_size
    battery = cell.battery_j.copy()
    cpu = cell.cpu_hz.copy()
    selected = np.array([True, False, True, True])
    report = fed.run_round(fed.plan(selected=selected, local_steps=steps), rng, transport=transport)
    cfg = cell.config
    compute_s = cfg.cycles_per_sample * batch * steps / cpu
    airtime_s = math.ceil(fed.num_params / 32) * 32 / cfg.bandwidth_hz
    expected = np.where(selected, compute_s + airtime_s, 0.0)
    np.testing.assert_allclose(report.latency_s, expected, rtol=1e-12)
    assert report.round_time_s == pytest.approx(expected.max(), rel=1e-12)
    assert report.channel_uses == math.ceil(fed.num_params / 32) * 32
    compute_j = cfg.effective_capacitance * cfg.cycles_per_sample * batch * steps * cpu**2
    np.testing.assert_allclose(report.energy_compute_j, np.where(selected, compute_j, 0.0))
    # Transmit energy = average power x airtime, within the budget p_max x airtime.
    assert (report.energy_transmit_j <= cfg.p_max_w * airtime_s * (1 + 1e-12)).all()
    assert (report.energy_transmit_j[selected] > 0).all() and report.energy_transmit_j[1] == 0
    np.testing.assert_allclose(
        battery - cell.battery_j, report.energy_compute_j + report.energy_transmit_j
    )


def test_a_deadline_shorter_than_the_airtime_makes_everyone_a_straggler() -> None:
    fed, rng = _federation(5, num_devices=3, deadline_s=1e-4)
    before = fed.params.clone()
    report = fed.run_round(
        fed.plan(selected="all", local_steps=1), rng, transport=BroadbandAnalog()
    )
    assert report.straggler.all() and not report.delivered.any()
    assert torch.equal(fed.params, before)
    assert (report.energy_transmit_j == 0).all()


# -- the downlink ----------------------------------------------------------------------------


def test_downlink_time_is_the_broadcast_at_the_weakest_participant() -> None:
    rng = np.random.default_rng(6)
    config = WirelessConfig(downlink=True, downlink_power_dbm=40.0, bandwidth_hz=2e6)
    cell = WirelessCell(config, 5)
    cell.reset(rng)
    selected = np.array([True, True, False, True, False])
    time_s, energy_j = cell.downlink(selected, 1e5)
    weakest = cell.large_scale_gain[selected].min()
    noise_w = 10 ** ((-174.0 + 9.0 - 30.0) / 10) * 2e6
    rate = 2e6 * math.log2(1 + 10.0 * weakest / noise_w)
    assert time_s == pytest.approx(1e5 / rate, rel=1e-9)
    assert energy_j == pytest.approx(10.0 * time_s, rel=1e-12)
    assert cell.downlink(np.zeros(5, dtype=bool), 1e5) == (0.0, 0.0)
    with pytest.raises(ValueError, match="bits must be finite and >= 0"):
        cell.downlink(selected, -1.0)


@pytest.mark.parametrize("transport", [DigitalUplink(), BroadbandAnalog()], ids=str)
def test_downlink_adds_its_time_and_nothing_else(transport: object) -> None:
    off, rng_off = _federation(7, deadline_s=100.0)
    on, rng_on = _federation(7, deadline_s=100.0, downlink=True)
    selected = np.array([True, True, False, True, True, False])
    plan = off.plan(selected=selected, local_steps=2)
    time_s, _ = on.cell.downlink(selected, 32 * on.num_params)  # type: ignore[union-attr]
    report_off = off.run_round(plan, rng_off, transport=transport)  # type: ignore[arg-type]
    report_on = on.run_round(plan, rng_on, transport=transport)  # type: ignore[arg-type]
    assert time_s > 0.0
    assert report_on.round_time_s == pytest.approx(report_off.round_time_s + time_s, rel=1e-12)
    np.testing.assert_allclose(
        report_on.latency_s, report_off.latency_s + np.where(selected, time_s, 0.0), rtol=1e-12
    )
    assert torch.equal(on.params, off.params)
    np.testing.assert_array_equal(report_on.energy_j, report_off.energy_j)


def test_downlink_is_off_by_default() -> None:
    assert WirelessConfig().downlink is False
    with pytest.raises(ValueError, match="downlink"):
        WirelessConfig(downlink="yes")  # type: ignore[arg-type]


# -- the environment preset ------------------------------------------------------------------


def test_broadband_preset_runs_reproducibly() -> None:
    def rollout() -> tuple[list[float], np.ndarray]:
        env = gym.make("fl_gym/OverTheAirFL-v0", preset="broadband")
        assert type(env.unwrapped.pipeline.transport) is BroadbandAnalog
        env.reset(seed=11)
        env.action_space.seed(11)
        times = []
        for _ in range(3):
            _, reward, *_, info = env.step(env.action_space.sample())
            assert np.isfinite(reward)
            times.append(info["round_time_s"])
        params = env.unwrapped.federation.params.numpy().copy()
        env.close()
        return times, params

    (times_a, params_a), (times_b, params_b) = rollout(), rollout()
    assert times_a == times_b
    np.testing.assert_array_equal(params_a, params_b)


def test_broadband_needs_the_over_the_air_env_and_a_new_env_to_switch() -> None:
    with pytest.raises(ValueError, match="needs the over-the-air environment"):
        gym.make("fl_gym/WirelessFL-v0", config={"analog_scheme": "broadband"})
    env = gym.make("fl_gym/OverTheAirFL-v0")
    with pytest.raises(ValueError, match="must keep the transport"):
        env.reset(seed=0, options={"config": {"analog_scheme": "broadband"}})
    env.close()
