"""Tests of the UAV swarm simulator (:mod:`fl_gym.sim.uav.swarm`): kinematics against the closed
form,
the wind's exact law, the k-d tree against brute force, the density hashing against a direct
count, arrivals, the configuration's validation and the randomness discipline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_gym.sim.uav.swarm import (
    UAV_PRESETS,
    UAVSwarm,
    UAVSwarmConfig,
    brute_force_pairs,
    collision_pairs,
    make_uav_config,
)


def _swarm(**overrides: object) -> UAVSwarm:
    swarm = UAVSwarm(make_uav_config(None, overrides))
    swarm.reset(np.random.default_rng(0))
    return swarm


# -- dynamics ---------------------------------------------------------------------------------


def test_no_wind_constant_acceleration_follows_the_kinematic_closed_form() -> None:
    swarm = _swarm(num_uavs=20, wind_std_mps_per_sqrt_s=0.0, max_speed_mps=1e6, time_step_s=0.05)
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-10, 10, (20, 2))
    v0 = rng.uniform(-3, 3, (20, 2))
    u = rng.uniform(-4, 4, (20, 2))  # within max_accel_mps2 = 4
    swarm.positions_m = x0.copy()
    swarm.velocities_mps = v0.copy()
    steps = 37
    for _ in range(steps):
        swarm.step(u, rng)
    t = steps * 0.05
    np.testing.assert_allclose(swarm.positions_m, x0 + v0 * t + 0.5 * u * t * t, rtol=0, atol=1e-10)
    np.testing.assert_allclose(swarm.velocities_mps, v0 + u * t, rtol=0, atol=1e-12)
    assert swarm.time_s == pytest.approx(t)


def test_acceleration_is_clipped_per_axis_and_speed_capped() -> None:
    swarm = _swarm(num_uavs=5, wind_std_mps_per_sqrt_s=0.0, max_speed_mps=1e6)
    x0 = swarm.positions_m.copy()
    report = swarm.step(np.tile([[100.0, -100.0]], (5, 1)), np.random.default_rng(0))
    dt = swarm.config.time_step_s
    np.testing.assert_allclose(swarm.velocities_mps, np.tile([[4.0 * dt, -4.0 * dt]], (5, 1)))
    np.testing.assert_allclose(swarm.positions_m - x0, np.tile([[2.0, -2.0]], (5, 1)) * dt * dt)
    np.testing.assert_allclose(report.energy_m2_s3, 32.0 * dt)

    capped = _swarm(num_uavs=5, wind_std_mps_per_sqrt_s=0.0, max_speed_mps=1.0)
    for _ in range(30):
        capped.step(np.tile([[4.0, 4.0]], (5, 1)), np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(capped.velocities_mps, axis=1), 1.0)


def test_wind_increments_follow_the_exact_law_of_integrated_brownian_motion() -> None:
    sigma, dt, n = 2.0, 0.5, 4_000
    swarm = _swarm(
        num_uavs=n,
        source_radius_m=200.0,
        wind_std_mps_per_sqrt_s=sigma,
        time_step_s=dt,
        max_speed_mps=1e6,
        destination_center_m=(1e5, 0.0),
    )
    x0 = swarm.positions_m.copy()
    swarm.step(np.zeros((n, 2)), np.random.default_rng(3))
    dv = swarm.velocities_mps.ravel()
    dx = (swarm.positions_m - x0).ravel()
    # Var dW = dt, Var int W = dt^3 / 3, Cov = dt^2 / 2 (an Euler scheme would give 0 or dt^3).
    assert np.var(dv) == pytest.approx(sigma**2 * dt, rel=0.05)
    assert np.var(dx) == pytest.approx(sigma**2 * dt**3 / 3, rel=0.05)
    assert np.mean(dv * dx) == pytest.approx(sigma**2 * dt**2 / 2, rel=0.05)
    assert abs(np.mean(dv)) < 0.05


# -- spatial index ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 10, 300, 3_000])
@pytest.mark.parametrize("distance", [0.05, 1.0, 3.0])
def test_collision_pairs_equal_brute_force_on_random_swarms(n: int, distance: float) -> None:
    rng = np.random.default_rng(n)
    positions = rng.uniform(-20, 20, (n, 2)) * math.sqrt(max(n, 1) / 300)
    got = collision_pairs(positions, distance)
    want = brute_force_pairs(positions, distance)
    np.testing.assert_array_equal(got, want)
    if n >= 300 and distance >= 1.0:
        assert want.shape[0] > 0  # the comparison is not vacuous


@pytest.mark.parametrize("spacing", [1.0, 0.1, 0.3, 0.7])
def test_collision_pairs_at_the_edge_match_brute_force(spacing: float) -> None:
    # Lattice points exactly `spacing` apart (up to rounding of the products): whatever the
    # rounding says, the index must agree with brute force, and exact ties do not collide.
    ticks = np.arange(12) * spacing
    gx, gy = np.meshgrid(ticks, ticks, indexing="ij")
    lattice = np.stack([gx.ravel(), gy.ravel()], axis=1)
    extra = np.array([[0.0, 0.0], [0.6 * spacing, 0.8 * spacing]])  # 3-4-5 triangle, a tie
    positions = np.concatenate([lattice, extra, lattice[:5]])  # duplicates too
    for d in (spacing, np.nextafter(spacing, np.inf), np.nextafter(spacing, 0), spacing * 1.5):
        np.testing.assert_array_equal(
            collision_pairs(positions, d), brute_force_pairs(positions, d)
        )
    if spacing == 1.0:
        # Integer lattice: distances are exact, so only the duplicates and the tie partner's
        # near points collide at d = 1, and every lattice neighbour just above it.
        pairs_at_1 = collision_pairs(lattice, 1.0)
        assert pairs_at_1.shape[0] == 0
        neighbours = 2 * 12 * 11
        assert collision_pairs(lattice, np.nextafter(1.0, 2.0)).shape[0] == neighbours


# -- start, density, flocking, arrival ---------------------------------------------------------


def test_reset_places_uavs_at_rest_in_the_source_disc_without_collisions() -> None:
    swarm = _swarm(num_uavs=150, source_center_m=(-7.0, 3.0))
    cfg = swarm.config
    offset = swarm.positions_m - np.array([-7.0, 3.0])
    assert np.all(np.hypot(offset[:, 0], offset[:, 1]) <= cfg.source_radius_m)
    assert np.all(swarm.velocities_mps == 0)
    gaps = np.linalg.norm(swarm.positions_m[:, None] - swarm.positions_m[None], axis=2)
    gaps[np.diag_indices(150)] = np.inf
    assert gaps.min() >= cfg.initial_spacing_m / 2
    assert collision_pairs(swarm.positions_m, cfg.collision_distance_m).shape[0] == 0


def _direct_window_counts(positions: np.ndarray, cell: float, w: int) -> np.ndarray:
    cells = np.floor(positions / cell).astype(int)
    half = w // 2
    out = np.zeros((positions.shape[0], w * w))
    for i in range(positions.shape[0]):
        for j in range(positions.shape[0]):
            if i == j:
                continue
            off = cells[j] - cells[i]
            if abs(off[0]) <= half and abs(off[1]) <= half:
                out[i, (off[0] + half) * w + (off[1] + half)] += 1
    return out


@pytest.mark.parametrize("straggler", [False, True])
@pytest.mark.parametrize("window", [1, 3, 5])
def test_local_density_equals_a_direct_count(window: int, straggler: bool) -> None:
    swarm = _swarm(num_uavs=60, density_window_cells=window, density_cell_m=3.0)
    rng = np.random.default_rng(window)
    swarm.positions_m = rng.uniform(-12, 12, (60, 2))  # negative cells too
    if straggler:  # a bounding box too large for the dense grid: the hashed path
        swarm.positions_m[-1] = [4e6, -3e6]
    swarm.flying[:7] = False  # arrived UAVs are not part of the field
    got = swarm.local_density()
    idx = np.flatnonzero(swarm.flying)
    want = _direct_window_counts(swarm.positions_m[idx], 3.0, window)
    np.testing.assert_array_equal(got, want)
    assert got.sum() > 0


def test_flocking_misfit_uses_the_mean_velocity_of_the_other_uavs_in_the_window() -> None:
    swarm = _swarm(num_uavs=40, wind_std_mps_per_sqrt_s=0.0, density_cell_m=5.0)
    rng = np.random.default_rng(2)
    swarm.velocities_mps = rng.uniform(-2, 2, (40, 2))
    u = rng.uniform(-1, 1, (40, 2))
    report = swarm.step(u, rng)
    pos, vel = swarm.positions_m, swarm.velocities_mps
    cells = np.floor(pos / 5.0).astype(int)
    want = np.zeros(40)
    for i in range(40):
        near = np.all(np.abs(cells - cells[i]) <= 1, axis=1)
        near[i] = False
        if near.any():
            want[i] = np.sum((vel[i] - vel[near].mean(axis=0)) ** 2) * swarm.config.time_step_s
    np.testing.assert_allclose(report.flocking_m2_s, want, rtol=1e-10, atol=1e-12)
    assert np.count_nonzero(want) > 30


def test_collision_counts_per_uav_and_arrival_freezes_a_uav() -> None:
    swarm = _swarm(num_uavs=4, wind_std_mps_per_sqrt_s=0.0)
    dest = np.array(swarm.config.destination_center_m)
    swarm.positions_m = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.9], [50.0, 0.0]])
    swarm.positions_m[3] = dest + np.array([swarm.config.destination_radius_m - 0.01, 0.0])
    report = swarm.step(np.zeros((4, 2)), np.random.default_rng(0))
    # 0-1 (0.5 m) and 0-2 (0.9 m) collide; 1-2 are 1.03 m apart.
    np.testing.assert_array_equal(report.collisions, [2, 1, 1, 0])
    assert report.num_collision_pairs == 2
    np.testing.assert_array_equal(report.arrived, [False, False, False, True])
    np.testing.assert_array_equal(swarm.flying, [True, True, True, False])
    frozen = swarm.positions_m[3].copy()
    report = swarm.step(np.ones((4, 2)), np.random.default_rng(0))
    np.testing.assert_array_equal(report.flying, [0, 1, 2])
    np.testing.assert_array_equal(swarm.positions_m[3], frozen)


# -- configuration and randomness --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_uavs", 0),
        ("num_uavs", 2.5),
        ("time_step_s", 0.0),
        ("time_step_s", float("nan")),
        ("max_accel_mps2", -1.0),
        ("wind_std_mps_per_sqrt_s", -0.1),
        ("source_center_m", (1.0,)),
        ("destination_center_m", (0.0, float("inf"))),
        ("collision_distance_m", 0),
        ("density_window_cells", 2),
        ("max_steps", True),
    ],
)
def test_bad_config_values_name_the_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        make_uav_config(None, {field: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_config_errors_for_unknown_keys_presets_and_a_too_small_source() -> None:
    with pytest.raises(ValueError, match="num_drones"):
        make_uav_config(None, {"num_drones": 5})
    with pytest.raises(ValueError, match="swarm_2k"):
        make_uav_config("swarm_2k")
    with pytest.raises(ValueError, match=r"source_radius_m=5\.0"):
        make_uav_config(None, {"source_radius_m": 5.0})
    with pytest.raises(ValueError, match="destination_center_m"):
        make_uav_config(None, {"destination_center_m": (0.0, 0.0)})
    assert make_uav_config("swarm-10k").num_uavs == 10_000
    assert set(UAV_PRESETS) == {"default", "swarm-1k", "swarm-10k"}
    for name in UAV_PRESETS:
        make_uav_config(name)  # every preset is valid (its lattice holds its swarm)
    cfg = UAVSwarmConfig()
    assert make_uav_config(None, cfg) is cfg
    # A preset would be silently dropped beside a complete config object: an error instead.
    with pytest.raises(ValueError, match="preset='swarm-1k' and a UAVSwarmConfig object"):
        make_uav_config("swarm-1k", cfg)


def test_same_generator_seed_gives_identical_trajectories_and_global_rng_is_untouched() -> None:
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        swarm = UAVSwarm(UAVSwarmConfig(num_uavs=50))
        swarm.reset(rng)
        for _ in range(20):
            swarm.step(np.full((50, 2), 2.0), rng)
        return swarm.positions_m, swarm.velocities_mps

    state = np.random.get_state()  # noqa: NPY002 (checking it is untouched)
    a, b, c = run(5), run(5), run(6)
    after = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert state[1].tolist() == after[1].tolist() and state[2] == after[2]
