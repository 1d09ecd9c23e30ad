"""Controllers of the UAV swarm (``uav_swarm_v0``) and an episode runner that measures them.

One controller object drives every UAV. It reads the agents' observations (the documented layout
of :class:`~fl_gym.envs.uav_swarm_v0.UAVSwarmEnv`) and returns their actions with
Stable-Baselines3's calling convention, :meth:`SwarmController.predict` (the dict of the live
agents' observations in, the dict of their actions out), or as arrays,
:meth:`SwarmController.act_batch` (rows of observations with the UAVs' indices), which is what
:meth:`predict` calls. Each controller counts
the bits its UAVs must exchange (:attr:`SwarmController.bits_exchanged`, reset every episode):

- :class:`StraightLineController` (``"straight-line"``): a PD law that tracks a cruise velocity
  pointing at the destination. No coordination, no communication.
- :class:`FullInformationController` (``"hjb-full-info"``): the straight line plus repulsion from
  every neighbour within ``repulsion_radius_m``, computed from the instantaneous positions of all
  UAVs, the plain (non mean-field) HJB comparison of Shiri, Park and Bennis (2020): every UAV
  needs every other UAV's position at every step, ``n (n - 1) 64`` bits per step (two float32
  coordinates sent to each of the ``n - 1`` others).
- :class:`MeanFieldController`: the straight line plus the correction of a per-UAV HJB network
  steered by a per-UAV FPK (density) network, both trained online
  (:class:`fl_gym.baselines.mean_field.MeanFieldLearner`). With ``training="pde"`` (the paper's
  method) the HJB network is a value function trained on its HJB residual, with a collision
  term from the FPK density in the running cost, the FPK network is trained on its FPK residual,
  and the UAV flies the deviation that minimises the Hamiltonian; the default
  ``training="lookahead"`` trains the correction on a one-second look-ahead of the predicted
  density instead (it collides less here). Every ``average_every_steps`` the flying UAVs
  federated-average both networks (``"mfgfl-hf"``), the HJB network only (``"mfgfl-h"``),
  the FPK network only (``"mfgfl-f"``) or nothing (``"mfg-local"``). The PDE networks measure
  positions in a frame chosen by ``frame``: each UAV's own (``"uav"``, the default), or one
  shared by all UAVs, moving with the swarm along the nominal path (``"swarm"``,
  :func:`reference_path`) or fixed at the source (``"global"``); only in a shared frame do the
  UAVs' networks approximate the same functions, so that averaging them keeps their steering.
  Each averaging round costs ``2 * 32 * P * n`` bits (upload and download of P float32 weights
  by n UAVs). The density the networks learn from is sensed locally (the observation's window
  counts), not communicated.

:func:`run_episode` plays one episode and returns :class:`EpisodeMetrics` (travel distance,
collision probability, motion energy, communication).
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.spatial import cKDTree

from fl_gym.baselines.mean_field import MeanFieldConfig, MeanFieldLearner, PDEScales
from fl_gym.envs.rollout import SwarmEpisode, rollout
from fl_gym.envs.uav.env import UAVSwarmEnvConfig
from fl_gym.envs.uav_swarm_v0 import UAVSwarmEnv
from fl_gym.sim.threads import DEFAULT_NUM_THREADS, with_torch_threads
from fl_gym.sim.uav.swarm import UAVSwarmConfig

__all__ = [
    "CONTROLLERS",
    "CONTROLLER_ALIASES",
    "EpisodeMetrics",
    "FullInformationController",
    "MeanFieldController",
    "StraightLineController",
    "SwarmController",
    "controller_options",
    "make_controller",
    "reference_path",
    "run_episode",
]

POSITION_BITS = 64
"""Two float32 coordinates."""


class SwarmController(abc.ABC):
    """A policy that controls every UAV of a swarm.

    Args:
        config: The swarm's configuration (to read observations in physical units), or the
            environment's ``env.config`` (its ``swarm`` part is read).
        cruise_speed_mps: Speed of the nominal straight-line motion.
        speed_gain_per_s: Gain of the velocity-tracking PD law.

    Attributes:
        name: Short identifier used in tables.
        bits_exchanged: Bits exchanged between UAVs (or with a server) in this episode.
        steps: Steps acted in this episode.
    """

    name: ClassVar[str] = "controller"
    family: ClassVar[str] = "uav"
    """The environment family the controller plays (see :func:`fl_gym.envs.rollout.env_family`)."""
    num_threads: int | None = DEFAULT_NUM_THREADS
    """torch intra-op threads inside :meth:`reset` and :meth:`act_batch` (see
    :mod:`fl_gym.sim.threads`); set it on an instance to change it."""

    def __init__(
        self,
        config: UAVSwarmConfig | UAVSwarmEnvConfig,
        cruise_speed_mps: float = 8.0,
        speed_gain_per_s: float = 2.0,
    ) -> None:
        if isinstance(config, UAVSwarmEnvConfig):  # the environment's: its swarm part
            config = config.swarm
        if not 0 < cruise_speed_mps <= config.max_speed_mps:
            raise ValueError(
                f"cruise_speed_mps must be in (0, max_speed_mps={config.max_speed_mps}], "
                f"got {cruise_speed_mps!r}"
            )
        if speed_gain_per_s <= 0:
            raise ValueError(f"speed_gain_per_s must be > 0, got {speed_gain_per_s!r}")
        self.config = config
        self.cruise_speed_mps = float(cruise_speed_mps)
        self.speed_gain_per_s = float(speed_gain_per_s)
        self._index = {f"uav_{i}": i for i in range(config.num_uavs)}
        self.bits_exchanged = 0
        self.steps = 0

    @with_torch_threads
    def reset(self, seed: int | None = None) -> None:
        """Start an episode: clear the communication count (and learned state, if any)."""
        self.bits_exchanged = 0
        self.steps = 0

    def predict(
        self,
        observation: Mapping[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[dict[str, np.ndarray], Any]:
        """Actions of all observed agents, with Stable-Baselines3's calling convention.

        Args:
            observation: Agent name -> observation of the live agents, as returned by the
                environment.
            state: Returned unchanged (the controller keeps its own episode state, cleared by
                :meth:`reset`).
            episode_start: Ignored: a controller's episode starts with :meth:`reset`, which the
                rollout loop calls with the episode's seed.
            deterministic: Ignored (the controllers are deterministic given their seed).

        Returns:
            Agent name -> float32 action in ``[-1, 1]^2``, and ``state``.
        """
        names = list(observation)
        if not names:
            return {}, state
        obs = np.stack([observation[name] for name in names])
        index = np.fromiter((self._index[name] for name in names), dtype=np.int64, count=len(names))
        return dict(zip(names, self.act_batch(obs, index), strict=True)), state

    @with_torch_threads
    def act_batch(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        """Actions ``(n, 2)`` (float32 in ``[-1, 1]``) for observations ``(n, D)`` of UAVs
        ``uav_index`` (their positions in ``possible_agents``)."""
        self.steps += 1
        return np.clip(self._accel_fraction(obs, uav_index), -1.0, 1.0).astype(np.float32)

    @abc.abstractmethod
    def _accel_fraction(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        """Acceleration as a fraction of ``max_accel_mps2`` (clipped afterwards)."""

    # -- reading observations ------------------------------------------------------------------

    def positions_m(self, obs: np.ndarray) -> np.ndarray:
        """Positions ``(n, 2)`` from observations."""
        cfg = self.config
        return obs[:, 0:2].astype(np.float64) * cfg.source_to_destination_m + np.asarray(
            cfg.source_center_m
        )

    def nominal_accel_mps2(self, obs: np.ndarray) -> np.ndarray:
        """The straight-line PD acceleration ``k (v_cruise * unit(goal) - v)``."""
        cfg = self.config
        goal = obs[:, 4:6].astype(np.float64) * cfg.source_to_destination_m
        vel = obs[:, 2:4].astype(np.float64) * cfg.max_speed_mps
        dist = np.maximum(np.linalg.norm(goal, axis=1, keepdims=True), 1e-9)
        desired = self.cruise_speed_mps * goal / dist
        return self.speed_gain_per_s * (desired - vel)


class StraightLineController(SwarmController):
    """Each UAV flies straight at the destination (PD on velocity); no coordination."""

    name: ClassVar[str] = "straight-line"

    def _accel_fraction(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        return self.nominal_accel_mps2(obs) / self.config.max_accel_mps2


class FullInformationController(SwarmController):
    """Straight line plus repulsion from every neighbour, from all UAVs' exact positions.

    The repulsion on UAV i from a neighbour j at distance ``d < R`` is
    ``gain (1/d - 1/R) (x_i - x_j) / d`` (m/s^2), summed over neighbours found with a k-d tree.

    Args:
        config: The swarm's configuration.
        repulsion_radius_m: Range ``R`` of the repulsion.
        repulsion_gain: ``gain`` in m^2/s^2.
        **kwargs: Passed to :class:`SwarmController`.
    """

    name: ClassVar[str] = "hjb-full-info"

    def __init__(
        self,
        config: UAVSwarmConfig,
        repulsion_radius_m: float = 3.0,
        repulsion_gain: float = 6.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.repulsion_radius_m = float(repulsion_radius_m)
        self.repulsion_gain = float(repulsion_gain)

    def _accel_fraction(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        n = obs.shape[0]
        self.bits_exchanged += n * (n - 1) * POSITION_BITS
        pos = self.positions_m(obs)
        accel = self.nominal_accel_mps2(obs)
        pairs = cKDTree(pos).query_pairs(self.repulsion_radius_m, output_type="ndarray")
        if pairs.shape[0]:
            diff = pos[pairs[:, 0]] - pos[pairs[:, 1]]
            dist = np.maximum(np.linalg.norm(diff, axis=1), 1e-3)
            scale = self.repulsion_gain * (1.0 / dist - 1.0 / self.repulsion_radius_m) / dist
            push = diff * scale[:, None]
            for axis in range(2):
                accel[:, axis] += np.bincount(pairs[:, 0], weights=push[:, axis], minlength=n)
                accel[:, axis] -= np.bincount(pairs[:, 1], weights=push[:, axis], minlength=n)
        return accel / self.config.max_accel_mps2


_MEAN_FIELD_NAMES = {"both": "mfgfl-hf", "hjb": "mfgfl-h", "fpk": "mfgfl-f", "none": "mfg-local"}


class MeanFieldController(SwarmController):
    """Straight line plus the correction of per-UAV HJB/FPK networks, federated-averaged.

    Args:
        config: The swarm's configuration.
        mean_field: Network, training and averaging settings (``averaging`` picks the variant).
        seed: Seed of the initial weights when :meth:`reset` is given none.
        **kwargs: Passed to :class:`SwarmController`.
    """

    name: ClassVar[str] = "mfgfl-hf"

    def __init__(
        self,
        config: UAVSwarmConfig,
        mean_field: MeanFieldConfig | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.mean_field = mean_field or MeanFieldConfig()
        self.name = _MEAN_FIELD_NAMES[self.mean_field.averaging]  # type: ignore[misc]
        self.seed = seed
        half = self.config.density_window_cells // 2
        shifts = np.arange(-half, half + 1)
        gx, gy = np.meshgrid(shifts, shifts, indexing="ij")
        self._window_offsets = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)
        self.learner: MeanFieldLearner | None = None
        self.reset()

    @with_torch_threads
    def reset(self, seed: int | None = None) -> None:
        """Start an episode with fresh networks (all UAVs start from one shared initial model)."""
        super().reset(seed)
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        num_features = 5 + self.config.window_size  # velocity, goal, density window, time
        self.learner = MeanFieldLearner(
            self.config.num_uavs, num_features, self.mean_field, generator
        )
        # Collocation points are drawn from their own stream, seeded from the same seed.
        self._collocation_rng = torch.Generator().manual_seed(
            (self.seed if seed is None else seed) + 1_000_003
        )
        self._scales = PDEScales(
            length_m=self.mean_field.length_scale_m,
            speed_mps=self.config.max_speed_mps,
            time_s=1.0,
        )

    def _nominal_accel_torch(self, pos_m: torch.Tensor, vel_mps: torch.Tensor) -> torch.Tensor:
        """The straight-line PD law at arbitrary states ``(..., 2)``, as in
        :meth:`SwarmController.nominal_accel_mps2`."""
        goal = torch.tensor(self.config.destination_center_m, dtype=pos_m.dtype) - pos_m
        unit = goal / goal.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        return self.speed_gain_per_s * (self.cruise_speed_mps * unit - vel_mps)

    def _window_points(self, pos: np.ndarray, t_norm: np.ndarray) -> np.ndarray:
        """Normalised ``(x_1, x_2, t)`` of the centres of each UAV's sensed density cells."""
        cfg = self.config
        cells = np.floor(pos / cfg.density_cell_m)
        centres = (cells[:, None, :] + self._window_offsets[None] + 0.5) * cfg.density_cell_m
        points = np.empty((pos.shape[0], cfg.window_size, 3))
        points[:, :, 0:2] = (
            centres - np.asarray(cfg.source_center_m)
        ) / self.mean_field.length_scale_m
        points[:, :, 2] = t_norm[:, None]
        return points

    def _accel_fraction(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        if self.mean_field.training == "pde":
            delta = self._pde_deviation(obs, uav_index)
        else:
            delta = self._lookahead_correction(obs, uav_index)
        learner = self.learner
        assert learner is not None
        if self.steps % self.mean_field.average_every_steps == 0:
            rows = torch.from_numpy(np.asarray(uav_index, dtype=np.int64))
            self.bits_exchanged += learner.average(rows)
        return self.nominal_accel_mps2(obs) / self.config.max_accel_mps2 + delta

    def _frame_origin(
        self, pos_m: torch.Tensor, time_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Origin and velocity of the PDE networks' frame (``mean_field.frame``).

        Args:
            pos_m: Positions ``(n, 2)`` of the UAVs (the origins of the ``"uav"`` frames, which
                stay where the UAVs are at the step).
            time_s: Times since the start of the episode, ``(n,)`` or ``(n, S)``.

        Returns:
            Origins and frame velocities, each ``(*time_s.shape, 2)``.
        """
        cfg = self.config
        shape = (*time_s.shape, 2)
        rest = torch.zeros(shape, dtype=torch.float64)
        if self.mean_field.frame == "uav":
            return pos_m.reshape(pos_m.shape[0], *([1] * (time_s.dim() - 1)), 2).expand(shape), rest
        source = torch.tensor(cfg.source_center_m, dtype=torch.float64)
        if self.mean_field.frame == "global":
            return source.expand(shape), rest
        along, speed = reference_path(
            time_s, self.cruise_speed_mps, self.speed_gain_per_s, cfg.max_accel_mps2
        )
        goal = torch.tensor(cfg.destination_center_m, dtype=torch.float64) - source
        unit = goal / goal.norm()
        return source + along[..., None] * unit, speed[..., None] * unit

    def _pde_deviation(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        """Train both networks on their residuals along each UAV's predicted path, then return
        the HJB-optimal deviation at the UAV's state, as a fraction of ``max_accel_mps2``.

        Positions are measured from the origin of ``mean_field.frame`` (:meth:`_frame_origin`),
        time from the present step (which all UAVs share). With ``frame="uav"`` each UAV has its
        own frame, at rest where it is now: a shift of the origin leaves both PDEs unchanged,
        and a network then holds a quasi-stationary local field instead of one that moves at
        cruise speed through its inputs. With ``frame="swarm"`` the frame is shared and moves
        with the swarm (the residuals then transport at the velocity relative to the frame); with
        ``frame="global"`` it is shared and fixed at the source centre.
        """
        cfg, mf = self.config, self.mean_field
        learner = self.learner
        assert learner is not None
        scales = self._scales
        rows = torch.from_numpy(np.asarray(uav_index, dtype=np.int64))
        n, s = obs.shape[0], mf.collocation_points
        pos = torch.from_numpy(self.positions_m(obs))
        vel = torch.from_numpy(obs[:, 2:4].astype(np.float64) * cfg.max_speed_mps)
        # Elapsed time, from the observation (steps / max_steps); the same for every UAV.
        now_s = torch.from_numpy(obs[:, -1].astype(np.float64)) * (cfg.max_steps * cfg.time_step_s)
        gen = self._collocation_rng
        ahead_s = torch.rand(n, s, generator=gen, dtype=torch.float64) * mf.collocation_horizon_s
        c_vel = vel[:, None] + mf.collocation_speed_spread_mps * torch.randn(
            n, s, 2, generator=gen, dtype=torch.float64
        )
        c_pos = (
            pos[:, None]
            + vel[:, None] * ahead_s[..., None]
            + mf.collocation_spread_m * torch.randn(n, s, 2, generator=gen, dtype=torch.float64)
        )
        origin_now, _ = self._frame_origin(pos, now_s)
        origin, frame_vel = self._frame_origin(pos, now_s[:, None] + ahead_s)
        x_norm = (c_pos - origin) / scales.length_m
        t_norm = (ahead_s / scales.time_s)[..., None]
        fpk_points = torch.cat([x_norm, t_norm], dim=-1).float()
        hjb_points = torch.cat([x_norm, c_vel / scales.speed_mps, t_norm], dim=-1).float()
        # FPK: the sensed density now is the initial condition; the flow is the UAV's velocity
        # (the swarm around it moves with it), relative to the frame.
        cells = np.floor(pos.numpy() / cfg.density_cell_m)
        centres = (cells[:, None, :] + self._window_offsets[None] + 0.5) * cfg.density_cell_m
        data = torch.zeros(n, cfg.window_size, 3)
        data[..., 0:2] = torch.from_numpy(
            (centres - origin_now.numpy()[:, None, :]) / scales.length_m
        )
        target = torch.from_numpy(np.ascontiguousarray(obs[:, 6:-1]))
        flow = (vel[:, None] - frame_vel).float()
        # HJB: value of deviating from the nominal law, collision cost from the FPK density.
        max_corr = mf.max_correction * cfg.max_accel_mps2
        nominal = self._nominal_accel_torch(c_pos, c_vel).float()
        moving = None if mf.frame == "uav" else frame_vel.float()
        for _ in range(mf.pde_iterations):
            learner.train_fpk_pde(rows, data, target, fpk_points, flow, scales)
            learner.train_hjb_pde(
                rows, hjb_points, nominal, scales, max_corr, cfg.wind_std_mps_per_sqrt_s, moving
            )
        state = torch.zeros(n, 5)
        state[:, 0:2] = ((pos - origin_now) / scales.length_m).float()
        state[:, 2:4] = (vel / scales.speed_mps).float()
        delta = learner.optimal_deviation(rows, state, scales, max_corr)
        return delta.detach().numpy().astype(np.float64) / cfg.max_accel_mps2

    def _lookahead_correction(self, obs: np.ndarray, uav_index: np.ndarray) -> np.ndarray:
        """The look-ahead training (``training="lookahead"``) and its correction."""
        cfg = self.config
        learner = self.learner
        assert learner is not None
        scale = self.mean_field.length_scale_m
        rows = torch.from_numpy(np.asarray(uav_index, dtype=np.int64))
        pos = self.positions_m(obs)
        vel = obs[:, 2:4].astype(np.float64) * cfg.max_speed_mps
        t_norm = obs[:, -1].astype(np.float64)
        # FPK: fit the sensed density at the centres of the window's cells.
        points = self._window_points(pos, t_norm)
        target = obs[:, 6:-1]
        learner.train_fpk(
            rows, torch.from_numpy(points).float(), torch.from_numpy(np.ascontiguousarray(target))
        )
        # HJB: steer the look-ahead point away from predicted crowding.
        nominal = self.nominal_accel_mps2(obs)
        tau = self.mean_field.lookahead_s
        ahead = pos + vel * tau + 0.5 * nominal * tau * tau
        base = (ahead - np.asarray(cfg.source_center_m)) / scale
        features = torch.from_numpy(np.ascontiguousarray(obs[:, 2:]))
        time_ahead = t_norm + tau / (cfg.max_steps * cfg.time_step_s)
        learner.train_hjb(
            rows,
            features,
            torch.from_numpy(base).float(),
            cfg.max_accel_mps2 * tau * tau / (2.0 * scale),
            torch.from_numpy(time_ahead).float(),
        )
        with torch.no_grad():
            return learner.correction(rows, features).numpy().astype(np.float64)


def reference_path(
    time_s: torch.Tensor, cruise_speed_mps: float, speed_gain_per_s: float, max_accel_mps2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance and speed along a straight line of a UAV that starts at rest at ``t = 0`` and
    follows the nominal law ``dv/dt = k (v_cruise - v)`` with ``|dv/dt| <= a_max``.

    The acceleration is ``a_max`` until ``t_1 = max(0, (v_cruise - a_max / k) / a_max)``; then
    the speed closes the remaining gap ``g = min(v_cruise, a_max / k)`` exponentially,
    ``v = v_cruise - g exp(-k (t - t_1))``.

    Args:
        time_s: Times since the start (negative times count as 0).
        cruise_speed_mps: ``v_cruise``.
        speed_gain_per_s: ``k``.
        max_accel_mps2: ``a_max``.

    Returns:
        Distance travelled (m) and speed (m/s), each shaped like ``time_s``.
    """
    t = time_s.clamp_min(0.0)
    v_c, k, a = cruise_speed_mps, speed_gain_per_s, max_accel_mps2
    t1 = max(0.0, (v_c - a / k) / a)
    gap = v_c - a * t1
    tau = (t - t1).clamp_min(0.0)
    decay = torch.exp(-k * tau)
    ramp = t.clamp_max(t1)
    distance = 0.5 * a * ramp**2 + v_c * tau - gap * (1.0 - decay) / k
    speed = torch.where(t <= t1, a * t, v_c - gap * decay)
    return distance, speed


CONTROLLERS = ("straight-line", "hjb-full-info", "mfgfl-hf", "mfgfl-h", "mfgfl-f", "mfg-local")
"""Names accepted by :func:`make_controller` (and by :func:`fl_gym.baselines.make_policy`)."""

CONTROLLER_ALIASES = {name.replace("-", "_"): name for name in CONTROLLERS}
"""The former snake_case names, still accepted (with a ``DeprecationWarning``)."""


def _controller_class(name: str) -> type[SwarmController]:
    if name == "straight-line":
        return StraightLineController
    if name == "hjb-full-info":
        return FullInformationController
    if name in _MEAN_FIELD_NAMES.values():
        return MeanFieldController
    raise ValueError(f"unknown controller {name!r}; allowed: {list(CONTROLLERS)}")


def _init_options(cls: type[SwarmController]) -> dict[str, Any]:
    """The named parameters after ``config`` of ``cls.__init__`` and their defaults, following
    ``**kwargs`` up to the base classes' ``__init__`` they are passed to."""
    options: dict[str, Any] = {}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[2:]  # self, config
        for p in parameters:
            if p.kind in named:
                options.setdefault(p.name, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return options


def controller_options(name: str) -> dict[str, Any]:
    """The keyword options :func:`make_controller` accepts for a controller, and their defaults.

    They are the controller's constructor parameters (its class's and those its ``**kwargs``
    reach); for the mean-field controllers, ``mean_field`` is replaced by the fields of
    :class:`~fl_gym.baselines.mean_field.MeanFieldConfig`, given directly, except ``averaging``,
    which the name fixes.

    Args:
        name: One of :data:`CONTROLLERS` (or a former alias).

    Returns:
        ``{option: default}``, e.g. ``{"cruise_speed_mps": 8.0, "speed_gain_per_s": 2.0}`` for
        ``"straight-line"``.

    Raises:
        ValueError: If the name is unknown.
    """
    cls = _controller_class(CONTROLLER_ALIASES.get(name, name))
    options = _init_options(cls)
    if cls is MeanFieldController:
        del options["mean_field"]
        options.update(
            (f.name, f.default)
            for f in dataclasses.fields(MeanFieldConfig)
            if f.name != "averaging"
        )
    return options


def make_controller(
    name: str, config: UAVSwarmConfig | UAVSwarmEnvConfig, **kwargs: Any
) -> SwarmController:
    """Build a controller by name (one of :data:`CONTROLLERS`, or a former alias).

    Args:
        name: The controller's name.
        config: The swarm's configuration (or the environment's ``env.config``).
        **kwargs: Options of that controller (:func:`controller_options`; for the mean-field
            ones, ``mean_field`` fields such as ``average_every_steps`` are given directly).

    Raises:
        ValueError: If the name is unknown.
        TypeError: If an option is unknown.
    """
    if name in CONTROLLER_ALIASES:
        warnings.warn(
            f"controller name {name!r} is deprecated; use {CONTROLLER_ALIASES[name]!r}",
            DeprecationWarning,
            stacklevel=2,
        )
        name = CONTROLLER_ALIASES[name]
    options = controller_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(
            f"controller {name!r} has no option(s) {unknown}; allowed: {sorted(options)}"
        )
    cls = _controller_class(name)
    if cls is MeanFieldController:
        modes = {v: k for k, v in _MEAN_FIELD_NAMES.items()}
        mf_fields = {f.name for f in dataclasses.fields(MeanFieldConfig)}
        mf = {k: kwargs.pop(k) for k in list(kwargs) if k in mf_fields}
        return MeanFieldController(
            config, mean_field=MeanFieldConfig(**{**mf, "averaging": modes[name]}), **kwargs
        )
    return cls(config, **kwargs)


EpisodeMetrics = SwarmEpisode
"""What one episode of one controller cost (:class:`fl_gym.envs.rollout.SwarmEpisode`)."""


def run_episode(
    env: UAVSwarmEnv, controller: SwarmController, seed: int, frames: list | None = None
) -> SwarmEpisode:
    """Play one episode and measure it (:func:`fl_gym.envs.rollout.rollout` on the swarm).

    Args:
        env: The environment (its configuration must be the controller's).
        controller: The controller; it is reset with ``seed``.
        seed: Seed of the episode (environment and controller).
        frames: If given, ``env.render()`` frames are appended to it every step.

    Returns:
        The episode's metrics.
    """
    return rollout(env, controller, seed=seed, frames=frames, num_threads=None)
