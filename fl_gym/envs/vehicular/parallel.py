"""The vehicular system with one agent per V2V transmitter: the PettingZoo class behind
:mod:`fl_gym.envs.vehicular_v1` (build it through that versioned module)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from fl_gym.envs.human import HumanWindow, check_render_mode, ready_to_render
from fl_gym.envs.vehicular.codec import VehicularCodec
from fl_gym.envs.vehicular.env import (
    OBS_BOUND,
    REWARD_TERMS,
    SERVER_FEATURES,
    VehicularGame,
    VehicularURLLCConfig,
    device_features,
    make_urllc_config,
)
from fl_gym.sim.config import reject_unknown_arguments
from fl_gym.sim.threads import DEFAULT_NUM_THREADS, check_num_threads, with_torch_threads

__all__ = ["VehicularEnv"]


class VehicularEnv(ParallelEnv):
    r"""V2V transmitters choose their power and resource block; a federated tail model guides them.

    ## Description

    The system of :class:`~fl_gym.envs.vehicular.env.VehicularURLLCEnv` (Samarakoon et al., IEEE
    Trans. Commun. 2020) with one agent per V2V transmitter, ``pair_0`` ... ``pair_{K-1}``
    (K = 20 by default). Agents see only their own queue and channels, the interference they
    suffered in the last slot and the roadside unit's broadcast: the federated GPD estimate of
    the queue tail, refreshed every 10 slots from the vehicles' local fits. Spaces are identical
    for all agents, so a parameter-shared policy (one network for all agents) applies directly.

    ## Action Space

    ``MultiDiscrete([L, N])`` per agent: power level (0 is silence, ``l >= 1`` is
    ``power_levels_dbm[l - 1]``; L = 6 by default) and resource block (N = 10). An agent missing
    from the ``actions`` dict stays silent. Malformed actions and unknown agents raise
    ``ValueError`` / ``TypeError`` and leave the environment unchanged.

    ## Observation Space

    ``Box(-10, 10, (1 + 2N + 4,))`` float32 per agent: the agent's row of the Gymnasium
    environment's ``devices`` matrix (queue / q0, N SNRs at p_max in dB / 30, N interference
    levels ``10 log10(1 + I / noise) / 30``) followed by its ``server`` vector (tail scale /
    sigma_th, tail shape, slot / max_steps, share of queues above q0).

    ``state()`` (``state_space``: ``Box(-10, 10, (K (1 + 2N) + 4,))``) is every agent's row,
    flattened in agent order, followed by the server vector: the input of a centralised critic.

    ## Rewards

    Each agent's own ``-p / p_max - 1{Q > q0} - (X / gamma1 - 1)^+ - (X^2 / gamma2 - 1)^+``
    (weights and cap as in :class:`~fl_gym.envs.vehicular.env.VehicularURLLCEnv`); the terms are in
    ``infos[agent]["reward_terms"]``.

    ## Episode End

    No agent terminates; all are truncated after ``max_steps`` slots (100), after which
    ``agents`` is empty.

    ## Arguments

    ``parallel_env(config=None, preset=None, render_mode=None)``: as the Gymnasium environment
    (``config`` a :class:`~fl_gym.envs.vehicular.env.VehicularURLLCConfig` or a dict of overrides,
    ``preset`` ``"urban"`` or ``"freeway"``). ``reset(seed, options={"config": ...})`` may change
    the configuration with the same K, N and power levels. ``render_mode="rgb_array"`` draws the
    road map of the Gymnasium environment (:mod:`fl_gym.envs.vehicular.rendering`); ``"human"``
    shows it in a matplotlib window after every ``reset`` and ``step``.

    ## Version History

    * v1: the roadside unit averages the vehicles' ``(log sigma, xi)`` (the coordinates of
      their gradient steps) instead of ``(sigma, xi)``, so the federated tail estimate has
      the pooled maximum-likelihood estimate as fixed point; tail estimates, observations
      and rewards change.
    * v0: initial release.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "vehicular_v1",
        "render_modes": ["rgb_array", "human"],
        "render_fps": 10,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        config: VehicularURLLCConfig | Mapping[str, Any] | None = None,
        preset: str | None = None,
        render_mode: str | None = None,
        num_threads: int | None = DEFAULT_NUM_THREADS,
        **unexpected: Any,
    ) -> None:
        check_render_mode(render_mode, self.metadata)
        self.render_mode = render_mode
        self._window = HumanWindow("vehicular_v1", self.metadata["render_fps"])
        self.num_threads = check_num_threads(num_threads)
        self.config = make_urllc_config(preset, config)
        reject_unknown_arguments(
            "vehicular_v1.parallel_env",
            unexpected,
            self.config,
            ["config", "preset", "render_mode", "num_threads"],
        )
        sys_cfg = self.config.system
        k, n = sys_cfg.num_pairs, sys_cfg.num_resource_blocks
        self.codec = VehicularCodec.from_system(sys_cfg)
        """The action codec (:mod:`fl_gym.envs.vehicular.codec`), shared with the baselines."""
        self.possible_agents = list(self.codec.agent_names)
        self.agents: list[str] = []
        self.feature_names = (*device_features(n), *SERVER_FEATURES)
        self._observation_space = spaces.Box(
            -OBS_BOUND, OBS_BOUND, (len(self.feature_names),), dtype=np.float32
        )
        self._action_space = self.codec.agent_action_space
        self.state_space = spaces.Box(
            -OBS_BOUND, OBS_BOUND, (k * (1 + 2 * n) + len(SERVER_FEATURES),), dtype=np.float32
        )
        self.game = VehicularGame(self.config)
        self._np_random: np.random.Generator | None = None

    def observation_space(self, agent: str) -> spaces.Box:
        """The observation space of ``agent`` (the same object for every agent)."""
        return self._observation_space

    def action_space(self, agent: str) -> spaces.MultiDiscrete:
        """The action space of ``agent`` (the same object for every agent)."""
        return self._action_space

    @with_torch_threads
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode; ``options={"config": ...}`` may change the configuration.

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
            new = make_urllc_config(None, options["config"], base=self.config)
            old, now = self.config.system, new.system
            for name in ("num_pairs", "num_resource_blocks", "power_levels_dbm"):
                if getattr(old, name) != getattr(now, name):
                    raise ValueError(
                        f"reset(options={{'config': ...}}) cannot change {name} "
                        f"({getattr(old, name)!r} -> {getattr(now, name)!r}): the spaces are "
                        "fixed; build a new environment instead"
                    )
            self.config = new
            self.game = VehicularGame(new)
        if seed is not None or self._np_random is None:
            self._np_random = np.random.default_rng(seed)
        self.game.reset(self._np_random)
        self.agents = list(self.possible_agents)
        infos: dict[str, dict[str, Any]] = {agent: {} for agent in self.agents}
        observations = self._observations()
        if self.render_mode == "human":
            self.render()
        return observations, infos

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
        """Play one slot with the agents' actions (missing agents stay silent)."""
        levels, blocks = self.decode_actions(actions)
        assert self._np_random is not None
        rewards, terms = self.game.play(levels, blocks, self._np_random)
        truncate = self.game.slot >= self.config.max_steps
        observations = self._observations()
        names = self.agents
        reward_dict = dict(zip(names, rewards.tolist(), strict=True))
        terminations = dict.fromkeys(names, False)
        truncations = dict.fromkeys(names, truncate)
        rows = np.stack([terms[t] for t in REWARD_TERMS], axis=1).tolist()
        infos = {
            name: {"reward_terms": dict(zip(REWARD_TERMS, row, strict=True))}
            for name, row in zip(names, rows, strict=True)
        }
        if truncate:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, reward_dict, terminations, truncations, infos

    def decode_actions(self, actions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Validated per-pair ``(levels (K,), blocks (K,))`` of an actions dict."""
        if self._np_random is None:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise ValueError("step() called after the episode ended; call reset() first")
        if not isinstance(actions, Mapping):
            raise TypeError(
                f"actions must be a dict from agent name to action, got {type(actions).__name__}"
            )
        return self.codec.decode_agents(actions)

    def _observations(self) -> dict[str, np.ndarray]:
        devices = self.game.device_matrix()
        server = self.game.server_vector()
        obs = np.concatenate([devices, np.broadcast_to(server, (devices.shape[0], server.size))], 1)
        return dict(zip(self.agents, obs, strict=True))

    def state(self) -> np.ndarray:
        """Every agent's device row, flattened in agent order, then the server vector."""
        return np.concatenate([self.game.device_matrix().ravel(), self.game.server_vector()])

    def render(self) -> np.ndarray | None:
        """The road map as an ``(H, W, 3)`` uint8 image (``render_mode="rgb_array"``; ``"human"``
        shows it in a matplotlib window instead and returns ``None``), drawn by
        :func:`~fl_gym.envs.vehicular.rendering.render_road_map` as for the Gymnasium env.

        Warns (and returns ``None``) when the environment was built without a render mode.

        Raises:
            RuntimeError: If the environment has not been reset.
        """
        # The game exists from __init__, but is unplayed until reset.
        if not ready_to_render(self.render_mode, self._np_random is not None):
            return None
        from fl_gym.envs.vehicular.rendering import render_road_map

        return self._window.deliver(render_road_map(self), self.render_mode)

    def close(self) -> None:
        """Close the human-mode window, if any."""
        self._window.close()
