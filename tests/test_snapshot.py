"""Snapshots of the wireless FL environments: restoring and replaying is bit-identical."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import data_equivalence

import fl_gym

WIRELESS_IDS = [i for i in fl_gym.ENV_IDS if "Vehicular" not in i]
QUICK = {"config": {"max_rounds": 40}}


def _play(env, actions):
    steps = [env.step(a) for a in actions]
    return steps, env.federation.params.clone(), env.federation.cell.battery_j.copy()


@pytest.mark.parametrize("env_id", WIRELESS_IDS)
def test_restore_and_replay_is_bit_identical(env_id: str) -> None:
    env = gym.make(env_id, **QUICK).unwrapped
    env.reset(seed=3)
    space = env.action_space
    space.seed(4)
    for _ in range(2):
        env.step(space.sample())
    snap = env.snapshot()
    actions = [space.sample() for _ in range(4)]
    first, params, battery = _play(env, actions)
    for _ in range(2):  # a snapshot can be restored more than once
        env.restore(snap)
        again, params_again, battery_again = _play(env, actions)
        assert data_equivalence(first, again, exact=True)
        assert torch.equal(params, params_again)
        assert np.array_equal(battery, battery_again)


def test_steps_after_a_snapshot_do_not_change_it() -> None:
    env = gym.make("fl_gym/WirelessFL-v0", **QUICK).unwrapped
    env.reset(seed=0)
    snap = env.snapshot()
    params = snap.state["federation"].params.clone()
    space = env.action_space
    space.seed(0)
    for _ in range(3):
        env.step(space.sample())
    assert torch.equal(snap.state["federation"].params, params)
    assert not torch.equal(env.federation.params, params)
    env.restore(snap)
    assert torch.equal(env.federation.params, params)
    assert env.federation.round_index == 0
    # Restored state is a copy: stepping the env leaves the snapshot as it was.
    env.step(space.sample())
    assert torch.equal(snap.state["federation"].params, params)


def test_snapshot_shares_what_no_step_changes() -> None:
    env = gym.make("fl_gym/ClientSelection-v0").unwrapped
    env.reset(seed=0)
    snap = env.snapshot()
    fed = snap.state["federation"]
    assert fed.data is env.federation.data and fed.x_test is env.federation.x_test
    assert fed.params is not env.federation.params
    assert fed.cell is not env.federation.cell


def test_a_reseeded_restore_plays_a_fresh_future() -> None:
    env = gym.make("fl_gym/ClientSelection-v0").unwrapped
    env.reset(seed=0)
    snap = env.snapshot()
    # Every device scored alike (an unseeded random action could select nobody, and an empty
    # round is the same under any seed).
    action = np.ones(env.action_space.shape, dtype=np.float32)
    first = env.step(action)
    env.restore(snap)
    env.np_random = np.random.default_rng(12345)
    second = env.step(action)
    assert first[4]["accuracy"] != second[4]["accuracy"] or not np.array_equal(
        first[4]["latency_s"], second[4]["latency_s"]
    )


def test_bad_snapshots_are_refused() -> None:
    env = gym.make("fl_gym/WirelessFL-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.snapshot()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="EnvSnapshot"):
        env.restore({"federation": None})
    other = gym.make("fl_gym/OverTheAirFL-v0").unwrapped
    other.reset(seed=0)
    with pytest.raises(TypeError, match="OverTheAirFLEnv"):
        env.restore(other.snapshot())
    bigger = gym.make("fl_gym/WirelessFL-v0", config={"num_devices": 12}).unwrapped
    bigger.reset(seed=0)
    with pytest.raises(ValueError, match="num_devices"):
        env.restore(bigger.snapshot())
