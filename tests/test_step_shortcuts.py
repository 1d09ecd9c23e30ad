"""The shortcuts a step takes give exactly what the general paths give.

A step skips work its own code already did or that cannot change anything: a decoded action's
plan is not validated twice, the large-scale gain is kept until the positions or the shadowing
move, the battery-depletion branch of the uplink runs only when a battery runs out, records keep
arrays that are already read-only. Each test here computes the same values the long way and
compares them bit for bit (dtype and read-only flags included); the uplink, whose long way
would be a copy of its code, is held to its conservation laws instead.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import fields

import gymnasium as gym
import numpy as np
import pytest

import fl_gym  # noqa: F401 - registers the environments
from fl_gym.envs.wireless_fl.codec import SelectionState, WirelessFLCodec, rank_select
from fl_gym.envs.wireless_fl.config import WirelessFLConfig
from fl_gym.sim.plan import RoundPlan, RoundReport
from fl_gym.sim.radio.cell import CellState, WirelessCell, WirelessConfig, path_loss_db
from fl_gym.sim.radio.uplink import UplinkReport, _uplink_arrays, uplink_many

CODEC_ENVS = [
    "fl_gym/WirelessFL-v0",
    "fl_gym/ClientSelection-v0",
    "fl_gym/PowerControl-v0",
    "fl_gym/GradientCompression-v0",
    "fl_gym/AggregationFrequency-v0",
    "fl_gym/OverTheAirFL-v0",
    "fl_gym/PrivateFL-v0",
    "fl_gym/ByzantineSelection-v1",
]


def _assert_same_array(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
    # Same bits, -0.0 included.
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("env_id", CODEC_ENVS)
def test_decoded_plan_is_the_validated_constructors_plan(env_id: str) -> None:
    env = gym.make(env_id)
    codec = env.unwrapped.codec
    rng = np.random.default_rng(0)
    env.action_space.seed(1)
    k = codec.num_devices
    for trial in range(60):
        available = rng.random(k) < 0.7
        state = SelectionState(available, rng.integers(-1, 5, k))
        action = env.action_space.sample()
        if trial % 3 == 0 and isinstance(action, np.ndarray) and action.dtype.kind == "f":
            action = action * 1.5  # some entries outside [-1, 1]: the clipped path
        plan, _ = codec.decode(action, state)
        reference = RoundPlan(plan.selected, plan.local_steps, plan.compression, plan.power_w)
        for f in fields(RoundPlan):
            got, want = getattr(plan, f.name), getattr(reference, f.name)
            _assert_same_array(got, want)
            assert not got.flags.writeable
        assert not (plan.selected & ~available).any()
        assert plan.selected.sum() <= codec.max_selected
    env.close()


def test_decoded_plan_does_not_share_the_codecs_arrays() -> None:
    codec = WirelessFLCodec(WirelessFLConfig())
    k = codec.num_devices
    state = SelectionState.fresh(np.ones(k, dtype=bool))
    plan, _ = codec.decode(np.full(codec.action_space.shape, 0.5, np.float32), state)
    with pytest.raises(ValueError):
        plan.selected[0] = not plan.selected[0]
    assert state.available.flags.writeable  # the caller's arrays are left alone


def test_action_clipped_flag_and_values() -> None:
    codec = WirelessFLCodec(WirelessFLConfig())
    n = codec.action_space.shape[0]
    state = SelectionState.fresh(np.ones(codec.num_devices, dtype=bool))
    inside = np.linspace(-1.0, 1.0, n)  # both bounds exactly: not clipped
    _, info = codec.decode(inside, state)
    assert info["action_clipped"] is False
    for position, value in ((0, -1.0 - 1e-12), (n - 1, 1.0 + 1e-12), (3, 7.0)):
        outside = inside.copy()
        outside[position] = value
        plan, info = codec.decode(outside, state)
        assert info["action_clipped"] is True
        clipped = outside.copy()
        clipped[position] = np.sign(value)
        assert plan == codec.decode(clipped, state)[0]


def test_one_key_ranking_is_the_lexsort_ranking() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        k = int(rng.integers(1, 12))
        # Few distinct values, signed zeros among them: many ties.
        scores = rng.choice(np.array([-1.0, -0.0, 0.0, 0.5, 1.0]), size=k)
        eligible = rng.random(k) < 0.8
        m = int(rng.integers(0, k + 2))
        order = np.lexsort((np.arange(k), -scores))
        want = np.zeros(k, dtype=bool)
        want[order[eligible[order]][:m]] = True
        _assert_same_array(rank_select((scores,), eligible, m), want)


def test_large_scale_cache_follows_mobility_and_restore() -> None:
    cell = WirelessCell(WirelessConfig(speed_min_mps=1.0, speed_max_mps=30.0), num_devices=6)
    rng = np.random.default_rng(4)
    cell.reset(rng)

    def fresh(c: WirelessCell) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = c.snapshot()
        distance = np.maximum(np.hypot(*state.positions_m.T), c.config.min_distance_m)
        loss = path_loss_db(distance, c.config.path_loss_intercept_db, c.config.path_loss_slope_db)
        large = np.power(10.0, -(loss + state.shadowing_db) / 10.0)
        h = state.fading
        return distance, large, large * np.sum(h.real**2 + h.imag**2, axis=1)

    first = cell.snapshot()
    for _ in range(5):
        distance, large, gain = fresh(cell)
        _assert_same_array(cell.distance_m, distance)
        _assert_same_array(cell.large_scale_gain, large)
        _assert_same_array(cell.channel_gain, gain)
        for cached in (cell.distance_m, cell.large_scale_gain, cell.channel_gain):
            assert not cached.flags.writeable
        cell.advance(rng)
    moved = cell.large_scale_gain
    cell.restore(first)
    _, large, gain = fresh(cell)
    _assert_same_array(cell.large_scale_gain, large)
    _assert_same_array(cell.channel_gain, gain)
    assert not np.array_equal(moved, large)
    for clone in (copy.deepcopy(cell), pickle.loads(pickle.dumps(cell))):
        # A copy's arrays come back writable from numpy: the state's are made read-only
        # again, the caches are recomputed.
        for f in fields(CellState):
            assert not getattr(clone.snapshot(), f.name).flags.writeable
        for cached in (clone.distance_m, clone.large_scale_gain, clone.channel_gain):
            assert not cached.flags.writeable
        _assert_same_array(clone.large_scale_gain, large)
        _assert_same_array(clone.channel_gain, gain)
        clone.advance(np.random.default_rng(5))
        _assert_same_array(clone.large_scale_gain, fresh(clone)[1])


def test_static_cell_keeps_its_large_scale_gain_across_rounds() -> None:
    cell = WirelessCell(WirelessConfig(), num_devices=5)
    rng = np.random.default_rng(6)
    cell.reset(rng)
    large = cell.large_scale_gain
    cell.advance(rng)
    assert cell.large_scale_gain is large  # positions and shadowing did not move
    h = cell.fading
    _assert_same_array(cell.channel_gain, large * np.sum(h.real**2 + h.imag**2, axis=1))


def _uplink_inputs(k: int, seed: int, battery_j: np.ndarray) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return dict(
        sel=rng.random(k) < 0.8,
        power=rng.uniform(0.0, 0.2, k),
        size_bits=rng.uniform(0.0, 2e5, k),
        steps=rng.integers(1, 6, k).astype(np.float64),
        batch_size=16,
        channel_gain=10.0 ** rng.uniform(-14, -9, k),
        cpu_hz=rng.uniform(0.5e9, 2e9, k),
        battery=battery_j,
        draws=rng.random(k),
    )


@pytest.mark.parametrize("battery_j", [1.0, 2e-3, 1e-4, None])
def test_uplink_conserves_energy_and_time_with_and_without_depletion(
    battery_j: float | None,
) -> None:
    """What the uplink reports obeys its own physics whichever branch ran: compute energy is
    compute power times compute time, radio energy is transmit power times air time, a device
    spends at most its battery (all of it if the battery ran out) and at most the deadline, the
    new battery is the old one less what was spent, and a delivered device did its whole job.
    ``None`` mixes ample and tiny batteries in one call, so both kinds of device meet."""
    cfg = WirelessConfig(deadline_s=0.05)
    depleted_seen = 0
    for seed in range(40):
        k = 8
        if battery_j is None:
            battery = np.where(np.random.default_rng(seed + 100).random(k) < 0.5, 1.0, 1e-4)
        else:
            battery = np.full(k, battery_j)
        inputs = _uplink_inputs(k, seed, battery)
        got, new_battery, _ = _uplink_arrays(cfg, **inputs)
        sent = got["transmitted"]
        power, cpu = inputs["power"], inputs["cpu_hz"]
        compute_power = cfg.effective_capacitance * cpu**3
        close = dict(rtol=1e-12, atol=0.0)
        # Devices that did not transmit spend nothing and keep their battery.
        for name in ("compute_time_s", "compute_energy_j", "transmit_time_s", "transmit_energy_j"):
            assert np.all(got[name][~sent] == 0.0), name
        np.testing.assert_array_equal(new_battery[~sent], battery[~sent])
        # Energy is power times time, on every branch.
        np.testing.assert_allclose(
            got["compute_energy_j"], compute_power * got["compute_time_s"], **close
        )
        np.testing.assert_allclose(
            got["transmit_energy_j"], power * got["transmit_time_s"], **close
        )
        spent = got["compute_energy_j"] + got["transmit_energy_j"]
        assert np.all(spent <= battery * (1 + 1e-12))
        assert np.all(got["latency_s"] <= cfg.deadline_s * (1 + 1e-12))
        np.testing.assert_array_equal(
            got["latency_s"], got["compute_time_s"] + got["transmit_time_s"]
        )
        # A depleted device spends its whole battery and ends at zero; the others pay as they go.
        out = got["battery_depleted"]
        depleted_seen += int(out.sum())
        np.testing.assert_allclose(spent[out], battery[out], **close)
        assert np.all(new_battery[out] == 0.0)
        np.testing.assert_allclose(
            new_battery[sent & ~out], (battery - spent)[sent & ~out], **close
        )
        # Depletion happens exactly when the job, cut at the deadline, costs more than the battery.
        cycles = cfg.cycles_per_sample * inputs["batch_size"] * inputs["steps"]
        full_compute_s = cycles / cpu
        capped_compute_s = np.minimum(full_compute_s, cfg.deadline_s)
        rate = got["rate_bps"]
        with np.errstate(divide="ignore"):
            air_s = np.where(inputs["size_bits"] > 0, inputs["size_bits"] / rate, 0.0)
        capped_air_s = np.minimum(air_s, cfg.deadline_s - capped_compute_s)
        need_j = compute_power * capped_compute_s + power * capped_air_s
        np.testing.assert_array_equal(out, sent & (need_j > battery * (1 + 1e-9)))
        # A delivered or lost packet means the whole job was done in time.
        done = got["delivered"] | got["packet_lost"]
        np.testing.assert_allclose(got["compute_time_s"][done], full_compute_s[done], **close)
        np.testing.assert_allclose(got["transmit_time_s"][done], air_s[done], **close)
        assert not np.any(done & (got["straggler"] | out))
    if battery_j == 1.0:
        assert depleted_seen == 0
    elif battery_j == 1e-4:
        assert depleted_seen > 0


def test_uplink_records_are_read_only_and_leave_the_callers_arrays_alone() -> None:
    cell = WirelessCell(WirelessConfig(), num_devices=4)
    cell.reset(np.random.default_rng(7))
    selected = np.array([True, False, True, True])
    power = np.full(4, 0.1)
    bits = np.full(4, 1e5)
    steps = np.ones(4)
    report = uplink_many(
        [cell], [selected], [power], [bits], [steps], 16, [np.random.default_rng(8)]
    )[0]
    for name in (f.name for f in fields(UplinkReport)):
        value = getattr(report, name)
        if isinstance(value, np.ndarray):
            assert not value.flags.writeable, name
    assert report.selected is not selected
    for given in (selected, power, bits, steps):
        assert given.flags.writeable
    selected[0] = False  # the caller may still write its own array
    assert report.selected[0]
    assert not cell.battery_j.flags.writeable


def test_replaced_cell_state_is_the_constructors_state() -> None:
    cell = WirelessCell(WirelessConfig(), num_devices=3)
    cell.reset(np.random.default_rng(9))
    state = cell.snapshot()
    battery = np.array([0.1, 0.2, 0.3])
    got = state._replaced(battery_j=battery)
    want = CellState(
        **{**{f.name: getattr(state, f.name) for f in fields(CellState)}, "battery_j": battery}
    )
    for f in fields(CellState):
        _assert_same_array(getattr(got, f.name), getattr(want, f.name))
        assert not getattr(got, f.name).flags.writeable
    assert got.battery_j is not battery and battery.flags.writeable
    assert got.positions_m is state.positions_m  # unchanged arrays are shared
    np.testing.assert_array_equal(state.battery_j, cell.battery_j)  # the old state is intact


def test_report_shares_read_only_arrays_and_copies_writable_ones() -> None:
    shared = np.zeros(3)
    shared.setflags(write=False)
    writable = np.ones(3)
    zeros = np.zeros(3, dtype=bool)
    report = RoundReport(
        round_index=0,
        selected=zeros,
        delivered=zeros,
        local_steps=np.ones(3, dtype=np.int64),
        compression=np.zeros(3, dtype=np.int64),
        bits_up=np.zeros(3, dtype=np.int64),
        train_loss=writable,
        num_rejected=0,
        accuracy=0.5,
        loss=1.0,
        update_norm=0.0,
        energy_compute_j=shared,
        energy_transmit_j=shared,
        latency_s=shared,
        packet_error=shared,
        straggler=zeros,
        packet_lost=zeros,
        round_time_s=0.0,
        channel_uses=0.0,
    )
    assert report.energy_compute_j is shared
    assert report.train_loss is not writable and not report.train_loss.flags.writeable
    writable[0] = 7.0
    assert report.train_loss[0] == 1.0
    view = np.arange(6.0)[::2]
    view.setflags(write=False)  # read-only, but a view of a writable array: copied
    plan = RoundPlan(np.ones(3, dtype=bool), 1, 0, view)
    assert plan.power_w.base is None and not plan.power_w.flags.writeable
