"""Massive-UAV path control as a PettingZoo parallel environment: the class behind
:mod:`fl_gym.envs.uav_swarm_v0` (build it through that versioned module)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from fl_gym.envs.actions import check_box_action
from fl_gym.envs.human import HumanWindow, check_render_mode, ready_to_render
from fl_gym.sim.config import (
    Range,
    check_instance,
    check_positive,
    reject_unknown_arguments,
    resolve_config,
)
from fl_gym.sim.threads import DEFAULT_NUM_THREADS, check_num_threads, with_torch_threads
from fl_gym.sim.uav.swarm import UAV_FAMILY, UAV_PRESETS, SwarmStep, UAVSwarm, UAVSwarmConfig

__all__ = [
    "OBS_BOUND",
    "PRESET_ALIASES",
    "REWARD_KEY_ALIASES",
    "REWARD_TERMS",
    "UAVSwarmEnv",
    "UAVSwarmEnvConfig",
    "make_uav_env_config",
    "observation_features",
]

OBS_BOUND = 10.0
"""Every observation and state entry is clipped to ``[-OBS_BOUND, OBS_BOUND]``."""

PRESET_ALIASES = {"swarm_1k": "swarm-1k", "swarm_10k": "swarm-10k"}
"""Former preset names, still accepted (with a ``DeprecationWarning``)."""

REWARD_TERMS = ("progress", "time", "energy", "collision", "flocking")
"""Keys of ``infos[agent]["reward_terms"]``; the reward is their sum."""


REWARD_KEY_ALIASES = {
    "energy_weight": "energy_weight_per_m2_s3",
    "collision_cost": "collision_cost_per_pair",
    "flocking_weight": "flocking_weight_per_m2_s",
}
"""Former names of the reward weights (fields of the swarm's configuration until the weights
moved to :class:`UAVSwarmEnvConfig`), still accepted as config keys with a
``DeprecationWarning``."""


@dataclass(frozen=True)
class UAVSwarmEnvConfig:
    """Configuration of ``uav_swarm_v0``: the swarm's scenario and physics, and the reward.

    Keys given to ``config=`` may name a reward weight, a field of the swarm's configuration
    by its bare name (``num_uavs``) or by its dotted path (``swarm.num_uavs``).

    Attributes:
        swarm: Scenario and physics of the swarm (:class:`~fl_gym.sim.uav.swarm.UAVSwarmConfig`).
        progress_reward_per_m: Reward per metre of progress towards the destination centre.
            In [0, 1e+06].
        time_cost_per_s: Reward cost per second a UAV is still flying. In [0, 1e+06].
        energy_weight_per_m2_s3: Reward cost per unit of motion energy ``|u|^2 dt`` (m^2/s^3).
            In [0, 1e+06].
        collision_cost_per_pair: Reward cost per other UAV closer than ``collision_distance_m``
            (per colliding pair the UAV is in). In [0, 1e+06].
        flocking_weight_per_m2_s: Reward cost per unit of velocity misfit ``|v - v_bar|^2 dt``
            ((m/s)^2 s = m^2/s). In [0, 1e+06].
    """

    swarm: UAVSwarmConfig = field(default_factory=UAVSwarmConfig)
    progress_reward_per_m: float = 0.1
    time_cost_per_s: float = 0.1
    energy_weight_per_m2_s3: float = 0.005
    collision_cost_per_pair: float = 1.0
    flocking_weight_per_m2_s: float = 0.005

    RANGES: ClassVar[Mapping[str, Range]] = {
        name: Range(0.0, 1e6)
        for name in (
            "progress_reward_per_m",
            "time_cost_per_s",
            "energy_weight_per_m2_s3",
            "collision_cost_per_pair",
            "flocking_weight_per_m2_s",
        )
    }
    """Documented plausible range of every reward weight (stated in its description)."""

    def __post_init__(self) -> None:
        check_instance("swarm", self.swarm, UAVSwarmConfig)
        for name in self.RANGES:
            object.__setattr__(
                self, name, check_positive(name, getattr(self, name), allow_zero=True, high=1e6)
            )


def make_uav_env_config(
    preset: str | None = None,
    overrides: UAVSwarmEnvConfig | UAVSwarmConfig | Mapping[str, Any] | None = None,
    *,
    base: UAVSwarmEnvConfig | None = None,
) -> UAVSwarmEnvConfig:
    """The configuration of ``uav_swarm_v0`` from a preset and overrides.

    Args:
        preset: A name in :data:`~fl_gym.sim.uav.swarm.UAV_PRESETS` (or a former alias,
            :data:`PRESET_ALIASES`), or ``None``.
        overrides: A dict of overrides (bare or dotted keys, see :class:`UAVSwarmEnvConfig`;
            the former reward names of :data:`REWARD_KEY_ALIASES` warn and are renamed), a
            complete :class:`UAVSwarmEnvConfig`, or a :class:`UAVSwarmConfig` (the swarm part;
            the reward weights stay those of ``base``), or ``None``.
        base: What the preset and overrides apply to (the defaults if ``None``).

    Returns:
        The validated configuration.

    Raises:
        ValueError: An unknown preset or key, a bad value, or a preset beside a config object.
        TypeError: ``overrides`` of another type.
    """
    base = UAVSwarmEnvConfig() if base is None else base
    if preset in PRESET_ALIASES:
        warnings.warn(
            f"preset {preset!r} is deprecated; use {PRESET_ALIASES[preset]!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        preset = PRESET_ALIASES[preset]
    if isinstance(overrides, UAVSwarmConfig):
        if preset is not None:
            raise ValueError(
                f"preset={preset!r} and a UAVSwarmConfig object cannot be combined (the object "
                "is complete); pass the preset with a dict of overrides, or the object alone"
            )
        return dataclasses.replace(base, swarm=overrides)
    if isinstance(overrides, Mapping):
        renamed = {}
        for key, value in overrides.items():
            if key in REWARD_KEY_ALIASES:
                warnings.warn(
                    f"config key {key!r} is deprecated; use {REWARD_KEY_ALIASES[key]!r}",
                    DeprecationWarning,
                    stacklevel=3,
                )
                key = REWARD_KEY_ALIASES[key]
            renamed[key] = value
        overrides = renamed
    return resolve_config(base, preset, overrides, presets=UAV_PRESETS, family=UAV_FAMILY)


def observation_features(config: UAVSwarmConfig) -> tuple[str, ...]:
    """Names of the observation entries, in order, for a configuration."""
    half = config.density_window_cells // 2
    density = tuple(
        f"density[{ox:+d},{oy:+d}]"
        for ox in range(-half, half + 1)
        for oy in range(-half, half + 1)
    )
    return ("x", "y", "vx", "vy", "goal_dx", "goal_dy", *density, "time")


class UAVSwarmEnv(ParallelEnv):
    r"""Many UAVs fly from a source to a destination under wind without colliding.

    ## Description

    After Shiri, Park and Bennis, "Communication-Efficient Massive UAV Online Path Control:
    Federated Learning Meets Mean-Field Game Theory" (IEEE Trans. Commun. 2020). N UAVs (100 by
    default; presets ``swarm-1k`` and ``swarm-10k``) start at rest in a source disc, on a jittered
    lattice 2 m apart, and must reach a destination disc 120 m away. Each UAV is an agent that
    controls its acceleration; the wind perturbs its velocity (``dv = u dt + sigma dW``, integrated
    exactly over each 0.1 s step, see :mod:`fl_gym.sim.uav.swarm`). UAVs closer than 1 m collide.
    Each UAV
    senses the mean field around it: the number of other UAVs in the 3 x 3 cells of 4 m around its
    own cell. All agents share one observation space and one action space, so a single policy can
    control all of them (parameter sharing).

    ## Action Space

    ``Box(-1, 1, (2,), float32)`` per agent: the acceleration along x and y as a fraction of
    ``max_accel_mps2`` (4 m/s^2). A missing agent's action is zero acceleration. An action for an
    agent that is not flying, of the wrong shape, or holding NaN or infinity raises ``ValueError``
    and leaves the environment unchanged; finite values outside ``[-1, 1]`` are clipped.

    ## Observation Space

    ``Box(-10, 10, (7 + w^2,), float32)`` per agent, ``w = density_window_cells`` (16 entries by
    default); :func:`observation_features` names them. ``L`` is the distance between the source and
    destination centres (120 m by default).

    | entry | meaning | scaling |
    | --- | --- | --- |
    | `x`, `y` | position relative to the source centre, m | / L |
    | `vx`, `vy` | velocity, m/s | / ``max_speed_mps`` |
    | `goal_dx`, `goal_dy` | vector to the destination centre, m | / L |
    | `density[ox,oy]` | other UAVs in the cell offset (ox, oy) from its own | / per lattice cell |
    | `time` | elapsed steps | / ``max_steps`` |

    Every entry is clipped to [-10, 10]. ``state()`` returns, for all N UAVs in
    ``possible_agents`` order, ``flying`` (0 or 1), ``x``, ``y``, ``vx``, ``vy`` (scaled as above),
    then ``time``: ``Box(-10, 10, (5 N + 1,), float32)`` (``state_space``).

    ## Rewards

    Per agent and step, the sum of ``infos[agent]["reward_terms"]``:

    | term | value |
    | --- | --- |
    | `progress` | ``progress_reward_per_m`` x metres gained towards the destination centre |
    | `time` | ``-time_cost_per_s`` x ``time_step_s`` |
    | `energy` | ``-energy_weight_per_m2_s3`` x ``|u|^2 dt`` (motion energy, m^2/s^3) |
    | `collision` | ``-collision_cost_per_pair`` x other UAVs closer than ``collision_distance_m`` |
    | `flocking` | ``-flocking_weight_per_m2_s`` x ``|v - v_bar|^2 dt`` (``v_bar``: see below) |

    ``v_bar`` is the mean velocity of the other UAVs in the UAV's window of density cells. The
    density normaliser "per lattice cell" (UAVs per cell at the packing of the start) is
    ``(density_cell_m / initial_spacing_m)^2``.

    ## Episode End

    An agent terminates when it comes within ``destination_radius_m`` (8 m) of the destination
    centre; it is then removed from ``agents``. All agents still flying are truncated after
    ``max_steps`` (400) steps.

    ## Arguments

    ``parallel_env(config=None, preset=None, render_mode=None)``: ``config`` is a
    :class:`UAVSwarmEnvConfig` (the reward weights, with the swarm's
    :class:`~fl_gym.sim.uav.swarm.UAVSwarmConfig` nested as ``swarm``), a ``UAVSwarmConfig``, or a
    dict of overrides whose keys are reward weights or the swarm's fields by bare name (an unknown
    key or a bad value is a ``ValueError`` naming it), applied on top of the named ``preset``
    (``"default"``, ``"swarm-1k"``, ``"swarm-10k"``; :data:`~fl_gym.sim.uav.swarm.UAV_PRESETS`;
    the former ``"swarm_1k"``, ``"swarm_10k"`` are deprecated aliases). An unknown reset option
    is a ``ValueError``, ``step()`` before ``reset()`` a ``RuntimeError``, as in every family.
    ``reset(options={"config": ...})`` changes the configuration for the coming episodes (same
    ``num_uavs`` and ``density_window_cells``). ``render_mode="rgb_array"`` draws the swarm over
    its density (matplotlib, a core dependency);
    :func:`fl_gym.envs.uav.rendering.write_gif` turns frames into a GIF. ``info`` aside, the
    swarm's own arrays are at ``env.swarm`` and the last step's report at ``env.last_step``.

    ## Version History

    * v0: initial release.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "uav_swarm_v0",
        "render_modes": ["rgb_array", "human"],
        "render_fps": 10,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        config: UAVSwarmEnvConfig | UAVSwarmConfig | Mapping[str, Any] | None = None,
        preset: str | None = None,
        render_mode: str | None = None,
        num_threads: int | None = DEFAULT_NUM_THREADS,
        **unexpected: Any,
    ) -> None:
        check_render_mode(render_mode, self.metadata)
        self.num_threads = check_num_threads(num_threads)
        self.config = make_uav_env_config(preset, config)
        reject_unknown_arguments(
            "uav_swarm_v0.parallel_env",
            unexpected,
            self.config,
            ["config", "preset", "render_mode", "num_threads"],
        )
        self.render_mode = render_mode
        self._window = HumanWindow("uav_swarm_v0", self.metadata["render_fps"])
        n = self.config.swarm.num_uavs
        self.possible_agents = [f"uav_{i}" for i in range(n)]
        self._agent_index = {name: i for i, name in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        self._flying_set: set[str] = set()
        self.feature_names = observation_features(self.config.swarm)
        # One space object per kind, shared by every agent: the spaces are identical by design,
        # and 10,000 copies would cost memory for nothing.
        self._observation_space = spaces.Box(
            -OBS_BOUND, OBS_BOUND, (len(self.feature_names),), dtype=np.float32
        )
        self._action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.state_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (5 * n + 1,), dtype=np.float32)
        self.swarm = UAVSwarm(self.config.swarm)
        self.last_step: SwarmStep | None = None
        self._np_random: np.random.Generator | None = None

    # -- spaces ----------------------------------------------------------------------------------

    def observation_space(self, agent: str) -> spaces.Box:
        """The observation space of ``agent`` (the same object for every agent)."""
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Box:
        """The action space of ``agent`` (the same object for every agent)."""
        return self._action_space

    # -- episode ---------------------------------------------------------------------------------

    @with_torch_threads
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode.

        Args:
            seed: Seeds the environment's generator (the first reset without a seed draws one).
            options: ``{"config": UAVSwarmEnvConfig | UAVSwarmConfig | dict}`` changes the
                configuration (same
                ``num_uavs`` and ``density_window_cells``).

        Returns:
            Observations and infos of all agents.

        Warns:
            UserWarning: If ``options`` holds another key (the Gymnasium envs raise; PettingZoo's
                API test resets with an arbitrary option, so a PettingZoo env must accept it).
        """
        unknown = set(options or {}) - {"config"}
        if unknown:
            # PettingZoo's parallel_api_test resets with options={"options": 1} and must pass,
            # so a PettingZoo env warns, with the Gymnasium envs' error text, where they raise.
            warnings.warn(
                f"unknown reset option(s) {sorted(unknown)}; allowed: ['config'] (ignored)",
                UserWarning,
                stacklevel=2,
            )
        if options and options.get("config") is not None:
            self._set_config(options["config"])
        if seed is not None or self._np_random is None:
            self._np_random = np.random.default_rng(seed)
        self.swarm.reset(self._np_random)
        self._set_agents(list(self.possible_agents))
        self.last_step = None
        idx = np.arange(self.config.swarm.num_uavs)
        obs = self._observe(idx, self.swarm.local_density())
        observations = dict(zip(self.agents, obs, strict=True))
        infos: dict[str, dict[str, Any]] = {agent: {} for agent in self.agents}
        if self.render_mode == "human":
            self.render()
        return observations, infos

    def _set_agents(self, agents: list[str]) -> None:
        self.agents = agents
        self._flying_set = set(agents)

    def _set_config(self, config: UAVSwarmEnvConfig | UAVSwarmConfig | Mapping[str, Any]) -> None:
        if isinstance(config, UAVSwarmEnvConfig):
            new = config
        else:
            new = make_uav_env_config(None, config, base=self.config)
        for name in ("num_uavs", "density_window_cells"):
            old_value, new_value = getattr(self.config.swarm, name), getattr(new.swarm, name)
            if new_value != old_value:
                raise ValueError(
                    f"reset(options={{'config': ...}}) cannot change {name} "
                    f"({old_value!r} -> {new_value!r}): the spaces are "
                    "fixed; build a new environment instead"
                )
        self.config = new
        self.swarm = UAVSwarm(new.swarm)

    @with_torch_threads
    def step(
        self, actions: Mapping[str, Any]
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Apply the agents' accelerations for one time step.

        Args:
            actions: Agent name -> action in ``[-1, 1]^2`` for any subset of the flying agents
                (the others get zero acceleration).

        Returns:
            Observations, rewards, terminations, truncations and infos of the agents that were
            flying at the start of the step; those that terminated or were truncated are then
            removed from ``agents``.

        Raises:
            ValueError: If an action is malformed or names an agent that is not flying, or if
                the episode has ended (call ``reset``); the environment is left unchanged.
            RuntimeError: If ``reset`` was never called.
        """
        accel = self._decode_actions(actions)
        report = self.swarm.step(accel, self._np_random)
        self.last_step = report
        flying = report.flying
        # self.agents lists the flying UAVs in index order, as report.flying does.
        names = self.agents
        obs = self._observe(flying, report.density)
        terms = self._reward_terms(report)
        rewards = terms.sum(axis=1)
        truncate = self.swarm.steps >= self.config.swarm.max_steps
        arrived = report.arrived.tolist()
        observations = dict(zip(names, obs, strict=True))
        reward_dict = dict(zip(names, rewards.tolist(), strict=True))
        terminations = dict(zip(names, arrived, strict=True))
        truncations = dict.fromkeys(names, False)
        if truncate:
            truncations = {name: not done for name, done in zip(names, arrived, strict=True)}
        # Per-agent dicts are the largest cost of a large swarm's step: built from dict
        # literals over column lists (no per-row list), and the inner dicts, holding only
        # floats, are not tracked by the garbage collector.
        p, t, e, c, f = REWARD_TERMS
        infos = {
            name: {"reward_terms": {p: a, t: b, e: g, c: h, f: k}}
            for name, a, b, g, h, k in zip(names, *terms.T.tolist(), strict=True)
        }
        if truncate:
            self._set_agents([])
        elif report.arrived.any():
            self._set_agents([name for name, done in zip(names, arrived, strict=True) if not done])
        if self.render_mode == "human":
            self.render()
        return observations, reward_dict, terminations, truncations, infos

    # -- the step's pieces -----------------------------------------------------------------------

    def _decode_actions(self, actions: Mapping[str, Any]) -> np.ndarray:
        if self._np_random is None:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise ValueError("step() called after the episode ended; call reset() first")
        if not isinstance(actions, Mapping):
            raise ValueError(
                f"actions must be a dict from agent name to action, got {type(actions).__name__}"
            )
        accel = np.zeros((self.config.swarm.num_uavs, 2))
        if not actions:
            return accel
        index = self._agent_index
        # One set comparison checks every name when all flying agents act (the usual case).
        if len(actions) != len(self._flying_set) or actions.keys() != self._flying_set:
            for name in actions:
                if name not in self._flying_set:
                    known = isinstance(name, str) and name in index
                    what = "is not flying" if known else "is not an agent of this environment"
                    raise ValueError(
                        f"action for {name!r}, which {what}; allowed: the names in env.agents "
                        f"({len(self.agents)} flying, e.g. {self.agents[:3]})"
                    )
        rows = [index[name] for name in actions]
        try:
            stacked = np.asarray(list(actions.values()))
        except (TypeError, ValueError):
            stacked = None
        if (
            stacked is not None
            and stacked.dtype.kind in "biuf"
            and stacked.shape == (len(rows), 2)
            and np.isfinite(stacked).all()
        ):
            values = stacked.astype(np.float64)
        else:
            # The one input policy (fl_gym.envs.actions), agent by agent, naming the first bad one.
            checked = []
            for name, value in actions.items():
                try:
                    checked.append(check_box_action(value, (2,)))
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"action for {name!r}: {exc}") from exc
            values = np.stack(checked)
        accel[rows] = np.clip(values, -1.0, 1.0) * self.config.swarm.max_accel_mps2
        return accel

    def _observe(self, idx: np.ndarray, density: np.ndarray) -> np.ndarray:
        cfg = self.config.swarm
        scale = 1.0 / cfg.source_to_destination_m
        pos = self.swarm.positions_m[idx]
        obs = np.empty((idx.size, len(self.feature_names)), dtype=np.float64)
        obs[:, 0:2] = (pos - np.asarray(cfg.source_center_m)) * scale
        obs[:, 2:4] = self.swarm.velocities_mps[idx] * (1.0 / cfg.max_speed_mps)
        obs[:, 4:6] = (np.asarray(cfg.destination_center_m) - pos) * scale
        obs[:, 6:-1] = density * (1.0 / cfg.lattice_cell_count)
        obs[:, -1] = self.swarm.steps / cfg.max_steps
        np.clip(obs, -OBS_BOUND, OBS_BOUND, out=obs)
        return obs.astype(np.float32)

    def _reward_terms(self, report: SwarmStep) -> np.ndarray:
        cfg = self.config
        terms = np.empty((report.flying.size, len(REWARD_TERMS)))
        terms[:, 0] = cfg.progress_reward_per_m * report.progress_m
        terms[:, 1] = -cfg.time_cost_per_s * cfg.swarm.time_step_s
        terms[:, 2] = -cfg.energy_weight_per_m2_s3 * report.energy_m2_s3
        terms[:, 3] = -cfg.collision_cost_per_pair * report.collisions
        terms[:, 4] = -cfg.flocking_weight_per_m2_s * report.flocking_m2_s
        return terms

    # -- centralised state, rendering ------------------------------------------------------------

    def state(self) -> np.ndarray:
        """Global state for centralised critics: see the class docstring (``state_space``)."""
        cfg = self.config.swarm
        scale = 1.0 / cfg.source_to_destination_m
        n = cfg.num_uavs
        out = np.empty(5 * n + 1, dtype=np.float64)
        per = out[:-1].reshape(n, 5)
        per[:, 0] = self.swarm.flying
        per[:, 1:3] = (self.swarm.positions_m - np.asarray(cfg.source_center_m)) * scale
        per[:, 3:5] = self.swarm.velocities_mps * (1.0 / cfg.max_speed_mps)
        out[-1] = self.swarm.steps / cfg.max_steps
        np.clip(out, -OBS_BOUND, OBS_BOUND, out=out)
        return out.astype(np.float32)

    def render(self) -> np.ndarray | None:
        """The swarm over its density as an ``(H, W, 3)`` uint8 image (``render_mode="rgb_array"``;
        ``"human"`` shows it in a matplotlib window instead and returns ``None``).

        Warns and returns ``None`` when the environment was built without a render mode.

        Raises:
            RuntimeError: If the environment has not been reset.
        """
        if not ready_to_render(self.render_mode, self._np_random is not None):
            return None
        from fl_gym.envs.uav.rendering import render_swarm

        frame = render_swarm(
            self.swarm.positions_m,
            self.swarm.flying,
            self.config.swarm,
            step=self.swarm.steps,
            collisions=None if self.last_step is None else self.last_step.num_collision_pairs,
        )
        return self._window.deliver(frame, self.render_mode)

    def close(self) -> None:
        """Close the human-mode window, if any (rgb_array frames are drawn on figures that are
        closed after each frame)."""
        self._window.close()
