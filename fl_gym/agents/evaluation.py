"""Evaluate trained agents and baselines alike, on the same seeds.

A policy is named by a string: a baseline's registry name (``"round-robin"``,
``"random:seed=3"``) or ``"ALGO:PATH"`` for an agent saved by :func:`~fl_gym.agents.train`
(``"ppo:models/client_selection"``). :func:`evaluate` plays one episode per seed and returns one
:class:`EpisodeMetrics` per episode; every policy evaluated on the same seeds sees the same
cells, channels and data (common random numbers).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from fl_gym.agents.training import TrainedAgent
from fl_gym.envs.rollout import EpisodeResult, Policy, rollout

__all__ = [
    "MAX_SEEDS",
    "EpisodeMetrics",
    "evaluate",
    "evaluate_episodes",
    "parse_seeds",
    "resolve_policy",
]


@dataclass(frozen=True)
class EpisodeMetrics:
    """What one episode achieved.

    Attributes:
        env_id: Environment id.
        policy: Policy name as given.
        seed: Reset seed.
        final_accuracy: Test accuracy after the last round.
        rounds: Rounds played.
        rounds_to_target: First round at which the target accuracy was reached (``None`` if
            never).
        energy_j: Energy spent by all devices.
        time_s: Sum of the round durations.
        episode_return: Sum of the rewards.
    """

    env_id: str
    policy: str
    seed: int
    final_accuracy: float
    rounds: int
    rounds_to_target: int | None
    energy_j: float
    time_s: float
    episode_return: float

    def as_row(self) -> dict[str, Any]:
        """A flat dict (a CSV row)."""
        return asdict(self)


MAX_SEEDS = 100_000
"""The most seeds :func:`parse_seeds` accepts (one episode each): a range longer than this is
refused before any list is built (``0-999999999999`` would exhaust memory)."""


def parse_seeds(text: str | int | Iterable[int]) -> list[int]:
    """Seeds from ``"0-9"``, ``"0,3,7"``, ``"0-4,10"``, an int or an iterable of ints.

    Args:
        text: The seeds: non-negative integers, at most :data:`MAX_SEEDS` of them.

    Returns:
        The seeds in the given order, without duplicates.

    Raises:
        ValueError: For malformed text, negative seeds, decreasing ranges, or more than
            :data:`MAX_SEEDS` seeds (checked before the seeds are listed).
        TypeError: For seeds that are not integers.
    """
    too_many = (
        f"seeds must be at most {MAX_SEEDS:,} seeds (one episode each; fl_gym.agents."
        f"evaluation.MAX_SEEDS), got {{count:,}} from {text!r}"
    )
    if isinstance(text, (bool, np.bool_)):
        raise TypeError(f"seeds must be integers or text such as '0-9', got {text!r}")
    if isinstance(text, (int, np.integer)):
        seeds = [int(text)]
    elif not isinstance(text, str):
        try:
            count = len(text)  # type: ignore[arg-type]
        except TypeError:
            count = None
        if count is not None and count > MAX_SEEDS:
            raise ValueError(too_many.format(count=count))
        seeds = []
        for s in text:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
                raise TypeError(f"seeds must be integers, got {s!r} in {text!r}")
            seeds.append(int(s))
            if len(seeds) > MAX_SEEDS:
                raise ValueError(too_many.format(count=len(seeds)) + " (or more)")
    else:
        bounds: list[tuple[int, int]] = []
        for part in text.split(","):
            part = part.strip()
            first, dash, last = part.partition("-")
            try:
                lo, hi = (int(first), int(last)) if dash else (int(part), int(part))
                if hi < lo or lo < 0:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"seeds must look like '0-9', '0,3,7' or '0-4,10' (non-negative, ranges "
                    f"increasing), got {text!r}"
                ) from None
            bounds.append((lo, hi))
        count = sum(hi - lo + 1 for lo, hi in bounds)
        if count > MAX_SEEDS:
            raise ValueError(too_many.format(count=count))
        seeds = [seed for lo, hi in bounds for seed in range(lo, hi + 1)]
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be one or more non-negative integers, got {text!r}")
    return list(dict.fromkeys(seeds))


def _baseline_options(text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"baseline options look like name:key=value,key=value; got {item!r}")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return options


def resolve_policy(spec: str | Policy, env: gym.Env, *, trust_pickle: bool = False) -> Policy:
    """Turn a policy name into a policy for ``env`` (objects with ``predict`` pass through).

    Args:
        spec: A heuristic's registry name of any family (optionally ``name:key=value,...``;
            see :data:`fl_gym.baselines.POLICIES`), ``"ALGO:PATH"`` of a trained agent, or an
            object with SB3's ``predict``.
        env: The environment the policy will play (baselines read its configuration).
        trust_pickle: Load a trained agent saved as an SB3 ``.zip``, which is unpickled (only
            for a file from a source you trust; see :func:`~fl_gym.agents.load_agent`).

    Returns:
        The policy.
    """
    from fl_gym.agents.training import ALGORITHMS, load_agent
    from fl_gym.baselines import POLICIES, POLICY_ALIASES, baselines_for, make_policy

    if not isinstance(spec, str):
        if not callable(getattr(spec, "predict", None)):
            raise TypeError(f"a policy needs SB3's predict(); got {type(spec).__name__}")
        return spec
    head, _, rest = spec.partition(":")
    if head.lower() in ALGORITHMS:
        if not rest:
            raise ValueError(
                f"a trained agent is named ALGO:PATH, e.g. ppo:models/agent; got {spec!r}"
            )
        agent = load_agent(rest, env, trust_pickle=trust_pickle)
        trained_for = agent.metadata.get("env_id")
        env_id = env.spec.id if env.spec is not None else None
        if trained_for and env_id and trained_for != env_id:
            raise ValueError(f"{spec} was trained on {trained_for}, not {env_id}")
        return agent
    if head in POLICIES or head in POLICY_ALIASES:
        return make_policy(head, env, **_baseline_options(rest))
    raise ValueError(
        f"unknown policy {spec!r}: use a baseline name ({', '.join(baselines_for(env))}) or "
        f"ALGO:PATH with ALGO in {ALGORITHMS}"
    )


def _metrics(env_id: str, name: str, episode: EpisodeResult, target: float) -> EpisodeMetrics:
    return EpisodeMetrics(
        env_id=env_id,
        policy=name,
        seed=episode.seed,
        final_accuracy=episode.final_accuracy,
        rounds=episode.rounds,
        rounds_to_target=episode.rounds_to(target),
        energy_j=episode.total_energy_j,
        time_s=episode.total_time_s,
        episode_return=episode.episode_return,
    )


def evaluate_episodes(
    policy: str | Policy,
    env_id: str,
    seeds: Sequence[int] | str = "0-9",
    *,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    deterministic: bool = True,
    max_episode_steps: int | None = None,
    trust_pickle: bool = False,
) -> tuple[list[EpisodeMetrics], list[EpisodeResult]]:
    """Like :func:`evaluate`, also returning the round-by-round episode records."""
    kwargs: dict[str, Any] = {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if config:
        kwargs["config"] = config
    if preset is not None:
        kwargs["preset"] = preset
    env = gym.make(env_id, **kwargs)
    try:
        agent = resolve_policy(policy, env, trust_pickle=trust_pickle)
        name = policy if isinstance(policy, str) else getattr(policy, "name", type(policy).__name__)
        target = float(env.unwrapped.config.target_accuracy)
        # A baseline named by a string starts every episode afresh (its own random stream and
        # rotation too), so an episode's result depends on its seed only, not on the episodes
        # played before it: the same as one job per seed in the benchmark harness.
        fresh = isinstance(policy, str) and not isinstance(agent, TrainedAgent)
        episodes = []
        for seed in parse_seeds(seeds):
            player = resolve_policy(policy, env) if fresh and episodes else agent
            episodes.append(rollout(env, player, seed=seed, deterministic=deterministic))
    finally:
        env.close()
    return [_metrics(env_id, str(name), e, target) for e in episodes], episodes


def evaluate(
    policy: str | Policy,
    env_id: str,
    seeds: Sequence[int] | str = "0-9",
    *,
    config: dict[str, Any] | None = None,
    preset: str | None = None,
    deterministic: bool = True,
    max_episode_steps: int | None = None,
    trust_pickle: bool = False,
) -> list[EpisodeMetrics]:
    """Play one episode per seed and measure it.

    Args:
        policy: A baseline name, ``"ALGO:PATH"`` of a saved agent, or an object with ``predict``.
        env_id: A registered fl_gym environment id.
        seeds: Reset seeds (``"0-9"``, a list, ...); one episode each.
        config: Config overrides of the environment.
        preset: Scenario preset.
        deterministic: Passed to ``predict`` (trained agents act on their mean/mode).
        max_episode_steps: Episode length instead of the registered one.
        trust_pickle: Load a trained agent saved as an SB3 ``.zip`` (see
            :func:`~fl_gym.agents.load_agent`: unpickling can run code).

    Returns:
        One :class:`EpisodeMetrics` per seed, in seed order.
    """
    return evaluate_episodes(
        policy,
        env_id,
        seeds,
        config=config,
        preset=preset,
        deterministic=deterministic,
        max_episode_steps=max_episode_steps,
        trust_pickle=trust_pickle,
    )[0]
