"""Planners over simulated futures: the clairvoyant search's guarantees, MPC's honesty."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

import fl_gym  # noqa: F401
from fl_gym.baselines import make_policy
from fl_gym.baselines.planning import ClairvoyantPlanner, MPCPlanner, enumerate_selection_actions

SMALL = {"num_devices": 4, "wireless.num_subchannels": 2, "max_rounds": 6}
BASES = ("round-robin", "best-channel", "energy-aware")


def _make(config=SMALL, steps=6):
    return gym.make("fl_gym/ClientSelection-v0", config=config, max_episode_steps=steps)


def _episode_return(env, policy, seed: int) -> float:
    obs, _ = env.reset(seed=seed)
    total = 0.0
    while True:
        action, _ = policy.predict(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            return total


def _replay(actions, seed: int, config=SMALL, steps=6) -> float:
    """The return of a fixed action sequence, from a fresh environment (no snapshots)."""
    env = _make(config, steps)
    env.reset(seed=seed)
    total = 0.0
    for action in actions:
        _, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    return total


@pytest.mark.parametrize("seed", [0, 1])
def test_clairvoyant_is_never_below_its_base_heuristics(seed: int) -> None:
    env = _make()
    heuristics = {b: _episode_return(env, make_policy(b, env), seed) for b in BASES}
    planner_env = _make()
    planner = ClairvoyantPlanner(planner_env, BASES, num_random=2, seed=seed)
    bound = _episode_return(planner_env, planner, seed)
    assert bound >= max(heuristics.values()) - 1e-9, (bound, heuristics)


def test_planning_leaves_the_environment_as_it_was() -> None:
    env = _make()
    planner = ClairvoyantPlanner(env, BASES)
    obs, _ = env.reset(seed=3)
    before = env.unwrapped.snapshot()
    planner.predict(obs)
    after = env.unwrapped.snapshot()
    assert after.state["federation"].round_index == before.state["federation"].round_index == 0
    assert np.array_equal(
        after.state["federation"].params.numpy(), before.state["federation"].params.numpy()
    )
    assert (
        after.state["_np_random"].bit_generator.state
        == before.state["_np_random"].bit_generator.state
    )


def test_exhaustive_search_finds_the_optimum_of_brute_force() -> None:
    """Three rounds, three devices, one sub-channel: every one of the 4^3 plan sequences is
    replayed from a fresh environment; the search's return is their maximum."""
    config = {"num_devices": 3, "wireless.num_subchannels": 1, "max_rounds": 3}
    env = _make(config, 3)
    actions = enumerate_selection_actions(env)
    assert len(actions) == 4  # nobody, or one of three devices
    brute = max(
        _replay(seq, seed=5, config=config, steps=3) for seq in itertools.product(actions, repeat=3)
    )
    planner = ClairvoyantPlanner(env, ("round-robin",), candidate_actions=actions)
    found = _episode_return(env, planner, seed=5)
    assert found == pytest.approx(brute, abs=1e-12)
    # And the fortified rollout cannot beat the optimum.
    rollout_env = _make(config, 3)
    rollout = _episode_return(rollout_env, ClairvoyantPlanner(rollout_env, BASES), seed=5)
    assert rollout <= brute + 1e-12


def test_mpc_does_not_see_the_future() -> None:
    """MPC scores candidates on reseeded copies, so its choice does not depend on the
    environment's own generator state beyond the observable state."""
    env = _make()
    mpc = MPCPlanner(env, BASES, horizon=2, num_scenarios=1, num_random=1, seed=0)
    obs, _ = env.reset(seed=0)
    first, _ = mpc.predict(obs)
    # The same observable state with a different hidden generator state: the same choice.
    env2 = _make()
    mpc2 = MPCPlanner(env2, BASES, horizon=2, num_scenarios=1, num_random=1, seed=0)
    obs2, _ = env2.reset(seed=0)
    env2.unwrapped.np_random = np.random.default_rng(777)
    second, _ = mpc2.predict(obs2)
    assert np.array_equal(first, second)


def test_bad_planner_arguments() -> None:
    env = _make()
    with pytest.raises(ValueError, match="does not apply"):
        ClairvoyantPlanner(env, ("max-power",))
    with pytest.raises(ValueError, match="horizon"):
        MPCPlanner(env, BASES, horizon=0)
    with pytest.raises(TypeError, match="wireless FL"):
        ClairvoyantPlanner(gym.make("fl_gym/VehicularURLLC-v1"))
    with pytest.raises(ValueError, match="selection-only"):
        enumerate_selection_actions(gym.make("fl_gym/WirelessFL-v0"))


def test_clairvoyant_with_references_is_never_below_them() -> None:
    seed = 2
    env = _make()

    def make_mpc(e):
        return MPCPlanner(e, BASES, horizon=2, num_scenarios=1, num_random=1, seed=seed)

    mpc_return = _episode_return(env, make_mpc(env), seed)
    age_return = _episode_return(env, make_policy("age-based", env), seed)
    bound_env = _make()
    planner = ClairvoyantPlanner(
        bound_env,
        ("round-robin",),
        num_random=0,
        references=[make_mpc, lambda e: make_policy("age-based", e)],
    )
    bound = _episode_return(bound_env, planner, seed)
    assert bound >= max(mpc_return, age_return) - 1e-9
