"""fl_gym/OverTheAirFL-v0 and its selection policies: what differs from digital uploads."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import fl_gym  # noqa: F401  (registers the environments)
from fl_gym.baselines import baselines_for, make_baseline
from fl_gym.envs.rollout import rollout
from fl_gym.sim.radio.cell import dbm_to_w
from fl_gym.sim.radio.over_the_air import ota_channels, ota_mse, receive_beamformer

ENV_ID = "fl_gym/OverTheAirFL-v0"


def _action(scores: list[float] | np.ndarray, power: float = 1.0) -> np.ndarray:
    return np.append(np.asarray(scores, dtype=np.float32), np.float32(power))


def test_everyone_transmits_at_once_without_a_subchannel_limit() -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    raw = env.unwrapped
    k, m = raw.num_devices, raw.config.wireless.num_subchannels
    assert raw.config.wireless.num_antennas == 4  # the environment's own default
    *_, info = env.step(_action(np.ones(k)))
    assert info["selected"].sum() == k > m
    assert info["delivered"].sum() == k
    assert info["channel_uses"] == raw.federation.num_params
    assert info["aggregation_mse"] > 0 and np.isfinite(info["aggregation_mse"])
    assert info["bits_up"].sum() == 0  # analog: no bits
    # Airtime d / B for everyone, and each device's average power within the budget P0 = p_max.
    airtime = raw.federation.num_params / raw.config.wireless.bandwidth_hz
    assert np.all(info["energy_transmit_j"] <= raw.config.wireless.p_max_w * airtime * (1 + 1e-9))
    assert info["energy_transmit_j"].min() > 0


def test_cs_over_the_air_preset_sends_s_measurements_and_vectorises_exactly() -> None:
    from gymnasium.utils.env_checker import data_equivalence

    from fl_gym.sim import CSOverTheAir

    kwargs = {"preset": "cs-over-the-air", "config": {"learning.model": "logreg"}}
    env = gym.make(ENV_ID, **kwargs)
    env.reset(seed=0)
    raw = env.unwrapped
    assert isinstance(raw.pipeline.transport, CSOverTheAir)
    k = raw.num_devices
    *_, info = env.step(_action(np.ones(k), power=1.0))
    s = raw.pipeline.transport.sizes(raw.federation.num_params)[1]
    assert info["channel_uses"] == s == raw.federation.num_params // 2
    assert info["delivered"].sum() == k and info["bits_up"].sum() == 0
    # Channel inversion to the weakest device at the budget: it alone spends P0 x s / B.
    airtime = s / raw.config.wireless.bandwidth_hz
    p0 = dbm_to_w(raw.config.wireless.p_max_dbm)
    assert info["energy_transmit_j"].max() == pytest.approx(p0 * airtime, rel=1e-9)
    # The native vector env runs the same transport, step for step.
    sync = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", **kwargs)
    native = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    assert data_equivalence(sync.reset(seed=4), native.reset(seed=4), exact=True)
    sync.action_space.seed(4)
    for _ in range(3):
        action = sync.action_space.sample()
        assert data_equivalence(sync.step(action), native.step(action), exact=True)


def test_power_action_sets_the_budget_and_lower_power_means_larger_error() -> None:
    mse = {}
    for power in (1.0, -1.0):
        env = gym.make(ENV_ID)
        env.reset(seed=3)
        raw = env.unwrapped
        plan, _ = raw.decode_action(_action(np.ones(raw.num_devices), power))
        expected_dbm = raw.config.wireless.p_max_dbm if power == 1.0 else raw.config.power_min_dbm
        np.testing.assert_allclose(plan.power_w, dbm_to_w(expected_dbm), rtol=1e-9)
        *_, info = env.step(_action(np.ones(raw.num_devices), power))
        mse[power] = info["aggregation_mse"]
    # The error scales as sigma^2 / P0 (the symbol scale is the same: same seed, same updates).
    ratio = dbm_to_w(23.0) / dbm_to_w(0.0)
    assert mse[-1.0] / mse[1.0] == pytest.approx(ratio, rel=1e-6)


def test_more_antennas_lower_the_aggregation_error() -> None:
    errors = {}
    for antennas in (1, 8):
        env = gym.make(ENV_ID, config={"num_antennas": antennas})
        env.reset(seed=0)
        k = env.unwrapped.num_devices
        errors[antennas] = np.mean(
            [env.step(_action(np.ones(k)))[4]["aggregation_mse"] for _ in range(5)]
        )
    assert errors[8] < errors[1] / 3


def test_selecting_nobody_changes_nothing() -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    raw = env.unwrapped
    params = raw.federation.params.clone()
    battery = raw.federation.cell.battery_j.copy()
    *_, info = env.step(_action(-np.ones(raw.num_devices)))
    assert not info["selected"].any() and info["channel_uses"] == 0
    assert (raw.federation.params == params).all()
    np.testing.assert_array_equal(raw.federation.cell.battery_j, battery)


def test_over_the_air_training_learns_digits() -> None:
    env = gym.make(ENV_ID, config={"target_accuracy": 0.9})
    policy = make_baseline("ota-all", env)
    result = rollout(env, policy, seed=0)
    assert result.final_accuracy >= 0.9 and result.terminated and result.rounds < 40


def test_policies_apply_to_their_own_kind_of_uplink() -> None:
    ota, digital = gym.make(ENV_ID), gym.make("fl_gym/ClientSelection-v0")
    assert baselines_for(ota) == ["ota-all", "ota-greedy-channel", "ota-sparse"]
    assert "ota-all" not in baselines_for(digital)
    with pytest.raises(ValueError, match="over-the-air policy"):
        make_baseline("ota-all", digital)
    with pytest.raises(ValueError, match="digital"):
        make_baseline("round-robin", ota)


def test_greedy_channel_keeps_the_strongest_normalised_channels() -> None:
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=1)
    raw = env.unwrapped
    policy = make_baseline("ota-greedy-channel", env, num_devices=4)
    plan = policy.plan(obs)
    cell, sizes = raw.federation.cell, raw.federation.data.client_sizes
    h = ota_channels(cell.large_scale_gain, cell.fading)
    score = np.sum(np.abs(h) ** 2, axis=1) / sizes.astype(float) ** 2
    np.testing.assert_array_equal(np.flatnonzero(plan.selected), np.sort(np.argsort(-score)[:4]))


@pytest.mark.parametrize("reduction_db", [3.0, 10.0])
def test_sparse_selection_meets_its_mse_target(reduction_db: float) -> None:
    env = gym.make(ENV_ID, preset="cell-edge")
    obs, _ = env.reset(seed=2)
    raw = env.unwrapped
    wireless = raw.config.wireless
    power, noise = wireless.p_max_w, wireless.noise_psd_w_per_hz * wireless.bandwidth_hz
    cell, sizes = raw.federation.cell, raw.federation.data.client_sizes.astype(float)
    h = ota_channels(cell.large_scale_gain, cell.fading)
    full = receive_beamformer(h, sizes, num_iterations=20, num_starts=1)
    target = ota_mse(h, sizes, full.beamformer, power_w=power, noise_power_w=noise) * 10 ** (
        -reduction_db / 10
    )
    plan = make_baseline("ota-sparse", env, mse_target=target).plan(obs)
    chosen = plan.selected
    assert 0 < chosen.sum() < raw.num_devices
    design = receive_beamformer(h[chosen], sizes[chosen], num_iterations=20, num_starts=1)
    achieved = ota_mse(
        h[chosen], sizes[chosen], design.beamformer, power_w=power, noise_power_w=noise
    )
    assert achieved <= target * 1.01  # the policy's own design met it; a redesign is as good


def test_bad_actions_and_policy_options() -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    k = env.unwrapped.num_devices
    with pytest.raises(ValueError, match="shape"):
        env.step(np.ones(k, dtype=np.float32))  # the power entry is missing
    with pytest.raises(ValueError, match="non-finite"):
        env.step(_action(np.full(k, np.nan)))
    *_, info = env.step(_action(np.full(k, 3.0), power=7.0))
    assert info["action_clipped"] and info["selected"].all()
    with pytest.raises(ValueError, match=r"num_devices must be in 1\.\.10"):
        make_baseline("ota-greedy-channel", env, num_devices=11)
    with pytest.raises(ValueError, match="mse_target must be > 0"):
        make_baseline("ota-sparse", env, mse_target=-1.0)
