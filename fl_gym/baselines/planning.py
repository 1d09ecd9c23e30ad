"""Planners that search over simulated futures: a clairvoyant bound and model-predictive control.

Both play a wireless FL environment by trying candidate actions on copies of its state
(:meth:`~fl_gym.envs.wireless_fl.env.WirelessFLEnv.snapshot`) before acting; they need the
environment itself, not only its observations, so they are tools for measuring how much a
controller could gain (a benchmark's headroom), not deployable controllers.

* :class:`ClairvoyantPlanner` sees the future: its copies keep the environment's generator, so a
  simulated round is the round the environment will really play (the same channel draws,
  minibatches and packet losses for the same actions). It is a *fortified rollout*: at the first
  round it plays every base heuristic to the end of the episode and keeps the best action
  sequence; at every round it tries each base heuristic and a few random first actions (each
  continued by the first base heuristic) and switches to a candidate only if its simulated
  return beats the kept sequence's. Because the simulation is exact, the return it reaches is
  never below any base heuristic's on the same seed (tested), which makes it a bound for
  normalising scores; with ``candidate_actions`` it searches every sequence of those actions
  (for tiny instances, where it is the true optimum over those plans).
* :class:`MPCPlanner` does not: each round it draws fresh scenarios (reseeded copies), scores
  every candidate by its mean return over a short horizon, and plays the best - an honest
  controller with a perfect model but no knowledge of the realised randomness.

Both take the base heuristics by registry name (:data:`fl_gym.baselines.BASELINES`) and play
single environments (not vector envs).
"""

from __future__ import annotations

import abc
import copy
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from fl_gym.baselines.base import BaselinePolicy
from fl_gym.envs.wireless_fl.env import WirelessFLEnv
from fl_gym.sim.config import check_int

__all__ = ["ClairvoyantPlanner", "MPCPlanner", "enumerate_selection_actions"]

DEFAULT_BASES = ("round-robin", "best-channel", "proportional-fair", "energy-aware")
"""The base heuristics a planner tries when none are named (those that apply to the env)."""


class _Planner(abc.ABC):
    """Shared machinery: base heuristics shadowing the real episode, simulation on copies."""

    def __init__(
        self,
        env: gym.Env,
        bases: Sequence[str] | None,
        num_random: int,
        seed: int,
    ) -> None:
        from fl_gym.baselines.registry import BASELINES, baselines_for, make_baseline

        unwrapped = getattr(env, "unwrapped", None)
        if not isinstance(unwrapped, WirelessFLEnv):
            raise TypeError(f"a planner needs a wireless FL environment, got {env!r}")
        self.env: WirelessFLEnv = unwrapped
        self._given_env = env  # references are built on it: the same episode length as ours
        applicable = baselines_for(unwrapped)
        if bases is None:
            bases = [b for b in DEFAULT_BASES if b in applicable] or applicable[:1]
        bases = list(bases)
        if not bases:
            raise ValueError("a planner needs at least one base heuristic")
        for name in bases:
            if name not in BASELINES or name not in applicable:
                raise ValueError(
                    f"base heuristic {name!r} does not apply to this environment; allowed: "
                    f"{applicable}"
                )
        self.base_names = tuple(bases)
        self._shadows: list[BaselinePolicy] = [make_baseline(b, unwrapped) for b in bases]
        self.num_random = check_int("num_random", num_random, minimum=0)
        self._rng = np.random.default_rng(seed)
        # The wrapper's spec first: gym.make(..., max_episode_steps=N) records N there only.
        spec = getattr(env, "spec", None) or unwrapped.spec
        limit = getattr(spec, "max_episode_steps", None) if spec is not None else None
        self.max_rounds = int(limit) if limit else unwrapped.config.max_rounds
        """Rounds after which a simulated episode ends (the registration's truncation)."""

    # -- SB3's calling convention ----------------------------------------------------------------

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        """The planned action for the environment's current state (``observation`` is only
        checked to be the environment's; the planner reads the state itself)."""
        env = self.env
        if env.federation is None:
            raise RuntimeError("reset the environment before planning")
        real = env.observe()
        if env.federation.round_index == 0 or bool(np.any(episode_start)):
            self._new_episode()
        # Each heuristic sees every real observation, so its memory follows the real episode
        # and its answer is what it would play here.
        self._shadow_actions = [shadow.predict(real)[0] for shadow in self._shadows]
        snapshot = env.snapshot()
        render_mode, env.render_mode = env.render_mode, None
        try:
            action = self._plan(snapshot)
        finally:
            env.restore(snapshot)
            env.render_mode = render_mode
        return action, state

    def _new_episode(self) -> None:
        for shadow in self._shadows:
            shadow.reset()

    @abc.abstractmethod
    def _plan(self, snapshot: Any) -> Any:
        """The action to play from ``snapshot`` (the environment's current state)."""

    # -- simulation ------------------------------------------------------------------------------

    def _copy_shadow(self, index: int) -> BaselinePolicy:
        return copy.deepcopy(self._shadows[index], {id(self.env): self.env})

    def _candidates(self) -> list[tuple[Any, int]]:
        """First actions to try, each with the base heuristic that continues it."""
        out: list[tuple[Any, int]] = [(a, i) for i, a in enumerate(self._shadow_actions)]
        space = self.env.action_space
        for _ in range(self.num_random):
            space.seed(int(self._rng.integers(2**31)))
            out.append((space.sample(), 0))
        return out

    def _simulate(
        self, snapshot: Any, first: Any, base: int, horizon: int | None, seed: int | None
    ) -> tuple[list[float], list[Any]]:
        """Rewards and actions of playing ``first`` then base heuristic ``base`` from
        ``snapshot`` for ``horizon`` rounds (None: to the end of the episode); ``seed``
        reseeds the copy's generator (None keeps it: the real future)."""
        env = self.env
        env.restore(snapshot)
        if seed is not None:
            env.np_random = np.random.default_rng(seed)
        policy = self._copy_shadow(base)  # has seen the current observation already
        rewards: list[float] = []
        actions: list[Any] = []
        action = first
        while True:
            _, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            actions.append(action)
            done = terminated or truncated or env.federation.round_index >= self.max_rounds
            if done or (horizon is not None and len(actions) >= horizon):
                return rewards, actions
            action = policy.predict(env.observe())[0]


class ClairvoyantPlanner(_Planner):
    """The fortified-rollout search with the real future (see the module docstring).

    Args:
        env: The wireless FL environment the planner plays (wrapped or not).
        bases: Registry names of the base heuristics (default: those of
            :data:`DEFAULT_BASES` that apply to the environment).
        num_random: Random first actions tried each round beside the bases' (>= 0).
        candidate_actions: With it, search every sequence of these actions to the end of the
            episode instead (exponential: tiny instances only; see
            :func:`enumerate_selection_actions`); the result is the optimum over them.
        references: Builders ``make(env) -> policy`` of further controllers (any object with
            SB3's ``predict``: heuristics, an :class:`MPCPlanner`, a trained agent) whose
            whole episode is simulated at the first round and kept if best: the planner's
            return is then never below theirs either (for a controller that is deterministic
            given the environment's state, as these are, built the same way).
        seed: Seed of the random candidates.
    """

    def __init__(
        self,
        env: gym.Env,
        bases: Sequence[str] | None = None,
        *,
        num_random: int = 2,
        candidate_actions: Sequence[Any] | None = None,
        references: Sequence[Callable[[gym.Env], Any]] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(env, bases, num_random, seed)
        self.references = tuple(references)
        self.candidate_actions = None if candidate_actions is None else list(candidate_actions)
        if self.candidate_actions is not None and not self.candidate_actions:
            raise ValueError("candidate_actions must hold at least one action")
        self._kept: list[Any] = []
        self._kept_rewards: list[float] = []

    def _new_episode(self) -> None:
        super()._new_episode()
        self._kept, self._kept_rewards = [], []

    def _plan(self, snapshot: Any) -> Any:
        if self.candidate_actions is not None:
            return self._search(snapshot)[1][0]
        best_rewards, best = self._kept_rewards, self._kept
        if not best:  # the first round: the references' whole episodes
            for make in self.references:
                rewards, actions = self._play_reference(snapshot, make)
                if not best or sum(rewards) > sum(best_rewards):
                    best_rewards, best = rewards, actions
        for first, base in self._candidates():
            rewards, actions = self._simulate(snapshot, first, base, None, None)
            if not best or sum(rewards) > sum(best_rewards):
                best_rewards, best = rewards, actions
        self._kept, self._kept_rewards = best[1:], best_rewards[1:]
        return best[0]

    def _play_reference(
        self, snapshot: Any, make: Callable[[gym.Env], Any]
    ) -> tuple[list[float], list[Any]]:
        """Rewards and actions of a freshly built reference controller's whole episode."""
        env = self.env
        env.restore(snapshot)
        policy = make(self._given_env)
        rewards: list[float] = []
        actions: list[Any] = []
        first = True
        while True:
            action = policy.predict(env.observe(), episode_start=np.array([first]))[0]
            first = False
            _, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            actions.append(action)
            if terminated or truncated or env.federation.round_index >= self.max_rounds:
                return rewards, actions

    def _search(self, snapshot: Any) -> tuple[float, list[Any]]:
        """The best sequence of the candidate actions to the end of the episode (depth-first
        over the actions that decode to distinct plans)."""
        env = self.env
        assert self.candidate_actions is not None
        env.restore(snapshot)
        best_value, best = -np.inf, []
        for action in _distinct(env, self.candidate_actions):
            env.restore(snapshot)
            _, reward, terminated, truncated, _ = env.step(action)
            value, tail = float(reward), []
            if not (terminated or truncated or env.federation.round_index >= self.max_rounds):
                rest, tail = self._search(env.snapshot())
                value += rest
            if value > best_value:
                best_value, best = value, [action, *tail]
        return best_value, best


class MPCPlanner(_Planner):
    """Model-predictive control over fresh scenarios (see the module docstring).

    Args:
        env: The wireless FL environment the planner plays (wrapped or not).
        bases: Registry names of the base heuristics (default: those of
            :data:`DEFAULT_BASES` that apply to the environment).
        horizon: Rounds each candidate is simulated for (>= 1).
        num_scenarios: Fresh scenarios (reseeded copies) each candidate is scored on, the same
            for every candidate of a round (>= 1).
        num_random: Random first actions tried each round beside the bases' (>= 0).
        seed: Seed of the scenarios and random candidates.
    """

    def __init__(
        self,
        env: gym.Env,
        bases: Sequence[str] | None = None,
        *,
        horizon: int = 5,
        num_scenarios: int = 2,
        num_random: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__(env, bases, num_random, seed)
        self.horizon = check_int("horizon", horizon, minimum=1)
        self.num_scenarios = check_int("num_scenarios", num_scenarios, minimum=1)

    def _plan(self, snapshot: Any) -> Any:
        seeds = [int(s) for s in self._rng.integers(2**31, size=self.num_scenarios)]
        best_value, best = -np.inf, None
        for first, base in self._candidates():
            value = np.mean(
                [sum(self._simulate(snapshot, first, base, self.horizon, s)[0]) for s in seeds]
            )
            if best is None or value > best_value:
                best_value, best = value, first
        return best


def _distinct(env: WirelessFLEnv, actions: list[Any]) -> list[Any]:
    """The actions that decode to different plans (the first of each)."""
    seen, out = [], []
    for action in actions:
        plan = env.decode_action(action)[0]
        if not any(plan == other for other in seen):
            seen.append(plan)
            out.append(action)
    return out


def enumerate_selection_actions(env: gym.Env) -> list[np.ndarray]:
    """Every selection of at most M devices as a score action of a selection-only environment
    (for exhaustive searches on tiny instances): scores +1 for the chosen, -1 for the others."""
    raw = env.unwrapped
    if tuple(raw.controls) != ("selection",):
        raise ValueError(f"needs a selection-only environment, got controls {raw.controls}")
    k, m = raw.num_devices, raw.config.wireless.num_subchannels
    out = []
    for size in range(min(k, m) + 1):
        for chosen in itertools.combinations(range(k), size):
            action = -np.ones(k, dtype=np.float32)
            action[list(chosen)] = 1.0
            out.append(action)
    return out
