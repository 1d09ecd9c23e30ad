"""Parameter-shared multi-agent training: a PettingZoo parallel env seen as an SB3 ``VecEnv``.

Every agent of every copy of the environment is one slot of the vector environment, and one
SB3 policy acts for all of them (parameter sharing, as in Terry et al., "Revisiting Parameter
Sharing in Multi-Agent Deep Reinforcement Learning"). The agents must share one observation
space and one action space (both fl_gym multi-agent environments do).

Agents may leave early (a UAV that reached its destination): the step an agent terminates, its
slot reports ``done`` with the agent's true last observation as ``terminal_observation``; from
then on, until its environment's episode ends, the slot plays a padding transition (zero
observation, zero reward, not done) whose actions are ignored. When every agent of a copy is
gone, the copy resets and all its slots start a new episode (``done`` for slots still alive,
with ``TimeLimit.truncated`` set when the episode was cut by the time limit).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

__all__ = ["MULTI_AGENT_ENVS", "ParameterSharingVecEnv", "make_parallel_env"]

MULTI_AGENT_ENVS = {
    "vehicular_v1": "fl_gym.envs.vehicular_v1",
    "uav_swarm_v0": "fl_gym.envs.uav_swarm_v0",
}
"""fl_gym's PettingZoo environments by name (the module that holds ``parallel_env``)."""


def make_parallel_env(name: str, **kwargs: Any) -> Any:
    """``parallel_env(**kwargs)`` of one of :data:`MULTI_AGENT_ENVS`."""
    key = name.removeprefix("fl_gym.envs.").removeprefix("fl_gym/")
    if key not in MULTI_AGENT_ENVS:
        raise ValueError(
            f"unknown multi-agent environment {name!r}; known: {sorted(MULTI_AGENT_ENVS)}"
        )
    return importlib.import_module(MULTI_AGENT_ENVS[key]).parallel_env(**kwargs)


class ParameterSharingVecEnv(VecEnv):
    """SB3 ``VecEnv`` whose slots are the agents of one or more PettingZoo parallel envs.

    Args:
        env_fns: Constructors of the parallel environments (one per copy).
        seed: Seed of the first copy's first reset; copy ``i`` uses ``seed + i``, and each
            later reset of a copy draws its seed from a generator seeded with ``seed``.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], seed: int = 0) -> None:
        if not env_fns:
            raise ValueError("env_fns must hold at least one environment constructor")
        self.envs = [fn() for fn in env_fns]
        first = self.envs[0]
        agents = list(first.possible_agents)
        obs_space = first.observation_space(agents[0])
        act_space = first.action_space(agents[0])
        for env in self.envs:
            for agent in env.possible_agents:
                if (
                    env.observation_space(agent) != obs_space
                    or env.action_space(agent) != act_space
                ):
                    raise ValueError(
                        "parameter sharing needs one observation and one action space for every "
                        f"agent; {agent!r} has {env.observation_space(agent)} / "
                        f"{env.action_space(agent)}, the first agent {obs_space} / {act_space}"
                    )
        self.slots: list[tuple[int, str]] = [
            (i, agent) for i, env in enumerate(self.envs) for agent in env.possible_agents
        ]
        super().__init__(len(self.slots), obs_space, act_space)
        self._seed = int(seed)
        self._rng = np.random.default_rng(self._seed)
        self._obs = np.zeros((self.num_envs, *obs_space.shape), dtype=obs_space.dtype)
        self._actions: np.ndarray | None = None
        self._slot_of = {slot: n for n, slot in enumerate(self.slots)}
        self._episode_returns = np.zeros(self.num_envs)
        self._episode_lengths = np.zeros(self.num_envs, dtype=np.int64)

    # -- helpers ---------------------------------------------------------------------------------

    def _reset_copy(self, i: int, seed: int | None) -> None:
        observations, _ = self.envs[i].reset(seed=seed)
        for agent in self.envs[i].possible_agents:
            n = self._slot_of[(i, agent)]
            self._obs[n] = observations.get(agent, 0)
            self._episode_returns[n] = 0.0
            self._episode_lengths[n] = 0

    # -- VecEnv API ------------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        for i in range(len(self.envs)):
            self._reset_copy(i, self._seed + i)
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_async() must come before step_wait()")
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        next_obs = np.zeros_like(self._obs)
        for i, env in enumerate(self.envs):
            live = list(env.agents)
            actions = {a: self._actions[self._slot_of[(i, a)]] for a in live}
            observations, agent_rewards, terminations, truncations, agent_infos = env.step(actions)
            for agent in live:
                n = self._slot_of[(i, agent)]
                rewards[n] = float(agent_rewards.get(agent, 0.0))
                self._episode_returns[n] += rewards[n]
                self._episode_lengths[n] += 1
                infos[n] = dict(agent_infos.get(agent, {}))
                if agent in observations:
                    next_obs[n] = observations[agent]
                if terminations.get(agent, False) or truncations.get(agent, False):
                    dones[n] = True
                    infos[n]["terminal_observation"] = next_obs[n].copy()
                    infos[n]["TimeLimit.truncated"] = bool(
                        truncations.get(agent, False) and not terminations.get(agent, False)
                    )
                    infos[n]["episode"] = {
                        "r": float(self._episode_returns[n]),
                        "l": int(self._episode_lengths[n]),
                    }
            if not env.agents:
                self._reset_copy(i, int(self._rng.integers(2**31 - 1)))
                for agent in env.possible_agents:
                    next_obs[self._slot_of[(i, agent)]] = self._obs[self._slot_of[(i, agent)]]
        self._obs = next_obs
        self._actions = None
        return self._obs.copy(), rewards, dones, infos

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed the next :meth:`reset` (copy ``i`` gets ``seed + i``)."""
        if seed is not None:
            self._seed = int(seed)
            self._rng = np.random.default_rng(self._seed)
        return [self._seed + self.slots[n][0] for n in range(self.num_envs)]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.envs[self.slots[n][0]], attr_name) for n in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for i in {self.slots[n][0] for n in self._indices(indices)}:
            setattr(self.envs[i], attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        return [
            getattr(self.envs[self.slots[n][0]], method_name)(*method_args, **method_kwargs)
            for n in self._indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
