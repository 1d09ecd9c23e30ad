"""The reward modes of the wireless FL environments: closed forms, penalties, budgets."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

import fl_gym  # noqa: F401
from fl_gym.baselines import make_policy

ENV_ID = "fl_gym/ClientSelection-v0"


def _episode(config: dict, policy: str = "round-robin", seed: int = 0, env_id: str = ENV_ID):
    env = gym.make(env_id, config=config)
    pol = make_policy(policy, env)
    obs, info = env.reset(seed=seed)
    steps = [(None, info)]
    while True:
        action, _ = pol.predict(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((reward, info))
        if terminated or truncated:
            return env.unwrapped, steps, terminated, truncated


@pytest.mark.parametrize("env_id", [ENV_ID, "fl_gym/OverTheAirFL-v0"])
def test_time_to_accuracy_is_favors_reward(env_id: str) -> None:
    policy = "ota-all" if "OverTheAir" in env_id else "round-robin"
    _env, steps, terminated, _ = _episode(
        {"reward_mode": "time-to-accuracy", "target_accuracy": 0.9}, policy, env_id=env_id
    )
    assert terminated and steps[-1][1]["accuracy"] >= 0.9
    for reward, info in steps[1:]:
        assert reward == pytest.approx(64.0 ** (info["accuracy"] - 0.9) - 1.0, abs=1e-12)
        assert info["reward_terms"]["target_missed"] == 0.0
        # Below the target each round costs between 0 and 1; at it, the reward is >= 0.
        assert (-1 < reward < 0) == (info["accuracy"] < 0.9)


def test_energy_to_accuracy_charges_the_energy() -> None:
    _env, steps, terminated, _ = _episode(
        {"reward_mode": "energy-to-accuracy", "target_accuracy": 0.9, "energy_weight_per_j": 7.0}
    )
    assert terminated
    total = 0.0
    for reward, info in steps[1:]:
        assert reward == pytest.approx(-7.0 * info["energy_j"], abs=1e-12)
        total += reward
    assert total == pytest.approx(-7.0 * steps[-1][1]["energy_spent_j"], abs=1e-9)


@pytest.mark.parametrize("mode", ["time-to-accuracy", "energy-to-accuracy"])
def test_a_missed_target_pays_a_penalty_no_success_falls_below(mode: str) -> None:
    config = {"reward_mode": mode, "max_rounds": 6}
    failed_env, failed, terminated, truncated = _episode({**config, "target_accuracy": 1.0})
    # The environment itself ends the episode at max_rounds and charges the penalty.
    assert truncated and not terminated and len(failed) == 7
    penalty = failed_env.target_penalty()
    assert failed[-1][1]["reward_terms"]["target_missed"] == -penalty
    assert all(info["reward_terms"]["target_missed"] == 0.0 for _, info in failed[1:-1])
    failed_return = sum(r for r, _ in failed[1:])
    capacity = float(failed_env.federation.cell.battery_capacity_j.sum())
    if mode == "time-to-accuracy":
        assert penalty == 6.0
        worst_success = -6.0  # every round before the target earns more than -1
    else:
        assert penalty == pytest.approx(20.0 * capacity + 1.0)
        worst_success = -20.0 * capacity  # no episode spends more than the batteries hold
    assert failed_return <= -penalty <= worst_success
    _, won, terminated, _ = _episode({**config, "target_accuracy": 0.3})
    won_return = sum(r for r, _ in won[1:])
    assert terminated and won_return >= worst_success and won_return > failed_return


def test_an_exhausted_cell_before_the_target_is_a_failure() -> None:
    env, steps, terminated, truncated = _episode(
        {
            "reward_mode": "time-to-accuracy",
            "target_accuracy": 1.0,
            "wireless.battery_min_j": 0.005,
            "wireless.battery_max_j": 0.01,
        },
        policy="full",
    )
    assert terminated and not truncated
    assert not env.federation.cell.available.any()
    assert steps[-1][1]["reward_terms"]["target_missed"] == -env.target_penalty()


def test_accuracy_at_budget_counts_only_rounds_within_the_budget() -> None:
    _env, steps, terminated, truncated = _episode(
        {"reward_mode": "accuracy-at-budget", "energy_budget_j": 0.3, "target_accuracy": 0.5}
    )
    # The target does not end this mode; the overspending round does, and earns nothing.
    assert terminated and not truncated
    spent = [info["energy_spent_j"] for _, info in steps]
    assert spent[-1] > 0.3 >= spent[-2]
    assert steps[-1][0] == 0.0
    episode_return = sum(r for r, _ in steps[1:])
    assert episode_return == pytest.approx(
        100.0 * (steps[-2][1]["accuracy"] - steps[0][1]["accuracy"])
    )


def test_accuracy_at_budget_with_a_time_budget() -> None:
    _, steps, terminated, _ = _episode({"reward_mode": "accuracy-at-budget", "time_budget_s": 2.5})
    elapsed = np.cumsum([info["round_time_s"] for _, info in steps[1:]])
    assert terminated and elapsed[-1] > 2.5 >= elapsed[-2]


def test_a_budget_mode_without_a_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="energy_budget_j > 0 or time_budget_s > 0"):
        gym.make(ENV_ID, config={"reward_mode": "accuracy-at-budget"})
    with pytest.raises(ValueError, match="reward_mode"):
        gym.make(ENV_ID, config={"reward_mode": "fastest"})
    with pytest.raises(ValueError, match="favor_base"):
        gym.make(ENV_ID, config={"favor_base": 1.0})


def test_presets_select_the_modes() -> None:
    for mode in ("time-to-accuracy", "energy-to-accuracy", "accuracy-at-budget"):
        assert gym.make(ENV_ID, preset=mode).unwrapped.config.reward_mode == mode


def test_native_vector_env_truncates_with_the_environment() -> None:
    kwargs = {
        "config": {"reward_mode": "time-to-accuracy", "max_rounds": 4, "target_accuracy": 1.0}
    }
    native = gym.make_vec(ENV_ID, num_envs=3, **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", **kwargs)
    space = native.action_space
    space.seed(0)
    out = [v.reset(seed=2) for v in (native, sync)]
    assert data_equivalence(out[0], out[1], exact=True)
    truncations = 0
    for _ in range(9):
        action = space.sample()
        a, b = native.step(action), sync.step(action)
        assert data_equivalence(a, b, exact=True)
        truncations += int(a[3].sum())
    assert truncations == 6  # every env at steps 4 and 9 (step 5 is the autoreset)


def test_episode_results_measure_what_each_mode_rewards() -> None:
    from fl_gym.envs.rollout import EpisodeResult

    result = EpisodeResult(
        seed=0,
        accuracy=[0.1, 0.5, 0.7, 0.96, 0.97],
        energy_j=[0.2, 0.3, 0.1, 0.4],
        round_time_s=[1.0, 0.5, 0.25, 1.0],
        rewards=[0.0] * 4,
    )
    assert result.rounds_to(0.95) == 3
    assert result.time_to(0.95) == 1.75
    assert result.energy_to(0.95) == pytest.approx(0.6)
    assert result.time_to(0.99) is None and result.energy_to(0.99) is None
    # Cumulative energy 0.2, 0.5, 0.6, 1.0 J.
    assert result.accuracy_within(energy_budget_j=0.45) == 0.5
    assert result.accuracy_within(energy_budget_j=0.5) == 0.7
    assert result.accuracy_within(energy_budget_j=0.65) == 0.96
    assert result.accuracy_within(time_budget_s=0.9) == 0.1
    assert result.accuracy_within() == 0.97
    # Against the environment: the accuracy-at-budget return is the accuracy within it.
    _, steps, _, _ = _episode({"reward_mode": "accuracy-at-budget", "energy_budget_j": 0.3})
    rec = EpisodeResult(
        seed=0,
        accuracy=[info["accuracy"] for _, info in steps],
        energy_j=[info["energy_j"] for _, info in steps[1:]],
        round_time_s=[info["round_time_s"] for _, info in steps[1:]],
        rewards=[r for r, _ in steps[1:]],
    )
    assert rec.episode_return == pytest.approx(
        100.0 * (rec.accuracy_within(energy_budget_j=0.3) - rec.accuracy[0])
    )
