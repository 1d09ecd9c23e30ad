"""The vehicular system: path loss, LOS, interference, queues, mobility, configuration."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest

from fl_gym.sim.vehicular.system import (
    SPEED_OF_LIGHT_MPS,
    VehicularConfig,
    VehicularSystem,
    los_path_loss_db,
    make_vehicular_config,
    nlos_path_loss_db,
)

FC_GHZ = 5.9
H_EFF = 0.5


def _los_reference(d: float) -> float:
    """TR 36.885 / WINNER+ B1 LOS path loss at 5.9 GHz, h' = 0.5 m, written out by hand."""
    breakpoint_m = 4 * H_EFF * H_EFF * FC_GHZ * 1e9 / SPEED_OF_LIGHT_MPS  # 19.68 m
    if d <= breakpoint_m:
        return 22.7 * math.log10(d) + 41.0 + 20 * math.log10(FC_GHZ / 5)
    return 40 * math.log10(d) + 9.45 - 17.3 * math.log10(H_EFF) * 2 + 2.7 * math.log10(FC_GHZ / 5)


def _nlos_reference(d1: float, d2: float) -> float:
    def one(a: float, b: float) -> float:
        n = max(2.8 - 0.0024 * a, 1.84)
        return _los_reference(a) + 20 - 12.5 * n + 10 * n * math.log10(b) + 3 * math.log10(1.18)

    return min(one(d1, d2), one(d2, d1))


@pytest.mark.parametrize(
    ("distance_m", "expected_db"),
    # Values computed by hand: 22.7 + 41 + 1.4376 at 10 m; 80 + 9.45 + 10.4156 + 0.1941 at 100 m.
    [(10.0, 65.1376), (100.0, 100.0597), (3.0, 22.7 * math.log10(3) + 42.4376)],
)
def test_los_path_loss_reference_values(distance_m: float, expected_db: float) -> None:
    assert los_path_loss_db(distance_m) == pytest.approx(expected_db, abs=1e-3)
    assert los_path_loss_db(distance_m) == pytest.approx(_los_reference(distance_m), abs=1e-9)


def test_los_path_loss_is_continuous_at_the_breakpoint_and_floored() -> None:
    bp = 4 * H_EFF * H_EFF * FC_GHZ * 1e9 / SPEED_OF_LIGHT_MPS
    below, above = los_path_loss_db([bp * (1 - 1e-9), bp * (1 + 1e-9)])
    assert below == pytest.approx(above, abs=0.01)
    d = np.linspace(3, 2000, 500)
    assert np.all(np.diff(los_path_loss_db(d)) > 0)
    np.testing.assert_array_equal(los_path_loss_db([0.0, 1.0, 3.0]), los_path_loss_db([3.0] * 3))


@pytest.mark.parametrize(("d1", "d2"), [(100.0, 50.0), (20.0, 300.0), (250.0, 250.0)])
def test_nlos_path_loss_reference_values(d1: float, d2: float) -> None:
    assert nlos_path_loss_db(d1, d2) == pytest.approx(_nlos_reference(d1, d2), abs=1e-9)
    assert nlos_path_loss_db(d2, d1) == pytest.approx(nlos_path_loss_db(d1, d2))
    # Turning a corner costs more than the same total distance in line of sight.
    assert nlos_path_loss_db(d1, d2) > los_path_loss_db(math.hypot(d1, d2))


def _system(rng_seed: int = 0, **overrides: object) -> tuple[VehicularSystem, np.random.Generator]:
    system = VehicularSystem(dataclasses.replace(VehicularConfig(), **overrides))
    rng = np.random.default_rng(rng_seed)
    system.reset(rng)
    return system, rng


def test_freeway_links_are_los_with_the_formula_on_torus_distances() -> None:
    system, _ = _system(layout="freeway", num_pairs=12)
    cfg = system.config
    assert system.los.all()
    tx, rx = system.tx_m, system.rx_m
    for i in range(cfg.num_pairs):
        for j in range(cfg.num_pairs):
            dx = abs(rx[j, 0] - tx[i, 0])
            dx = min(dx, cfg.freeway_length_m - dx)
            d = math.hypot(dx, rx[j, 1] - tx[i, 1])
            assert system.path_loss_db[i, j] == pytest.approx(_los_reference(max(d, 3.0)))
    # The own link is the headway.
    np.testing.assert_allclose(
        np.diagonal(system.path_loss_db),
        [_los_reference(max(h, 3.0)) for h in system.headway_m],
    )


def test_manhattan_los_classification_and_nlos_formula() -> None:
    system, _ = _system(num_pairs=3, pair_distance_min_m=10.0, pair_distance_max_m=10.0)
    # tx 0 on the horizontal street y = 250 heading +x; tx 1 on the same street 100 m on;
    # tx 2 on the vertical street x = 500, 60 m above the street y = 250 (around the corner).
    system.tx_m = np.array([[300.0, 250.0], [400.0, 250.0], [500.0, 310.0]])
    system.heading = np.array([0, 0, 1])
    system._update_geometry()
    rx = system.rx_m
    np.testing.assert_allclose(rx, [[290.0, 250.0], [390.0, 250.0], [500.0, 300.0]])
    assert system.los[0, 1] and system.los[1, 0]  # same street
    assert system.los[2, 2]  # own link along the vertical street
    assert not system.los[0, 2] and not system.los[2, 0]
    # tx 0 -> rx 2 goes 200 m along x and 50 m along y.
    assert system.path_loss_db[0, 2] == pytest.approx(_nlos_reference(200.0, 50.0))
    assert system.path_loss_db[0, 1] == pytest.approx(_los_reference(90.0))


def test_vehicles_stay_on_streets_and_move_at_their_speed() -> None:
    system, rng = _system(num_pairs=50, turn_probability=1.0, slot_duration_s=0.5)
    cfg = system.config
    k = cfg.num_pairs
    turned = 0
    for _ in range(200):
        before, heading = system.tx_m.copy(), system.heading.copy()
        system.step(np.zeros(k), np.zeros(k, dtype=np.int64), rng)
        turned += int((system.heading != heading).sum())
        offset = np.mod(system.tx_m, cfg.block_size_m)
        on = np.minimum(offset, cfg.block_size_m - offset) < 1e-6
        assert np.all(on[:, 0] | on[:, 1]), "a vehicle left the streets"
        step = np.abs(system.tx_m - before)
        step = np.minimum(step, cfg.area_side_m - step).sum(axis=1)  # Manhattan distance
        np.testing.assert_allclose(step, system.speed_mps * cfg.slot_duration_s, rtol=1e-9)
    assert turned > 0


def test_interference_is_zero_across_blocks_and_exact_within_a_block() -> None:
    system, rng = _system(num_pairs=6, num_resource_blocks=6)
    cfg = system.config
    p = np.full(6, cfg.p_max_w)
    report = system.step(p, np.arange(6), rng)
    np.testing.assert_array_equal(report.interference_w, 0.0)
    # Pairs 0, 1 and 2 share block 0; the others have a block each.
    block = np.array([0, 0, 0, 3, 4, 5])
    twin = copy.deepcopy(rng)
    gain = system.large_scale_gain.copy()
    own = system.own_gain.copy()
    report = system.step(p, block, rng)
    fading = twin.standard_exponential((6, 6))  # the step's first draw: cross-link fading
    np.testing.assert_array_equal(report.interference_w[3:], 0.0)
    for j in range(3):
        expected = sum(p[i] * gain[i, j] * fading[i, j] for i in range(3) if i != j)
        assert report.interference_w[j] == pytest.approx(expected, rel=1e-12)
        sinr = p[j] * own[j, 0] / (cfg.noise_power_w + expected)
        assert report.sinr[j] == pytest.approx(sinr, rel=1e-12)
    np.testing.assert_allclose(
        report.rate_bps, cfg.rb_bandwidth_hz * np.log2(1 + report.sinr), rtol=1e-12
    )
    # Silent pairs interfere with no one and get rate 0.
    report = system.step(np.array([0.0, p[1], p[2], 0.0, 0.0, 0.0]), block, rng)
    assert report.rate_bps[0] == 0.0 and report.interference_w[0] > 0.0
    assert report.interference_w[1] > 0.0 and report.interference_w[2] > 0.0
    assert np.all(report.rate_bps[3:] == 0.0)


def test_queue_update_conserves_bits() -> None:
    system, rng = _system(num_pairs=30, arrival_rate_packets_per_s=2000.0)
    cfg = system.config
    levels = rng.integers(0, cfg.num_power_levels, (300, 30))
    served_some = False
    for t in range(300):
        block = rng.integers(0, cfg.num_resource_blocks, 30)
        before = system.queue_bits.copy()
        r = system.step(cfg.power_levels_w[levels[t]], block, rng)
        np.testing.assert_array_equal(r.queue_before_bits, before)
        np.testing.assert_allclose(
            r.queue_bits - before, r.arrivals_bits - r.served_bits, rtol=0, atol=1e-9
        )
        np.testing.assert_array_equal(
            r.served_bits, np.minimum(before, r.rate_bps * cfg.slot_duration_s)
        )
        np.testing.assert_array_equal(
            r.queue_bits, np.maximum(before - r.rate_bps * cfg.slot_duration_s, 0) + r.arrivals_bits
        )
        assert np.all(np.mod(r.arrivals_bits, cfg.packet_size_bits) == 0)
        np.testing.assert_array_equal(
            r.exceedance_bits, np.maximum(r.queue_bits - cfg.queue_threshold_bits, 0)
        )
        served_some |= bool(np.any((r.served_bits > 0) & (r.served_bits < before)))
    assert served_some
    # Poisson arrivals: the mean matches the configured rate.
    system, rng = _system(num_pairs=200)
    arrivals = np.array(
        [system.step(np.zeros(200), np.zeros(200, int), rng).arrivals_bits for _ in range(50)]
    )
    expected = system.config.mean_arrival_bits_per_slot
    assert arrivals.mean() == pytest.approx(expected, rel=0.05)


def test_same_seed_same_actions_bit_identical() -> None:
    def run(seed: int) -> list[np.ndarray]:
        system, rng = _system(seed, num_pairs=15)
        actions = np.random.default_rng(99)
        out = []
        for _ in range(40):
            p = system.config.power_levels_w[actions.integers(0, 6, 15)]
            r = system.step(p, actions.integers(0, 10, 15), rng)
            out += [r.queue_bits, r.sinr, system.tx_m.copy(), system.own_gain.copy()]
        return out

    state = np.random.get_state()[1].copy()  # noqa: NPY002
    a, b, c = run(3), run(3), run(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert np.array_equal(state, np.random.get_state()[1])  # noqa: NPY002


def test_bad_allocations_raise_and_leave_the_system_unchanged() -> None:
    system, rng = _system(num_pairs=4)
    twin, twin_rng = _system(num_pairs=4)
    p_max = system.config.p_max_w
    good_p, good_b = np.full(4, p_max), np.array([0, 1, 2, 3])
    cases = [
        (np.full(3, p_max), good_b, "shape"),
        (np.array([p_max, -1.0, 0, 0]), good_b, r"power_w.*-1\.0"),
        (np.array([p_max, np.nan, 0, 0]), good_b, "nan"),
        (np.full(4, 2 * p_max), good_b, "power_w"),
        (good_p, np.array([0, 1, 2, 10]), r"0\.\.9.*10"),
        (good_p, np.array([0.0, 1.0, 2.0, 3.0]), "integers"),
    ]
    for power, block, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            system.step(power, block, rng)
    with pytest.raises(TypeError, match="Generator"):
        system.step(good_p, good_b, 0)  # type: ignore[arg-type]
    a, b = system.step(good_p, good_b, rng), twin.step(good_p, good_b, twin_rng)
    np.testing.assert_array_equal(a.queue_bits, b.queue_bits)
    np.testing.assert_array_equal(a.sinr, b.sinr)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"num_pairs": 0}, r"num_pairs.*\[1, 10000\].*0"),
        ({"num_pairs": 2.5}, r"num_pairs.*2\.5"),
        ({"layout": "ring"}, "layout.*'ring'"),
        ({"rb_bandwidth_hz": -1.0}, r"rb_bandwidth_hz.*\[1, 1e\+09\].*-1\.0"),
        ({"slot_duration_s": float("nan")}, "slot_duration_s.*nan"),
        ({"tail_shape_target": 0.6}, r"tail_shape_target.*0\.49.*0\.6"),
        ({"turn_probability": 1.5}, r"turn_probability.*1\.5"),
        ({"speed_min_mps": 30.0, "speed_max_mps": 20.0}, r"speed_min_mps.*30\.0"),
        ({"power_levels_dbm": (10.0, 5.0)}, r"power_levels_dbm.*increasing"),
        ({"power_levels_dbm": ()}, "power_levels_dbm"),
        ({"street_width_m": 300.0}, r"street_width_m.*block_size_m.*300\.0"),
        ({"queue_threshold_bits": "big"}, "queue_threshold_bits.*'big'"),
    ],
)
def test_bad_config_values_name_field_value_and_range(
    overrides: dict[str, object], pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        make_vehicular_config(None, overrides)


def test_unknown_config_keys_and_presets() -> None:
    with pytest.raises(ValueError, match="no_such_field"):
        make_vehicular_config(None, {"no_such_field": 1})
    with pytest.raises(ValueError, match=r"channel\.no_such_field"):
        make_vehicular_config(None, {"channel": {"no_such_field": 1}})
    with pytest.raises(ValueError, match="nowhere"):
        make_vehicular_config("nowhere")
    freeway = make_vehicular_config("freeway", {"num_pairs": 7})
    assert freeway.layout == "freeway" and freeway.num_pairs == 7
    assert make_vehicular_config("urban") == VehicularConfig()
    cfg = VehicularConfig()
    assert cfg.power_levels_w[0] == 0.0 and cfg.p_max_w == pytest.approx(0.19953, rel=1e-4)
    assert cfg.num_power_levels == len(cfg.power_levels_dbm) + 1
    assert cfg.tail_mean_target_bits == pytest.approx(2000 / 0.9)
    assert cfg.tail_second_moment_target_bits2 == pytest.approx(2 * 2000**2 / (0.9 * 0.8))
