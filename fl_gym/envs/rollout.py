"""One rollout loop for every environment family, and the policy protocol they all share.

:func:`rollout` plays one episode of a Gymnasium environment (the wireless FL ids,
``fl_gym/VehicularURLLC-v1``) or of a PettingZoo parallel environment (``vehicular_v1``,
``uav_swarm_v0``) with any :class:`Policy`, and hands each step to a small per-family
:class:`EpisodeRecorder` that collects the family's metrics:

| family | recorder | result |
| --- | --- | --- |
| `wireless-fl` | :class:`FLEpisodeRecorder` | :class:`EpisodeResult` (accuracy, energy, time) |
| `vehicular` | :class:`VehicularEpisodeRecorder` | :class:`VehicularEpisode` (power, queues) |
| `uav` | :class:`SwarmEpisodeRecorder` | :class:`SwarmEpisode` (distance, collisions, bits) |

``fl-gym run``, ``eval``, ``bench`` and ``uav``, :func:`fl_gym.agents.evaluate`,
:func:`fl_gym.baselines.uav.run_episode` and the benchmark scripts all play through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from fl_gym.sim.threads import DEFAULT_NUM_THREADS, check_num_threads, torch_threads

__all__ = [
    "FAMILIES",
    "EpisodeRecorder",
    "EpisodeResult",
    "FLEpisodeRecorder",
    "Policy",
    "SwarmEpisode",
    "SwarmEpisodeRecorder",
    "VehicularEpisode",
    "VehicularEpisodeRecorder",
    "env_family",
    "family_of_id",
    "is_multi_agent",
    "make_recorder",
    "rollout",
]

FAMILIES = ("wireless-fl", "vehicular", "uav")
"""The environment families, as :func:`env_family` and :func:`fl_gym.catalogue` name them."""


class Policy(Protocol):
    """Stable-Baselines3's ``predict``, the one calling convention of every fl_gym policy.

    Trained SB3 models, the wireless FL baselines, the vehicular policies and the UAV
    controllers all have it. A single-agent policy takes the environment's observation (or a
    vector env's batch) and returns the action; a multi-agent policy (PettingZoo parallel envs)
    takes the dict of the live agents' observations and returns the dict of their actions. The
    vehicular policies take either form. ``state`` is returned unchanged by the stateless ones;
    ``episode_start`` (true on an episode's first call) clears a heuristic's episode memory.
    """

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]: ...


def is_multi_agent(env: Any) -> bool:
    """Whether ``env`` is a PettingZoo parallel environment (it has ``possible_agents``)."""
    return hasattr(env, "possible_agents") and not isinstance(env, gym.Env)


def env_family(env: Any) -> str:
    """The family of an fl_gym environment (one of :data:`FAMILIES`), wrapped or not.

    Raises:
        TypeError: If ``env`` is no fl_gym environment.
    """
    from fl_gym.envs.uav.env import UAVSwarmEnv
    from fl_gym.envs.vehicular.env import VehicularURLLCEnv
    from fl_gym.envs.vehicular.parallel import VehicularEnv
    from fl_gym.envs.wireless_fl.env import WirelessFLEnv

    unwrapped = getattr(env, "unwrapped", env)
    if isinstance(unwrapped, WirelessFLEnv):
        return "wireless-fl"
    if isinstance(unwrapped, (VehicularURLLCEnv, VehicularEnv)):
        return "vehicular"
    if isinstance(unwrapped, UAVSwarmEnv):
        return "uav"
    raise TypeError(
        "env must be an fl_gym environment (a wireless FL environment, a vehicular or a UAV "
        f"swarm environment; families {list(FAMILIES)}), got {env!r}"
    )


class EpisodeRecorder(Protocol):
    """A family's per-step metrics hook of :func:`rollout`.

    ``start`` is called after ``env.reset(seed=seed)`` (it also starts the policy's episode
    where the family's policies are seeded per episode), ``step`` after every ``env.step``, and
    ``result`` once at the end.
    """

    def start(self, env: Any, policy: Any, seed: int, observation: Any, info: Any) -> None: ...

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None: ...

    def result(self, env: Any, policy: Any) -> Any: ...


# -- wireless FL -------------------------------------------------------------------------------


@dataclass
class EpisodeResult:
    """One episode of a wireless FL environment, round by round.

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

    def time_to(self, accuracy: float) -> float | None:
        """Summed round durations until the test accuracy reached ``accuracy`` (None if never):
        the wall-clock time-to-accuracy of the episode."""
        rounds = self.rounds_to(accuracy)
        return None if rounds is None else float(np.sum(self.round_time_s[:rounds]))

    def energy_to(self, accuracy: float) -> float | None:
        """Energy all devices spent until the test accuracy reached ``accuracy`` (None if
        never)."""
        rounds = self.rounds_to(accuracy)
        return None if rounds is None else float(np.sum(self.energy_j[:rounds]))

    def accuracy_within(
        self, energy_budget_j: float = float("inf"), time_budget_s: float = float("inf")
    ) -> float:
        """The test accuracy after the last round that kept the spent energy and the elapsed
        time within the budgets (the initial accuracy if the first round overspent)."""
        energy = np.cumsum(self.energy_j)
        elapsed = np.cumsum(self.round_time_s)
        within = (energy <= energy_budget_j) & (elapsed <= time_budget_s)
        # Spending only grows, so the rounds within the budgets are a prefix.
        last = int(np.argmin(within)) if not within.all() else len(within)
        return self.accuracy[last]


class FLEpisodeRecorder:
    """Accuracy, energy, round time and reward of every round (``info`` of the FL envs)."""

    def start(self, env: Any, policy: Any, seed: int, observation: Any, info: Any) -> None:
        self._result = EpisodeResult(seed=seed, accuracy=[float(info["accuracy"])])

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None:
        result = self._result
        result.accuracy.append(float(info["accuracy"]))
        result.energy_j.append(float(info["energy_j"]))
        result.round_time_s.append(float(info["round_time_s"]))
        result.rewards.append(float(reward))
        result.terminated = bool(terminated)

    def result(self, env: Any, policy: Any) -> EpisodeResult:
        return self._result


# -- vehicular ---------------------------------------------------------------------------------


@dataclass
class VehicularEpisode:
    """One episode of a vehicular environment, slot by slot.

    Attributes:
        seed: The reset seed.
        mean_power_w: Mean transmit power over the pairs in each slot.
        share_above_q0: Fraction of queues above ``q0`` after each slot.
        rewards: Reward of each slot (the mean over the agents for the PettingZoo form).
        values_exchanged: Values sent for the federated tail estimate in the episode.
    """

    seed: int
    mean_power_w: list[float] = field(default_factory=list)
    share_above_q0: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    values_exchanged: int = 0

    @property
    def slots(self) -> int:
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))

    @property
    def share_above_threshold(self) -> float:
        """Fraction of (pair, slot) queues above ``q0`` over the episode (0 before a slot)."""
        return float(np.mean(self.share_above_q0)) if self.share_above_q0 else 0.0


class VehicularEpisodeRecorder:
    """Power, queues and tail-estimate traffic of every slot (both vehicular envs).

    A vehicular policy (``policy.family == "vehicular"``) is reset at the start of every episode
    (its random stream re-seeded), so an episode depends on its seed only.
    """

    def start(self, env: Any, policy: Any, seed: int, observation: Any, info: Any) -> None:
        if getattr(policy, "family", None) == "vehicular":
            policy.reset()
        self._result = VehicularEpisode(seed=seed)

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None:
        game_info = env.unwrapped.game.info()
        result = self._result
        result.mean_power_w.append(float(game_info["mean_power_w"]))
        result.share_above_q0.append(float(game_info["share_above_q0"]))
        if isinstance(reward, dict):
            reward = float(np.mean(list(reward.values()))) if reward else 0.0
        result.rewards.append(float(reward))
        result.values_exchanged = int(game_info["values_exchanged"])

    def result(self, env: Any, policy: Any) -> VehicularEpisode:
        return self._result


# -- UAV swarm ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwarmEpisode:
    """What one episode of one UAV controller cost.

    Attributes:
        controller: The controller's name.
        steps: Steps played.
        arrived_fraction: Fraction of UAVs that reached the destination.
        travel_distance_m: Mean distance flown per UAV.
        travel_time_s: Mean time per UAV until arrival (the episode's end for the others).
        collision_probability: Fraction of UAVs that collided at least once.
        collisions_per_uav_step: Colliding (UAV, step) occurrences per UAV-step flown.
        motion_energy_m2_s3: Mean motion energy ``sum |u|^2 dt`` per UAV.
        bits_per_episode: Bits exchanged in the episode.
        bits_per_step: ``bits_per_episode / steps``.
        mean_return: Mean sum of rewards per UAV.
    """

    controller: str
    steps: int
    arrived_fraction: float
    travel_distance_m: float
    travel_time_s: float
    collision_probability: float
    collisions_per_uav_step: float
    motion_energy_m2_s3: float
    bits_per_episode: float
    bits_per_step: float
    mean_return: float


class SwarmEpisodeRecorder:
    """Distance, motion energy, collisions, returns and communication of every UAV.

    A UAV controller (``policy.family == "uav"``) is reset with the episode's seed at its start
    (``policy.reset(seed)``), so its learned state and random streams follow the episode's seed.
    """

    def start(self, env: Any, policy: Any, seed: int, observation: Any, info: Any) -> None:
        if getattr(policy, "family", None) == "uav":
            policy.reset(seed)
        n = env.swarm.config.num_uavs
        self._distance = np.zeros(n)
        self._energy = np.zeros(n)
        self._collided = np.zeros(n, dtype=bool)
        self._collision_steps = 0
        self._uav_steps = 0
        self._returns = np.zeros(n)
        self._flight_steps = np.zeros(n)

    def step(self, env: Any, reward: Any, terminated: Any, truncated: Any, info: Any) -> None:
        report = env.last_step
        assert report is not None
        idx = report.flying
        self._distance[idx] += report.distance_m
        self._energy[idx] += report.energy_m2_s3
        self._collided[idx] |= report.collisions > 0
        self._collision_steps += int(np.count_nonzero(report.collisions))
        self._uav_steps += idx.size
        self._flight_steps[idx] += 1
        self._returns[idx] += np.fromiter(reward.values(), dtype=np.float64, count=idx.size)

    def result(self, env: Any, policy: Any) -> SwarmEpisode:
        steps = env.swarm.steps
        bits = getattr(policy, "bits_exchanged", 0)
        return SwarmEpisode(
            controller=str(getattr(policy, "name", type(policy).__name__)),
            steps=steps,
            arrived_fraction=float(np.mean(~env.swarm.flying)),
            travel_distance_m=float(self._distance.mean()),
            travel_time_s=float(self._flight_steps.mean() * env.swarm.config.time_step_s),
            collision_probability=float(self._collided.mean()),
            collisions_per_uav_step=self._collision_steps / max(self._uav_steps, 1),
            motion_energy_m2_s3=float(self._energy.mean()),
            bits_per_episode=float(bits),
            bits_per_step=bits / max(steps, 1),
            mean_return=float(self._returns.mean()),
        )


_RECORDERS: dict[str, type[Any]] = {
    "wireless-fl": FLEpisodeRecorder,
    "vehicular": VehicularEpisodeRecorder,
    "uav": SwarmEpisodeRecorder,
}


def make_recorder(env: Any) -> EpisodeRecorder:
    """A fresh recorder of ``env``'s family (see the module's table)."""
    return _RECORDERS[env_family(env)]()


# -- the loop ----------------------------------------------------------------------------------


def rollout(
    env: Any,
    policy: Policy,
    *,
    seed: int,
    deterministic: bool = True,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    recorder: EpisodeRecorder | None = None,
    frames: list[Any] | None = None,
    on_step: Any = None,
) -> Any:
    """Play one episode of ``env`` with ``policy`` from ``env.reset(seed=seed)``.

    Args:
        env: A Gymnasium environment or a PettingZoo parallel environment of fl_gym.
        policy: Object with SB3's ``predict`` (see :class:`Policy`); a PettingZoo env's policy
            is given the dict of the live agents' observations.
        seed: Reset seed.
        deterministic: Passed to ``predict``.
        num_threads: torch intra-op threads for the episode (the policy's ``predict`` too);
            ``None`` leaves torch's setting alone (see :mod:`fl_gym.sim.threads`).
        recorder: The metrics hook; by default the one of ``env``'s family
            (:func:`make_recorder`).
        frames: If given, ``env.render()`` is appended to it after the reset and every step.
        on_step: Called with no argument after every step (a progress bar).

    Returns:
        What the recorder makes of the episode: an :class:`EpisodeResult` for the wireless FL
        envs, a :class:`VehicularEpisode`, or a :class:`SwarmEpisode`.
    """
    recorder = make_recorder(env) if recorder is None else recorder
    with torch_threads(check_num_threads(num_threads)):
        return _play(env, policy, seed, deterministic, recorder, frames, on_step)


def _play(
    env: Any,
    policy: Policy,
    seed: int,
    deterministic: bool,
    recorder: EpisodeRecorder,
    frames: list[Any] | None,
    on_step: Any,
) -> Any:
    multi_agent = is_multi_agent(env)
    obs, info = env.reset(seed=seed)
    recorder.start(env, policy, seed, obs, info)
    if frames is not None:
        frames.append(env.render())
    state: Any = None
    episode_start = np.ones(1, dtype=bool)
    while not multi_agent or env.agents:
        if multi_agent and len(obs) != len(env.agents):
            # The step's observations include the agents that just finished; only live ones act.
            obs = {agent: obs[agent] for agent in env.agents}
        action, state = policy.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic
        )
        episode_start = np.zeros(1, dtype=bool)
        obs, reward, terminated, truncated, info = env.step(action)
        recorder.step(env, reward, terminated, truncated, info)
        if frames is not None:
            frames.append(env.render())
        if on_step is not None:
            on_step()
        if not multi_agent and (terminated or truncated):
            break
    return recorder.result(env, policy)


_MODULE_FAMILIES = {"vehicular_v1": "vehicular", "uav_swarm_v0": "uav"}


def family_of_id(name: str) -> str:
    """The family of a registered Gymnasium id or of a PettingZoo module's name, built or not.

    Args:
        name: ``"fl_gym/ClientSelection-v0"``, ``"vehicular_v1"``, ``"fl_gym.envs.uav_swarm_v0"``.

    Raises:
        ValueError: If ``name`` is neither.
    """
    import importlib

    module = name.removeprefix("fl_gym.envs.")
    if module in _MODULE_FAMILIES:
        return _MODULE_FAMILIES[module]
    spec = gym.registry.get(name)
    entry = getattr(spec, "entry_point", None)
    if isinstance(entry, str) and entry.startswith("fl_gym."):
        path, _, attr = entry.partition(":")
        cls = getattr(importlib.import_module(path), attr)
        from fl_gym.envs.vehicular.env import VehicularURLLCEnv
        from fl_gym.envs.wireless_fl.env import WirelessFLEnv

        if issubclass(cls, WirelessFLEnv):
            return "wireless-fl"
        if issubclass(cls, VehicularURLLCEnv):
            return "vehicular"
    from fl_gym.envs.registration import ENV_IDS

    raise ValueError(f"unknown environment {name!r}; allowed: {[*ENV_IDS, *_MODULE_FAMILIES]}")
