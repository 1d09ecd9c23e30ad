"""Parameter-shared training over PettingZoo envs: the SB3 VecEnv adapter and fl-gym train."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from stable_baselines3 import PPO

from fl_gym.agents import load_agent, train
from fl_gym.agents.multiagent import ParameterSharingVecEnv, make_parallel_env
from fl_gym.cli import main


class Countdown(ParallelEnv):
    """Agent i leaves after i + 1 steps; the observation is (agent index, step), reward = action."""

    metadata: ClassVar[dict[str, Any]] = {"name": "countdown_v0"}
    render_mode = None

    def __init__(self, num_agents: int = 3, horizon: int | None = None) -> None:
        self.possible_agents = [f"a{i}" for i in range(num_agents)]
        self.horizon = horizon
        self._obs_space = spaces.Box(-100.0, 100.0, (2,), np.float32)
        self._act_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.resets: list[int | None] = []

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Box:
        return self._act_space

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self.possible_agents.index(agent), self.t], dtype=np.float32)

    def reset(self, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        self.resets.append(seed)
        self.t = 0
        self.agents = list(self.possible_agents)
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        assert set(actions) == set(self.agents), "actions only for live agents"
        self.t += 1
        obs = {a: self._obs(a) for a in self.agents}
        rewards = {a: float(actions[a][0]) for a in self.agents}
        term = {a: self.possible_agents.index(a) + 1 == self.t for a in self.agents}
        trunc = {a: self.horizon is not None and self.t >= self.horizon for a in self.agents}
        infos = {a: {"t": self.t} for a in self.agents}
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rewards, term, trunc, infos


def test_agents_that_leave_early_are_done_once_then_padded() -> None:
    vec = ParameterSharingVecEnv([Countdown, Countdown], seed=7)
    assert vec.num_envs == 6
    obs = vec.reset()
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2, 0, 1, 2])
    assert [env.resets for env in vec.envs] == [[7], [8]]
    actions = np.linspace(-0.5, 0.5, 6, dtype=np.float32)[:, None]

    obs, rewards, dones, infos = vec.step(actions)  # step 1: a0 of both copies leaves
    np.testing.assert_allclose(rewards, actions[:, 0])
    assert dones.tolist() == [True, False, False, True, False, False]
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [0, 1])
    assert infos[0]["TimeLimit.truncated"] is False
    assert infos[0]["episode"] == {"r": pytest.approx(-0.5), "l": 1}

    obs, rewards, dones, infos = vec.step(actions)  # step 2: a1 leaves; a0's slot is padding
    assert rewards[0] == 0.0 and not dones[0] and np.all(obs[0] == 0)
    assert dones.tolist() == [False, True, False, False, True, False]
    assert infos[1]["episode"]["l"] == 2

    obs, rewards, dones, infos = vec.step(actions)  # step 3: a2 leaves, both copies reset
    assert dones.tolist() == [False, False, True, False, False, True]
    np.testing.assert_array_equal(infos[2]["terminal_observation"], [2, 3])
    np.testing.assert_array_equal(obs[:, 1], 0)  # fresh episodes
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2, 0, 1, 2])
    assert all(len(env.resets) == 2 for env in vec.envs)


def test_time_limit_is_reported_as_truncation() -> None:
    vec = ParameterSharingVecEnv([lambda: Countdown(num_agents=3, horizon=2)])
    vec.reset()
    vec.step(np.zeros((3, 1), np.float32))
    _, _, dones, infos = vec.step(np.zeros((3, 1), np.float32))
    assert dones.tolist() == [False, True, True]
    assert infos[1]["TimeLimit.truncated"] is False  # a1 terminated at step 2
    assert infos[2]["TimeLimit.truncated"] is True


def test_different_agent_spaces_are_rejected() -> None:
    class Mixed(Countdown):
        def action_space(self, agent: str) -> spaces.Box:
            return spaces.Box(-1.0, 1.0, (1 + (agent == "a1"),), np.float32)

    with pytest.raises(ValueError, match="one observation and one action space"):
        ParameterSharingVecEnv([Mixed])


@pytest.mark.parametrize("name", ["uav_swarm_v0", "vehicular_v1"])
def test_adapter_replays_the_parallel_env(name: str) -> None:
    config = {"num_uavs": 6} if name == "uav_swarm_v0" else {"system.num_pairs": 4}
    vec = ParameterSharingVecEnv([lambda: make_parallel_env(name, config=config)], seed=3)
    env = make_parallel_env(name, config=config)
    obs = vec.reset()
    expected, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs, np.stack([expected[a] for a in env.possible_agents]))
    space = env.action_space(env.possible_agents[0])
    space.seed(1)
    for _ in range(3):
        actions = np.stack([space.sample() for _ in env.possible_agents])
        obs, rewards, _, _ = vec.step(actions)
        expected, expected_rewards, *_ = env.step(
            dict(zip(env.possible_agents, actions, strict=True))
        )
        np.testing.assert_array_equal(obs, np.stack([expected[a] for a in env.possible_agents]))
        np.testing.assert_allclose(
            rewards, [expected_rewards[a] for a in env.possible_agents], rtol=1e-6
        )


def test_unknown_multiagent_env() -> None:
    with pytest.raises(ValueError, match="unknown multi-agent environment"):
        make_parallel_env("pistonball_v6")


class SignedCountdown(Countdown):
    """Countdown whose agents want opposite things: reward = action for a0, a2; -action for a1."""

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, term, trunc, infos = super().step(actions)
        signed = {a: r * (-1.0) ** self.possible_agents.index(a) for a, r in rewards.items()}
        return obs, signed, term, trunc, infos


def test_parameter_shared_ppo_learns_each_agents_own_reward() -> None:
    """Through the adapter, one shared policy learns what each agent is rewarded for.

    An agent's reward is its action for a0 and a2 and minus it for a1, so the policy must read
    the agent index of its slot and get each slot's own reward back: rewards sent to the wrong
    slot, or padding mixed into a live agent's transitions, would teach the wrong sign. A random
    policy's expected return is 0; the best is 6 per copy (a0 lives 1 step, a1 2, a2 3). Measured
    with this recipe (1,920 steps, rollouts of 16 x 6 slots, 10 epochs, learning rate 3e-3,
    gamma 0) over seeds 0-7: every seed's deterministic actions at reset were +1, -1, +1 (to two
    decimals); with 1,440 steps one seed in 8 stopped short of |action| > 0.9, with 960 steps
    four did.
    """
    vec = ParameterSharingVecEnv([SignedCountdown, SignedCountdown], seed=0)
    model = PPO(
        "MlpPolicy",
        vec,
        n_steps=16,
        batch_size=32,
        n_epochs=10,
        learning_rate=3e-3,
        gamma=0.0,
        seed=0,
        device="cpu",
    )
    model.learn(1920)
    obs = vec.reset()
    episode_return = 0.0
    for step in range(3):  # the whole episode of both copies
        actions, _ = model.predict(obs, deterministic=True)
        if step == 0:
            np.testing.assert_array_equal(np.sign(actions[:, 0]), [1, -1, 1, 1, -1, 1])
            assert np.all(np.abs(actions) > 0.9)
        obs, rewards, _, _ = vec.step(actions)
        episode_return += float(rewards.sum())
    assert episode_return > 0.9 * 12.0  # both copies near their best of 6


@pytest.mark.parametrize("name", ["uav_swarm_v0", "vehicular_v1"])
def test_cli_training_is_the_api_training_and_records_it(name: str, tmp_path) -> None:
    """``fl-gym train`` on a PettingZoo env trains exactly what :func:`train` trains with the same
    arguments, and its provenance JSON says what ran."""
    config = {"num_uavs": 8} if name == "uav_swarm_v0" else {"system.num_pairs": 4}
    (key, value) = next(iter(config.items()))
    path = tmp_path / name
    args = ["train", name, "--timesteps", "64", "--seed", "5", "--save", str(path)]
    args += ["--no-progress", "--algo-kwargs", "n_steps=8", "batch_size=32", "n_epochs=1"]
    args += ["--config", f"{key}={value}"]
    assert main(args) == 0
    loaded = load_agent(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta == loaded.metadata
    assert (meta["env_id"], meta["algo"], meta["policy"], meta["seed"]) == (name, "ppo", "mlp", 5)
    assert meta["config"] == config
    assert meta["algo_kwargs"] == {"n_steps": 8, "batch_size": 32, "n_epochs": 1}
    # Rollouts of 8 steps of every agent slot: exactly the 64 steps asked for.
    assert meta["total_timesteps"] == loaded.model.num_timesteps == 64
    assert meta["requested_timesteps"] == 64
    direct = train(
        name,
        "ppo",
        64,
        seed=5,
        config=config,
        algo_kwargs={"n_steps": 8, "batch_size": 32, "n_epochs": 1},
    )
    for (param, x), (_, y) in zip(
        direct.model.policy.state_dict().items(),
        loaded.model.policy.state_dict().items(),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=param)


def test_device_set_policy_is_refused_for_flat_observations() -> None:
    with pytest.raises(ValueError, match="use policy 'mlp'"):
        train("vehicular_v1", "ppo", 8, policy="device-set", config={"system.num_pairs": 2})


def test_every_parallel_env_module_is_listed() -> None:
    """A new PettingZoo environment in fl_gym.envs cannot be forgotten by fl-gym train."""
    import importlib
    import inspect
    import pkgutil

    import fl_gym.envs
    from fl_gym.agents.multiagent import MULTI_AGENT_ENVS

    # Every ParallelEnv class anywhere under fl_gym.envs is the raw_env of a versioned module.
    classes = set()
    for info in pkgutil.walk_packages(fl_gym.envs.__path__, "fl_gym.envs."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, ParallelEnv) and cls.__module__ == module.__name__:
                classes.add(cls)
    found = set()
    for info in pkgutil.iter_modules(fl_gym.envs.__path__, "fl_gym.envs."):
        module = importlib.import_module(info.name)
        if getattr(module, "raw_env", None) in classes:
            found.add(module.__name__)
            for name in ("env", "parallel_env"):
                assert callable(getattr(module, name, None)), f"{module.__name__}.{name}"
    assert len(classes) == len(found)
    assert found == set(MULTI_AGENT_ENVS.values())
