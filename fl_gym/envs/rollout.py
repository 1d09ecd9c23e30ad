"""Run a policy through episodes of an FL environment and summarise what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from fl_gym.sim.threads import DEFAULT_NUM_THREADS, check_num_threads, torch_threads

__all__ = ["EpisodeResult", "Policy", "rollout"]


class Policy(Protocol):
    """Anything with Stable-Baselines3's ``predict`` (trained models and baselines alike)."""

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]: ...


@dataclass
class EpisodeResult:
    """One episode, round by round.

    Attributes:
        seed: The reset seed.
        accuracy: Test accuracy after each round, the initial model's first (length rounds + 1).
        energy_j: Energy spent by all devices in each round.
        round_time_s: Duration of each round.
        rewards: Reward of each round.
        terminated: Whether the episode terminated (target reached or no energy left) rather
            than being truncated.
    """

    seed: int
    accuracy: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    round_time_s: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False

    @property
    def rounds(self) -> int:
        return len(self.rewards)

    @property
    def final_accuracy(self) -> float:
        return self.accuracy[-1]

    @property
    def total_energy_j(self) -> float:
        return float(np.sum(self.energy_j))

    @property
    def total_time_s(self) -> float:
        return float(np.sum(self.round_time_s))

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))

    def rounds_to(self, accuracy: float) -> int | None:
        """First round after which the test accuracy reached ``accuracy`` (None if never)."""
        hits = np.flatnonzero(np.asarray(self.accuracy[1:]) >= accuracy)
        return int(hits[0]) + 1 if hits.size else None


def rollout(
    env: gym.Env,
    policy: Policy,
    *,
    seed: int,
    deterministic: bool = True,
    num_threads: int | None = DEFAULT_NUM_THREADS,
) -> EpisodeResult:
    """Play one episode of ``env`` with ``policy`` from ``env.reset(seed=seed)``.

    Args:
        env: An FL environment (its ``info`` carries ``accuracy``, ``energy_j`` and
            ``round_time_s``).
        policy: Object with SB3's ``predict``.
        seed: Reset seed.
        deterministic: Passed to ``predict``.
        num_threads: torch intra-op threads for the episode (the policy's ``predict`` too);
            ``None`` leaves torch's setting alone (see :mod:`fl_gym.sim.threads`).

    Returns:
        The episode's round-by-round record.
    """
    with torch_threads(check_num_threads(num_threads)):
        return _play(env, policy, seed=seed, deterministic=deterministic)


def _play(env: gym.Env, policy: Policy, *, seed: int, deterministic: bool) -> EpisodeResult:
    obs, info = env.reset(seed=seed)
    result = EpisodeResult(seed=seed, accuracy=[float(info["accuracy"])])
    state: Any = None
    episode_start = np.ones(1, dtype=bool)
    done = False
    while not done:
        action, state = policy.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic
        )
        episode_start = np.zeros(1, dtype=bool)
        obs, reward, terminated, truncated, info = env.step(action)
        result.accuracy.append(float(info["accuracy"]))
        result.energy_j.append(float(info["energy_j"]))
        result.round_time_s.append(float(info["round_time_s"]))
        result.rewards.append(float(reward))
        result.terminated = bool(terminated)
        done = terminated or truncated
    return result
