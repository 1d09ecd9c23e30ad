"""The wireless cell: closed forms, statistics of the random model, energy accounting, errors."""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import fields

import numpy as np
import pytest

from fl_gym.sim.radio.calibration import simulate_full_power
from fl_gym.sim.radio.cell import (
    CellState,
    UplinkReport,
    WirelessCell,
    WirelessConfig,
    dbm_to_w,
    jakes_correlation,
    packet_error_probability,
    path_loss_db,
    shannon_rate_bps,
    w_to_dbm,
)

# Noise spectral density of the defaults: -174 dBm/Hz + 9 dB noise figure = -165 dBm/Hz.
N0_W_PER_HZ = 10 ** ((-174 + 9 - 30) / 10)
# A device 500 m from the BS, no shadowing, |h|^2 = 1: g = 10^(-116.78127 / 10).
GAIN_500M = 2.098325138837318e-12
# 0.1 W over 1 MHz at that gain, by hand: SNR = 0.1 g / (1e6 N0) = 6.6354867.
RATE_500M_BPS = 2932720.121943915


def _cell(k: int = 4, seed: int = 0, **overrides) -> WirelessCell:
    cell = WirelessCell(WirelessConfig(**overrides), k)
    cell.reset(np.random.default_rng(seed))
    return cell


def _set_state(
    cell: WirelessCell,
    *,
    distance_m: float | np.ndarray = 500.0,
    fading: complex | np.ndarray = 1.0,
    cpu_hz: float | np.ndarray = 1e9,
    battery_j: float | np.ndarray = 1.0,
    shadowing_db: float | np.ndarray = 0.0,
) -> None:
    """Give ``cell`` a hand-built state: devices on the x axis, static."""
    k, n = cell.num_devices, cell.num_antennas
    d = np.broadcast_to(np.asarray(distance_m, dtype=float), (k,))
    positions = np.stack([d, np.zeros(k)], axis=1)
    battery = np.broadcast_to(np.asarray(battery_j, dtype=float), (k,))
    cell.restore(
        CellState(
            positions_m=positions,
            shadowing_db=np.broadcast_to(np.asarray(shadowing_db, dtype=float), (k,)),
            fading=np.broadcast_to(np.asarray(fading, dtype=complex), (k, n)),
            cpu_hz=np.broadcast_to(np.asarray(cpu_hz, dtype=float), (k,)),
            battery_j=battery,
            battery_capacity_j=np.maximum(battery, 1.0),
            waypoints_m=positions,
            speed_mps=np.zeros(k),
        )
    )


def _assert_reports_equal(a: UplinkReport, b: UplinkReport) -> None:
    for f in fields(UplinkReport):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)


def _assert_states_equal(a: WirelessCell, b: WirelessCell) -> None:
    for f in fields(CellState):
        np.testing.assert_array_equal(
            getattr(a.snapshot(), f.name), getattr(b.snapshot(), f.name), err_msg=f.name
        )


# -- pure functions ----------------------------------------------------------------------------


def test_path_loss_closed_form() -> None:
    assert path_loss_db(500.0) == pytest.approx(116.78, abs=0.005)
    assert path_loss_db(1000.0) == pytest.approx(128.1, abs=1e-12)
    # 37.6 dB per decade.
    d = np.array([10.0, 100.0, 1000.0])
    np.testing.assert_allclose(np.diff(path_loss_db(d)), [37.6, 37.6])
    assert path_loss_db(100.0, intercept_db=140.0, slope_db=20.0) == pytest.approx(120.0)
    for bad in (0.0, -5.0, np.nan):
        with pytest.raises(ValueError, match="distance_m"):
            path_loss_db(bad)


def test_dbm_watt_conversions() -> None:
    assert float(dbm_to_w(30.0)) == pytest.approx(1.0)
    assert float(dbm_to_w(23.0)) == pytest.approx(0.19952623149688797)
    assert float(dbm_to_w(-174.0)) == pytest.approx(10 ** (-20.4))
    x = np.linspace(-100.0, 40.0, 15)
    np.testing.assert_allclose(w_to_dbm(dbm_to_w(x)), x, atol=1e-12)
    assert w_to_dbm(0.0) == -np.inf  # no warning, no NaN
    with pytest.raises(ValueError, match="watts"):
        w_to_dbm(-1.0)
    with pytest.raises(ValueError, match="dBm"):
        dbm_to_w(np.nan)


def _bessel_j0_series(x: float) -> float:
    return sum((-1) ** k * (x / 2) ** (2 * k) / math.factorial(k) ** 2 for k in range(40))


def test_jakes_correlation_is_bessel_j0() -> None:
    # 2 pi f_d T = 1 with f_d = 1 / (2 pi) Hz, T = 1 s.
    assert jakes_correlation(1 / (2 * math.pi), 1.0) == pytest.approx(_bessel_j0_series(1.0))
    assert jakes_correlation(1 / (2 * math.pi), 1.0) == pytest.approx(0.7651976865579666)
    assert jakes_correlation(0.0, 1.0) == 1.0
    # First zero of J0 at 2.404825557695773.
    assert jakes_correlation(2.404825557695773 / (2 * math.pi), 1.0) == pytest.approx(0, abs=1e-12)
    cfg = WirelessConfig(doppler_hz=0.3, round_interval_s=0.5)
    assert cfg.fading_correlation == pytest.approx(_bessel_j0_series(2 * math.pi * 0.15))
    with pytest.raises(ValueError, match="doppler_hz"):
        jakes_correlation(-1.0, 1.0)


def test_shannon_rate_hand_computed() -> None:
    rate = shannon_rate_bps(1e6, 0.1, GAIN_500M, N0_W_PER_HZ)
    assert float(rate) == pytest.approx(RATE_500M_BPS, rel=1e-12)
    snr = 0.1 * GAIN_500M / (1e6 * N0_W_PER_HZ)
    assert float(rate) == pytest.approx(1e6 * math.log2(1 + snr), rel=1e-12)
    # Zero power, gain or bandwidth: rate 0, not NaN; broadcasting over devices.
    out = shannon_rate_bps(np.array([1e6, 1e6, 0.0]), np.array([0.0, 0.1, 0.1]), 1e-12, 1e-20)
    assert out[0] == 0.0 and out[2] == 0.0 and out[1] > 0
    assert shannon_rate_bps(1e6, 0.1, 0.0, 1e-20) == 0.0
    with pytest.raises(ValueError, match="power_w"):
        shannon_rate_bps(1e6, -0.1, 1e-12, 1e-20)
    with pytest.raises(ValueError, match="noise_psd_w_per_hz"):
        shannon_rate_bps(1e6, 0.1, 1e-12, 0.0)


def test_packet_error_probability_hand_computed() -> None:
    q = packet_error_probability(0.1, GAIN_500M, 1e6, N0_W_PER_HZ, 0.023)
    assert float(q) == pytest.approx(0.0034602110722068424, rel=1e-10)
    # q decreases with power; nothing received means certain loss.
    p = np.array([0.0, 1e-3, 1e-2, 1e-1])
    q = packet_error_probability(p, GAIN_500M, 1e6, N0_W_PER_HZ, 0.023)
    assert q[0] == 1.0
    assert np.all(np.diff(q) < 0) and np.all((q >= 0) & (q <= 1))
    # m B N0 / (p g) = ln 2 gives q = 1/2 exactly.
    gain = 0.023 * 1e6 * N0_W_PER_HZ / (0.1 * math.log(2))
    assert float(packet_error_probability(0.1, gain, 1e6, N0_W_PER_HZ, 0.023)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="waterfall"):
        packet_error_probability(0.1, gain, 1e6, N0_W_PER_HZ, 0.0)


# -- configuration -----------------------------------------------------------------------------


def test_config_derived_values() -> None:
    cfg = WirelessConfig()
    assert cfg.subchannel_bandwidth_hz == 1e6
    assert cfg.noise_psd_w_per_hz == pytest.approx(N0_W_PER_HZ)
    assert cfg.noise_power_w == pytest.approx(N0_W_PER_HZ * 1e6)
    assert cfg.p_max_w == pytest.approx(0.19952623149688797)
    assert cfg.fading_correlation == pytest.approx(_bessel_j0_series(2 * math.pi * 0.1))
    assert not cfg.mobile


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cell_radius_m": -500.0}, "cell_radius_m"),
        ({"min_distance_m": 500.0}, "min_distance_m"),
        ({"min_distance_m": 600.0}, "min_distance_m"),
        ({"min_distance_m": 0.0}, "min_distance_m"),
        ({"edge_fraction": 1.5}, "edge_fraction"),
        ({"edge_inner_radius_m": 500.0, "edge_fraction": 0.5}, "edge_inner_radius_m"),
        ({"speed_min_mps": 3.0, "speed_max_mps": 1.0}, "speed_min_mps"),
        ({"shadowing_std_db": -1.0}, "shadowing_std_db"),
        ({"num_antennas": 0}, "num_antennas"),
        ({"num_subchannels": 2.5}, "num_subchannels"),
        ({"num_subchannels": True}, "num_subchannels"),
        ({"bandwidth_hz": math.nan}, "bandwidth_hz"),
        ({"p_max_dbm": math.inf}, "p_max_dbm"),
        ({"power_floor_w": 1.0}, "power_floor_w"),
        ({"cpu_min_hz": 3e9}, "cpu_min_hz"),
        ({"deadline_s": 0.0}, "deadline_s"),
        ({"battery_min_j": 2.0, "battery_max_j": 1.0}, "battery_min_j"),
        ({"battery_floor_j": 0.5}, "battery_min_j"),
        ({"doppler_hz": -1.0}, "doppler_hz"),
        ({"waterfall_threshold": 0.0}, "waterfall_threshold"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        WirelessConfig(**overrides)


def test_smaller_cell_needs_no_ring_unless_edge_heavy() -> None:
    cell = _cell(200, seed=24, cell_radius_m=300.0)  # the default ring (400 m) is unused
    assert np.hypot(*cell.positions_m.T).max() <= 300.0


def test_cell_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_devices"):
        WirelessCell(WirelessConfig(), 0)
    with pytest.raises(TypeError, match="WirelessConfig"):
        WirelessCell({"cell_radius_m": 100.0}, 3)  # type: ignore[arg-type]
    cell = WirelessCell(WirelessConfig(), 3)
    with pytest.raises(RuntimeError, match="reset"):
        _ = cell.channel_gain
    with pytest.raises(TypeError, match="Generator"):
        cell.reset(0)  # type: ignore[arg-type]


# -- the random model --------------------------------------------------------------------------


def test_placement_uniform_in_area_within_annulus() -> None:
    k = 20_000
    cell = _cell(k, seed=1)
    r = np.hypot(*cell.positions_m.T)
    assert r.min() >= 10.0 and r.max() <= 500.0
    for radius in (100.0, 250.0, 400.0):
        expected = (radius**2 - 10.0**2) / (500.0**2 - 10.0**2)
        frac = np.mean(r < radius)
        assert abs(frac - expected) < 4 * math.sqrt(expected * (1 - expected) / k)
    angle = np.arctan2(cell.positions_m[:, 1], cell.positions_m[:, 0])
    assert abs(np.mean(np.cos(angle))) < 0.03 and abs(np.mean(np.sin(angle))) < 0.03
    np.testing.assert_allclose(cell.distance_m, r)
    np.testing.assert_allclose(cell.path_loss_db, path_loss_db(r))


def test_cell_edge_heavy_placement() -> None:
    k = 10_000
    cell = _cell(k, seed=2, edge_fraction=0.6, edge_inner_radius_m=400.0)
    r = np.hypot(*cell.positions_m.T)
    ring_share = (500.0**2 - 400.0**2) / (500.0**2 - 10.0**2)
    expected = 0.6 + 0.4 * ring_share
    assert abs(np.mean(r >= 400.0) - expected) < 4 * math.sqrt(0.4 * ring_share / k)
    assert r.min() >= 10.0 and r.max() <= 500.0
    everyone_at_edge = _cell(50, seed=3, edge_fraction=1.0)
    assert np.hypot(*everyone_at_edge.positions_m.T).min() >= 400.0


def test_shadowing_statistics() -> None:
    cell = _cell(20_000, seed=4)
    s = cell.shadowing_db
    assert abs(s.mean()) < 4 * 8.0 / math.sqrt(s.size)
    assert s.std() == pytest.approx(8.0, abs=0.15)
    np.testing.assert_allclose(
        cell.large_scale_gain, 10 ** (-(cell.path_loss_db + s) / 10), rtol=1e-12
    )


def test_fading_power_and_lag_one_correlation() -> None:
    # 2 pi f_d T = 1.5: rho = J0(1.5) = 0.5118.
    cfg = dict(num_antennas=2, doppler_hz=1.5 / (2 * math.pi), round_interval_s=1.0)
    cell = _cell(2_000, seed=5, **cfg)
    rng = np.random.default_rng(6)
    rho = _bessel_j0_series(1.5)
    samples = [cell.fading]
    for _ in range(40):
        cell.advance(rng)
        samples.append(cell.fading)
    h = np.stack(samples)  # (rounds, K, N)
    power = np.abs(h) ** 2
    np.testing.assert_allclose(power.mean(axis=(0, 1)), [1.0, 1.0], atol=0.02)
    # CN(0, 1): real and imaginary parts each carry half the power, uncorrelated.
    assert np.mean(h.real**2) == pytest.approx(0.5, abs=0.01)
    assert abs(np.mean(h.real * h.imag)) < 0.01
    lag1 = np.mean(h[1:] * np.conj(h[:-1]))
    assert lag1.real == pytest.approx(rho, abs=0.01)
    assert abs(lag1.imag) < 0.01
    lag2 = np.mean(h[2:] * np.conj(h[:-2]))
    assert lag2.real == pytest.approx(rho**2, abs=0.01)
    # MRC gain: large-scale gain times ||h||^2 over the antennas.
    np.testing.assert_allclose(
        cell.channel_gain, cell.large_scale_gain * power[-1].sum(axis=1), rtol=1e-12
    )


def _fading_autocorrelation(lags: int, seeds: int, **overrides) -> np.ndarray:
    """``E[h_t conj(h_0)]`` for ``t = 0..lags`` over devices, antennas and seeds (complex)."""
    products = []
    for seed in range(seeds):
        cell = _cell(50, seed=seed, num_antennas=4, **overrides)
        rng = np.random.default_rng(1000 + seed)
        start = cell.fading.copy()
        row = [np.mean(start * np.conj(start))]
        for _ in range(lags):
            cell.advance(rng)
            row.append(np.mean(cell.fading * np.conj(start)))
        products.append(row)
    return np.mean(products, axis=0)


def test_sum_of_sinusoids_fading_has_jakes_correlation_at_every_lag() -> None:
    # 2 pi f_d T = 0.9: J0 crosses zero near lag 2.7 and is -0.40 at lag 4 (its minimum).
    overrides = dict(doppler_hz=0.9 / (2 * math.pi), round_interval_s=1.0)
    lags = np.arange(13)
    jakes = np.array([_bessel_j0_series(0.9 * n) for n in lags])
    # 40 seeds x 200 entries: standard error about 0.008 per lag.
    corr = _fading_autocorrelation(12, 40, fading_sinusoids=32, **overrides)
    np.testing.assert_allclose(corr.real, jakes, atol=0.04)
    np.testing.assert_allclose(corr.imag, 0.0, atol=0.04)
    # The Gauss-Markov default matches at lag 1 only: rho^n, never negative.
    rho = jakes[1]
    markov = _fading_autocorrelation(12, 10, **overrides)
    np.testing.assert_allclose(markov.real, rho**lags, atol=0.05)
    assert markov.real[4] > 0.1 and jakes[4] < -0.35


def test_sum_of_sinusoids_fading_is_unit_power_rayleigh_and_restores() -> None:
    cell = _cell(2_000, seed=3, num_antennas=2, fading_sinusoids=32, doppler_hz=0.3)
    h = cell.fading
    assert cell.snapshot().sinusoid_phase.shape == (2_000, 2, 32)
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, abs=0.03)
    assert np.mean(h.real**2) == pytest.approx(0.5, abs=0.02)
    # Rayleigh envelope: Pr(|h|^2 > 1) = exp(-1).
    assert np.mean(np.abs(h) ** 2 > 1.0) == pytest.approx(math.exp(-1.0), abs=0.02)
    restored = WirelessCell(cell.config, 2_000)
    restored.restore(cell.snapshot())
    cell.advance(_rng(1))
    restored.advance(_rng(2))  # the sinusoids' evolution draws nothing
    _assert_states_equal(restored, cell)
    bad = CellState(**{f.name: getattr(cell.snapshot(), f.name) for f in fields(CellState)[:8]})
    with pytest.raises(ValueError, match="sinusoid_cos"):
        restored.restore(bad)


def test_static_devices_keep_position_and_shadowing() -> None:
    cell = _cell(50, seed=7)
    before = cell.snapshot()
    cell.advance(np.random.default_rng(8))
    np.testing.assert_array_equal(cell.positions_m, before.positions_m)
    np.testing.assert_array_equal(cell.shadowing_db, before.shadowing_db)
    assert not np.array_equal(cell.fading, before.fading)


def test_random_waypoint_mobility() -> None:
    cfg = dict(speed_min_mps=1.0, speed_max_mps=30.0, round_interval_s=2.0)
    cell = _cell(500, seed=9, **cfg)
    rng = np.random.default_rng(10)
    reached = 0
    for _ in range(60):
        before = cell.snapshot()
        cell.advance(rng)
        after = cell.snapshot()
        step = np.hypot(*(after.positions_m - before.positions_m).T)
        assert np.all(step <= before.speed_mps * 2.0 + 1e-9)
        assert np.hypot(*after.positions_m.T).max() <= 500.0 + 1e-9
        arrived = np.all(after.positions_m == before.waypoints_m, axis=1)
        # A device that did not arrive walked exactly speed * T straight towards its waypoint.
        walking = ~arrived
        np.testing.assert_allclose(step[walking], before.speed_mps[walking] * 2.0)
        direction = before.waypoints_m - before.positions_m
        cross = (after.positions_m - before.positions_m)[:, 0] * direction[:, 1] - (
            after.positions_m - before.positions_m
        )[:, 1] * direction[:, 0]
        np.testing.assert_allclose(cross[walking], 0.0, atol=1e-6)
        reached += int(arrived.sum())
        assert np.all(after.speed_mps >= 1.0) and np.all(after.speed_mps <= 30.0)
    assert reached > 0
    # Movers' shadowing decorrelates, and keeps its 8 dB spread.
    assert cell.shadowing_db.std() == pytest.approx(8.0, rel=0.15)
    assert np.all(cell.distance_m >= 10.0)


# -- the uplink --------------------------------------------------------------------------------


def test_uplink_rate_time_energy_hand_computed() -> None:
    cell = WirelessCell(WirelessConfig(deadline_s=10.0), 3)
    cell.reset(np.random.default_rng(0))
    _set_state(cell, distance_m=500.0, fading=1.0, cpu_hz=1e9, battery_j=1.0)
    selected = np.array([True, True, False])
    report = cell.uplink(selected, 0.1, np.array([1e5, 2e5, 1e5]), 5, 16, np.random.default_rng(1))
    np.testing.assert_allclose(report.channel_gain, [GAIN_500M, GAIN_500M, 0.0], rtol=1e-12)
    np.testing.assert_allclose(report.rate_bps, [RATE_500M_BPS, RATE_500M_BPS, 0.0], rtol=1e-12)
    t_x = np.array([1e5, 2e5]) / RATE_500M_BPS
    np.testing.assert_allclose(report.transmit_time_s[:2], t_x, rtol=1e-12)
    np.testing.assert_allclose(report.transmit_energy_j[:2], 0.1 * t_x, rtol=1e-12)
    # C b s / f = 1e5 * 16 * 5 / 1e9 s and kappa C b s f^2 = 1e-28 * 8e6 * 1e18 J.
    np.testing.assert_allclose(report.compute_time_s, [0.008, 0.008, 0.0], rtol=1e-12)
    np.testing.assert_allclose(report.compute_energy_j, [8e-4, 8e-4, 0.0], rtol=1e-12)
    np.testing.assert_allclose(report.latency_s[:2], 0.008 + t_x, rtol=1e-12)
    assert report.round_time_s == pytest.approx(0.008 + t_x[1])
    np.testing.assert_allclose(report.packet_error_prob[:2], 0.0034602110722068424, rtol=1e-10)
    assert report.transmitted.tolist() == [True, True, False]
    assert not report.straggler.any() and not report.battery_depleted.any()
    # The cell's own link helpers agree with the report.
    np.testing.assert_allclose(cell.achievable_rate_bps(0.1), RATE_500M_BPS, rtol=1e-12)
    np.testing.assert_allclose(cell.packet_error_prob(0.1), report.packet_error_prob[0])


def test_energy_is_conserved_and_unselected_devices_spend_nothing() -> None:
    cell = _cell(30, seed=11, num_subchannels=30, deadline_s=0.2)
    rng = np.random.default_rng(12)
    for _ in range(10):
        selected = rng.random(30) < 0.5
        selected &= cell.available
        power = rng.uniform(0.0, cell.config.p_max_w, 30)
        before = np.array(cell.battery_j)
        report = cell.uplink(selected, power, rng.uniform(0, 3e5, 30), 3, 16, rng)
        after = cell.battery_j
        np.testing.assert_allclose(before - after, report.energy_j, atol=1e-15)
        idle = ~report.selected
        np.testing.assert_array_equal(after[idle], before[idle])
        for name in ("rate_bps", "latency_s", "compute_energy_j", "channel_gain"):
            assert np.all(getattr(report, name)[idle] == 0), name
        assert not (report.delivered & ~report.selected).any()
        assert np.all(report.latency_s <= cell.config.deadline_s + 1e-12)
        # Transmit energy is power times airtime.
        np.testing.assert_allclose(
            report.transmit_energy_j,
            np.where(report.transmitted, power, 0) * report.transmit_time_s,
        )
        cell.advance(rng)


def test_zero_power_means_no_transmission_and_no_spending() -> None:
    cell = _cell(3, seed=13)
    before = np.array(cell.battery_j)
    report = cell.uplink(np.ones(3, bool), np.array([0.0, 1e-9, 0.1]), 1e5, 5, 16, rng=_rng())
    assert report.transmitted.tolist() == [False, False, True]
    assert report.selected.all() and not report.delivered[:2].any()
    np.testing.assert_array_equal(cell.battery_j[:2], before[:2])
    assert np.all(report.energy_j[:2] == 0)


def _rng(seed: int = 99) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_empirical_packet_loss_matches_q() -> None:
    cfg = WirelessConfig(battery_min_j=1e6, battery_max_j=1e6, num_subchannels=10)
    cell = WirelessCell(cfg, 10)
    cell.reset(_rng(0))
    # m B N0 / (p g) = ln(1 / 0.7) gives q = 0.3 at 500 m.
    power_w = cfg.waterfall_threshold * cfg.noise_power_w / (GAIN_500M * math.log(1 / 0.7))
    _set_state(cell, distance_m=500.0, battery_j=1e6)
    rng = _rng(1)
    lost = []
    for _ in range(500):
        report = cell.uplink(np.ones(10, bool), power_w, 1e4, 1, 1, rng)
        lost.append(report.packet_lost)
    np.testing.assert_allclose(report.packet_error_prob, 0.3, rtol=1e-9)
    frac = np.mean(lost)
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 5000)
    assert np.array_equal(report.delivered, ~report.packet_lost)


def test_deadline_creates_stragglers() -> None:
    tight = _cell(10, seed=14, deadline_s=1e-4)
    report = tight.uplink(np.ones(10, bool), 0.1, 1e5, 5, 16, _rng())
    assert report.straggler.all() and not report.delivered.any()
    assert report.round_time_s == pytest.approx(1e-4)
    np.testing.assert_allclose(report.latency_s, 1e-4)
    # Energy is spent up to the deadline: compute first, the rest of the time transmitting.
    assert np.all(report.energy_j > 0)
    assert np.all(report.transmit_energy_j <= 0.1 * 1e-4 + 1e-15)
    loose = _cell(10, seed=14, deadline_s=1e3)
    report = loose.uplink(np.ones(10, bool), 0.1, 1e5, 5, 16, _rng())
    assert not report.straggler.any()
    assert report.round_time_s == pytest.approx(report.latency_s.max())


def test_straggler_boundary_is_compute_plus_upload_time() -> None:
    cell = _cell(2, seed=15, deadline_s=1.0)
    _set_state(cell, distance_m=500.0, fading=1.0, cpu_hz=1e9, battery_j=1.0)
    # Device 0 needs 0.008 + 0.9 * deadline-ish seconds; device 1 just over the deadline.
    bits = np.array([(1.0 - 0.008) * 0.99, (1.0 - 0.008) * 1.01]) * RATE_500M_BPS
    report = cell.uplink(np.ones(2, bool), 0.1, bits, 5, 16, _rng())
    assert report.straggler.tolist() == [False, True]
    assert report.transmit_time_s[1] == pytest.approx(1.0 - 0.008)
    assert report.round_time_s == 1.0


def test_no_nan_for_degenerate_inputs() -> None:
    cell = _cell(4, seed=16)
    _set_state(cell, fading=0.0)  # g = 0: nothing gets through
    report = cell.uplink(
        np.ones(4, bool), np.array([0.1, 0.1, 0.0, 0.1]), [1e5, 0, 1e5, 0], 0, 16, _rng()
    )
    for f in fields(UplinkReport):
        value = np.asarray(getattr(report, f.name), dtype=float)
        assert np.all(np.isfinite(value)), f.name
    assert report.rate_bps[0] == 0.0 and report.straggler[0]  # infinite upload time
    assert report.packet_error_prob[0] == 1.0
    assert report.transmit_time_s[1] == 0.0 and not report.straggler[1]
    assert report.packet_lost[1]  # an empty packet still needs a channel
    assert not report.delivered.any()


def test_exhausted_battery_makes_device_unavailable() -> None:
    cell = _cell(4, seed=17)
    _set_state(cell, battery_j=np.array([1.0, 1.0, 0.0, 1.0]))
    assert cell.available.tolist() == [True, True, False, True]
    before = cell.snapshot()
    with pytest.raises(ValueError, match=r"\[2\]"):
        cell.uplink(np.array([True, False, True, False]), 0.1, 1e5, 1, 16, _rng())
    _assert_states_equal_to(cell, before)
    report = cell.uplink(np.array([True, False, False, True]), 0.1, 1e5, 1, 16, _rng())
    assert report.selected.sum() == 2


def _assert_states_equal_to(cell: WirelessCell, state: CellState) -> None:
    for f in fields(CellState):
        np.testing.assert_array_equal(getattr(cell.snapshot(), f.name), getattr(state, f.name))


def test_battery_running_out_mid_round() -> None:
    cell = _cell(3, seed=18, deadline_s=10.0)
    # Compute needs 8e-4 J; device 0 cannot even finish training, device 1 runs dry on air.
    _set_state(cell, battery_j=np.array([5e-4, 2e-3, 1.0]), cpu_hz=1e9)
    report = cell.uplink(np.ones(3, bool), 0.1, 1e5, 5, 16, _rng())
    assert report.battery_depleted.tolist() == [True, True, False]
    assert report.delivered[:2].tolist() == [False, False]
    np.testing.assert_allclose(report.energy_j[:2], [5e-4, 2e-3])
    assert report.transmit_energy_j[0] == 0.0
    # kappa f^3 = 0.1 W of compute power: 5e-4 J last 5 ms.
    assert report.compute_time_s[0] == pytest.approx(5e-3)
    assert report.transmit_time_s[1] == pytest.approx((2e-3 - 8e-4) / 0.1)
    np.testing.assert_array_equal(cell.battery_j[:2], [0.0, 0.0])
    assert cell.available.tolist() == [False, False, True]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cell.uplink(np.ones(3, bool), 0.1, 1e5, 5, 16, _rng())


def test_more_than_m_selected_is_an_error() -> None:
    cell = _cell(6, seed=19, num_subchannels=4)
    with pytest.raises(ValueError, match=r"5 devices selected.*num_subchannels = 4"):
        cell.uplink(np.array([1, 1, 1, 1, 1, 0], bool), 0.1, 1e5, 1, 16, _rng())
    assert (
        cell.uplink(np.array([1, 1, 1, 1, 0, 0], bool), 0.1, 1e5, 1, 16, _rng()).selected.sum() == 4
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"selected": np.ones(3, int)}, TypeError, "boolean"),
        ({"selected": np.ones(4, bool)}, ValueError, "shape"),
        ({"power_w": np.ones(4) * 0.1}, ValueError, "power_w"),
        ({"power_w": -0.1}, ValueError, "power_w"),
        ({"power_w": np.array([0.1, np.nan, 0.1])}, ValueError, "power_w"),
        ({"power_w": 1.0}, ValueError, "p_max"),
        ({"bits": np.array([1e5, -1.0, 1e5])}, ValueError, "bits"),
        ({"bits": np.inf}, ValueError, "bits"),
        ({"local_steps": 1.5}, ValueError, "local_steps"),
        ({"local_steps": -1}, ValueError, "local_steps"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"rng": 3}, TypeError, "Generator"),
    ],
)
def test_bad_uplink_inputs_leave_cell_usable(kwargs: dict, error: type, match: str) -> None:
    cell = _cell(3, seed=20)
    before = cell.snapshot()
    args = {
        "selected": np.ones(3, bool),
        "power_w": 0.1,
        "bits": 1e5,
        "local_steps": 2,
        "batch_size": 16,
        "rng": _rng(),
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        cell.uplink(**args)
    _assert_states_equal_to(cell, before)
    report = cell.uplink(np.ones(3, bool), 0.1, 1e5, 2, 16, _rng())
    assert report.transmitted.all()


def test_same_seed_same_trajectory() -> None:
    def run(seed: int) -> tuple[WirelessCell, list[UplinkReport]]:
        rng = np.random.default_rng(seed)
        cell = WirelessCell(WirelessConfig(speed_max_mps=5.0, edge_fraction=0.3), 12)
        cell.reset(rng)
        reports = []
        for _ in range(5):
            selected = np.zeros(12, bool)
            selected[rng.choice(12, 6, replace=False)] = True
            reports.append(cell.uplink(selected & cell.available, 0.05, 1e5, 3, 16, rng))
            cell.advance(rng)
        return cell, reports

    (a, ra), (b, rb), (c, _) = run(3), run(3), run(4)
    _assert_states_equal(a, b)
    for x, y in zip(ra, rb, strict=True):
        _assert_reports_equal(x, y)
    assert not np.array_equal(a.positions_m, c.positions_m)


def test_pickle_copy_and_snapshot_restore_continue_identically() -> None:
    cell = _cell(8, seed=21, speed_max_mps=3.0)
    cell.uplink(np.ones(8, bool), 0.1, 1e5, 1, 16, _rng(1))
    clones = [pickle.loads(pickle.dumps(cell)), copy.deepcopy(cell)]
    restored = WirelessCell(cell.config, 8)
    restored.restore(cell.snapshot())
    clones.append(restored)
    reference = [cell.uplink(np.ones(8, bool), 0.1, 1e5, 2, 16, _rng(2))]
    cell.advance(_rng(3))
    for clone in clones:
        _assert_reports_equal(
            clone.uplink(np.ones(8, bool), 0.1, 1e5, 2, 16, _rng(2)), reference[0]
        )
        clone.advance(_rng(3))
        _assert_states_equal(clone, cell)


def test_state_views_are_read_only_and_do_not_change() -> None:
    cell = _cell(4, seed=22)
    battery = cell.battery_j
    with pytest.raises(ValueError):
        battery[0] = 0.0
    kept = battery.copy()
    cell.uplink(np.ones(4, bool), 0.1, 1e5, 1, 16, _rng())
    np.testing.assert_array_equal(battery, kept)
    assert np.all(cell.battery_j < kept)


def test_restore_rejects_bad_states() -> None:
    cell = _cell(3, seed=23)
    state = cell.snapshot()
    good = {f.name: getattr(state, f.name) for f in fields(CellState)}
    with pytest.raises(ValueError, match="fading"):
        cell.restore(CellState(**{**good, "fading": np.ones((3, 2), complex)}))
    with pytest.raises(ValueError, match="battery_j"):
        cell.restore(CellState(**{**good, "battery_j": good["battery_capacity_j"] + 1}))
    with pytest.raises(ValueError, match="positions_m"):
        cell.restore(CellState(**{**good, "positions_m": np.full((3, 2), 600.0)}))
    _assert_states_equal_to(cell, state)


def test_full_power_full_participation_drains_batteries() -> None:
    # The calibration the defaults promise: with everyone at p_max, most batteries are gone
    # well before an episode of 100 rounds ends.
    summary = simulate_full_power(rng=np.random.default_rng(0), rounds=100)
    assert summary.median_depletion_round is not None and summary.median_depletion_round < 80
    assert summary.depleted_fraction >= 0.5
    assert summary.compute_energy_j == pytest.approx(1e-28 * 1e5 * 16 * 5 * 1.75e18, rel=0.3)
    assert 0 < summary.transmit_energy_j < 0.2
