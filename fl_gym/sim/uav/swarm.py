"""Swarm dynamics of massive-UAV path control, vectorised over UAVs.

The model follows Shiri, Park and Bennis, "Communication-Efficient Massive UAV Online Path Control:
Federated Learning Meets Mean-Field Game Theory" (IEEE Trans. Commun. 2020) and its Globecom 2019
precursor: N UAVs fly in a plane from a source region to a destination region; each one controls
its acceleration and is pushed around by wind. In state-space form, per UAV,

    ``dx = v dt``,  ``dv = u dt + sigma dW``,

with position ``x`` (m), velocity ``v`` (m/s), acceleration ``u`` (m/s^2, each axis bounded by
``max_accel_mps2``) and a two-dimensional Brownian motion ``W`` (the wind). The acceleration is
held constant over a step of ``time_step_s`` and the linear SDE is integrated exactly: with no
wind, positions follow ``x + v t + u t^2 / 2`` to rounding; with wind, the velocity increment
``sigma W(dt)`` and the position increment ``sigma int_0^dt W(s) ds`` are drawn jointly from their
exact Gaussian law. After each step a UAV's speed is capped at ``max_speed_mps`` (its position over
the step is that of the uncapped motion).

Each step reports, per UAV that was flying:

- the motion energy ``|u|^2 dt`` (m^2/s^3), the control cost of the paper;
- the distance flown (m) and the progress towards the destination centre (m);
- the number of other UAVs closer than ``collision_distance_m`` (collisions are found with a
  k-d tree, :func:`collision_pairs`, never by comparing all pairs);
- the flocking (velocity-alignment) misfit ``|v - v_bar|^2 dt`` ((m/s)^2 s), ``v_bar`` being the
  mean velocity of the other UAVs in the window of density cells around it (a Cucker-Smale-like
  alignment on the mean field rather than on individual neighbours).

The mean field seen by a UAV is a histogram: the plane is cut into square cells of
``density_cell_m``, and a UAV sees the number of other UAVs in each cell of the
``density_window_cells x density_window_cells`` window centred on its own cell
(:meth:`UAVSwarm.local_density`). A compact swarm is binned on a dense grid over its bounding
box; a swarm spread far apart has its occupied cells hashed (sorted integer keys) instead, so
the cost stays ``O(N log N)`` whatever the extent of the swarm.

A UAV that comes within ``destination_radius_m`` of the destination centre has arrived: it stops
taking part (no motion, no collisions, no density). All randomness comes from the
:class:`numpy.random.Generator` passed to :meth:`UAVSwarm.reset` and :meth:`UAVSwarm.step`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.spatial import cKDTree

from fl_gym.sim.config import (
    MAX_UAVS,
    Range,
    check_memory,
    check_point,
    check_ranges,
    resolve_config,
)

__all__ = [
    "UAV_PRESETS",
    "SwarmStep",
    "UAVSwarm",
    "UAVSwarmConfig",
    "brute_force_pairs",
    "collision_pairs",
    "make_uav_config",
]

# The k-d tree is asked for pairs a hair further apart than the threshold and the exact
# predicate decides; its own distance rounding can then never drop a pair at the edge.
_TREE_RADIUS_SLACK = 1e-6
# The density window reads a dense grid over the swarm's bounding box when that grid is small
# (fast direct indexing); a swarm spread far apart hashes its occupied cells instead.
_DENSE_GRID_CELLS_PER_UAV = 16
_DENSE_GRID_MIN_CELLS = 65_536
_MAX_COORDINATE_M = 1e6
# Memory estimates: float64 lattice coordinates and their temporaries per site; the windows'
# indices and counts per UAV and window cell.
_LATTICE_BYTES_PER_SITE = 64
_BYTES_PER_UAV_WINDOW_CELL = 32


@dataclass(frozen=True)
class UAVSwarmConfig:
    """Scenario and physics of a UAV swarm (the reward weights are the environment's:
    :class:`fl_gym.envs.uav.env.UAVSwarmEnvConfig`).

    Attributes:
        num_uavs: Number of UAVs N. In [1, 100000].
        time_step_s: Duration of one control step. In [0.0001, 10].
        max_steps: Steps before the episode is truncated. In [1, 1000000].
        max_accel_mps2: Bound on each axis of the acceleration (an action of +-1). In [0.001, 100].
        max_speed_mps: Speed cap applied after each step. In [0.001, 1e+06].
        wind_std_mps_per_sqrt_s: Wind intensity ``sigma`` of ``dv = u dt + sigma dW``; the wind
            changes a velocity by ``sigma sqrt(dt)`` m/s per axis (standard deviation) in a step.
            In [0, 100].
        source_center_m: Centre of the source disc where the UAVs start.
        source_radius_m: Radius of the source disc. In (0, 100000].
        initial_spacing_m: UAVs start at rest on distinct sites of a square lattice of this
            spacing inside the source disc, each moved by up to a quarter spacing per axis, so
            that no two start closer than half the spacing. In [0.001, 10000].
        destination_center_m: Centre of the destination disc.
        destination_radius_m: A UAV within this distance of the destination centre has arrived.
            In (0, 100000].
        collision_distance_m: Two UAVs strictly closer than this collide (d_min). In (0, 1000].
        density_cell_m: Side of a cell of the density histogram (the mean field). In [0.01, 10000].
        density_window_cells: Side, in cells, of the odd square window of density cells a UAV
            observes around its own cell. In [1, 101].
    """

    num_uavs: int = 100
    time_step_s: float = 0.1
    max_steps: int = 400
    max_accel_mps2: float = 4.0
    max_speed_mps: float = 10.0
    wind_std_mps_per_sqrt_s: float = 0.5
    source_center_m: tuple[float, float] = (0.0, 0.0)
    source_radius_m: float = 15.0
    initial_spacing_m: float = 2.0
    destination_center_m: tuple[float, float] = (120.0, 0.0)
    destination_radius_m: float = 8.0
    collision_distance_m: float = 1.0
    density_cell_m: float = 4.0
    density_window_cells: int = 3

    RANGES: ClassVar[Mapping[str, Range]] = {
        "num_uavs": Range(1, MAX_UAVS, integer=True),
        "time_step_s": Range(1e-4, 10.0),
        "max_steps": Range(1, 1_000_000, integer=True),
        "max_accel_mps2": Range(1e-3, 100.0),
        "max_speed_mps": Range(1e-3, 1e6),
        "wind_std_mps_per_sqrt_s": Range(0.0, 100.0),
        "source_radius_m": Range(0.0, 1e5, low_open=True),
        "initial_spacing_m": Range(1e-3, 1e4),
        "destination_radius_m": Range(0.0, 1e5, low_open=True),
        "collision_distance_m": Range(0.0, 1e3, low_open=True),
        "density_cell_m": Range(1e-2, 1e4),
        "density_window_cells": Range(1, 101, integer=True),
    }
    """Documented plausible range of every numeric field (stated in its description); the
    centres' coordinates lie in [-1e6, 1e6] m."""

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        for name in ("source_center_m", "destination_center_m"):
            point = check_point(name, getattr(self, name))
            if max(abs(point[0]), abs(point[1])) > _MAX_COORDINATE_M:
                raise ValueError(
                    f"{name} must be two numbers in [-{_MAX_COORDINATE_M:g}, "
                    f"{_MAX_COORDINATE_M:g}] m, got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, point)
        # The source lattice is enumerated below: refuse a disc of absurdly many sites first.
        side = 2 * math.floor(self.source_radius_m / self.initial_spacing_m) + 1
        check_memory(
            "source_radius_m / initial_spacing_m",
            (self.source_radius_m, self.initial_spacing_m),
            _LATTICE_BYTES_PER_SITE * side**2,
            "enumerating the source disc's lattice sites",
        )
        check_memory(
            "num_uavs x density_window_cells**2",
            (self.num_uavs, self.density_window_cells),
            _BYTES_PER_UAV_WINDOW_CELL * self.num_uavs * self.density_window_cells**2,
            "the UAVs' density windows",
        )
        if self.density_window_cells % 2 == 0:
            raise ValueError(
                "density_window_cells must be an odd integer >= 1 (the window is centred on the "
                f"UAV's cell), got {self.density_window_cells!r}"
            )
        sites = len(_lattice_sites(self.source_radius_m, self.initial_spacing_m))
        if sites < self.num_uavs:
            needed_m = self.initial_spacing_m * math.sqrt(self.num_uavs / math.pi)
            raise ValueError(
                f"source_radius_m={self.source_radius_m!r} with initial_spacing_m="
                f"{self.initial_spacing_m!r} holds {sites} lattice sites, fewer than num_uavs="
                f"{self.num_uavs}; allowed: a source disc whose lattice has >= num_uavs sites "
                f"(radius >= about {needed_m:.1f} m here)"
            )
        if self.source_to_destination_m <= 0:
            raise ValueError(
                f"destination_center_m={self.destination_center_m!r} must differ from "
                f"source_center_m={self.source_center_m!r}"
            )

    @property
    def source_to_destination_m(self) -> float:
        """Distance between the centres of the source and destination discs."""
        dx = self.destination_center_m[0] - self.source_center_m[0]
        dy = self.destination_center_m[1] - self.source_center_m[1]
        return math.hypot(dx, dy)

    @property
    def window_size(self) -> int:
        """Number of density cells a UAV observes (``density_window_cells ** 2``)."""
        return self.density_window_cells**2

    @property
    def lattice_cell_count(self) -> float:
        """UAVs per density cell at the packing of the initial lattice (density normaliser)."""
        return (self.density_cell_m / self.initial_spacing_m) ** 2


UAV_FAMILY = "uav_swarm_v0"
"""How errors name this environment."""

UAV_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "swarm-1k": {
        "num_uavs": 1_000,
        "source_radius_m": 45.0,
        "destination_center_m": (300.0, 0.0),
        "destination_radius_m": 25.0,
        "max_steps": 700,
    },
    "swarm-10k": {
        "num_uavs": 10_000,
        "source_radius_m": 135.0,
        "destination_center_m": (900.0, 0.0),
        "destination_radius_m": 80.0,
        "max_steps": 1_500,
    },
}
"""Named scenarios: 100 UAVs (``default``), 1,000 and 10,000 UAVs. The larger swarms keep the
initial lattice density and put the destination further away in proportion."""


def make_uav_config(
    preset: str | None = None,
    overrides: UAVSwarmConfig | Mapping[str, Any] | None = None,
) -> UAVSwarmConfig:
    """Build a configuration from a named preset and overrides.

    Args:
        preset: A key of :data:`UAV_PRESETS`, or ``None`` for ``"default"`` (no changes).
        overrides: A :class:`UAVSwarmConfig` (used as is; beside a preset it is an error), a
            mapping of field
            names to values applied on top of the preset, or ``None``.

    Returns:
        The validated configuration.

    Raises:
        ValueError: If the preset or a field name is unknown, or a value is invalid.
        TypeError: If ``overrides`` is neither a config, a mapping nor ``None``.
    """
    return resolve_config(
        UAVSwarmConfig(), preset, overrides, presets=UAV_PRESETS, family=UAV_FAMILY
    )


# -- spatial index ---------------------------------------------------------------------------


def collision_pairs(positions_m: np.ndarray, distance_m: float) -> np.ndarray:
    """Pairs of points strictly closer than ``distance_m``, found with a k-d tree.

    A pair ``(i, j)`` with ``i < j`` is returned exactly when
    ``(x_i - x_j)^2 + (y_i - y_j)^2 < distance_m^2`` in float64 (points exactly ``distance_m``
    apart do not collide). The tree proposes the pairs within a slightly larger radius and this
    predicate decides, so the answer equals :func:`brute_force_pairs` bit for bit.

    Args:
        positions_m: ``(n, 2)`` positions.
        distance_m: Collision distance, > 0.

    Returns:
        ``(p, 2)`` int64 array of index pairs, ``i < j``, sorted lexicographically.
    """
    pos = np.asarray(positions_m, dtype=np.float64)
    if pos.shape[0] < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tree = cKDTree(pos)
    radius = float(distance_m) * (1.0 + _TREE_RADIUS_SLACK)
    cand = tree.query_pairs(radius, output_type="ndarray").astype(np.int64, copy=False)
    if cand.shape[0] == 0:
        return cand.reshape(0, 2)
    diff = pos[cand[:, 0]] - pos[cand[:, 1]]
    close = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] < float(distance_m) ** 2
    pairs = cand[close]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order]


def brute_force_pairs(positions_m: np.ndarray, distance_m: float) -> np.ndarray:
    """Reference for :func:`collision_pairs`: all pairs compared, ``O(n^2)`` memory; tests only."""
    pos = np.asarray(positions_m, dtype=np.float64)
    i, j = np.triu_indices(pos.shape[0], k=1)
    diff = pos[i] - pos[j]
    close = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] < float(distance_m) ** 2
    return np.stack([i[close], j[close]], axis=1).astype(np.int64)


def _lattice_sites(radius_m: float, spacing_m: float) -> np.ndarray:
    """Sites of the square lattice of ``spacing_m`` (centred on 0) that lie in the disc, less
    a quarter spacing from its edge so that the jittered start stays inside."""
    reach = radius_m - 0.25 * spacing_m * math.sqrt(2.0)
    if reach < 0:
        return np.zeros((0, 2))
    half = math.floor(reach / spacing_m)
    ticks = np.arange(-half, half + 1) * spacing_m
    gx, gy = np.meshgrid(ticks, ticks, indexing="ij")
    sites = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return sites[np.hypot(sites[:, 0], sites[:, 1]) <= reach]


# -- the swarm -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SwarmStep:
    """What one step did to the UAVs that were flying at its start (``flying`` order).

    Attributes:
        flying: ``(n,)`` indices of the UAVs that were flying at the start of the step.
        energy_m2_s3: ``(n,)`` motion energy ``|u|^2 dt``.
        distance_m: ``(n,)`` distance flown (straight line over the step).
        progress_m: ``(n,)`` decrease of the distance to the destination centre.
        collisions: ``(n,)`` number of other UAVs strictly closer than ``collision_distance_m``
            after the move.
        flocking_m2_s: ``(n,)`` velocity-alignment misfit ``|v - v_bar|^2 dt``.
        density: ``(n, density_window_cells ** 2)`` counts of the other UAVs of ``flying`` in
            each cell of the UAV's window after the move (see :meth:`UAVSwarm.local_density`).
        arrived: ``(n,)`` bool, reached the destination in this step.
        num_collision_pairs: Number of colliding pairs after the move.
    """

    flying: np.ndarray
    energy_m2_s3: np.ndarray
    distance_m: np.ndarray
    progress_m: np.ndarray
    collisions: np.ndarray
    flocking_m2_s: np.ndarray
    density: np.ndarray
    arrived: np.ndarray
    num_collision_pairs: int


class UAVSwarm:
    """N UAVs between a source and a destination: state, dynamics and per-step costs.

    Args:
        config: The swarm configuration.

    Attributes:
        positions_m: ``(N, 2)`` positions (arrived UAVs keep their arrival position).
        velocities_mps: ``(N, 2)`` velocities (zero once arrived).
        flying: ``(N,)`` bool, not yet arrived.
        steps: Steps taken since the last reset.
    """

    def __init__(self, config: UAVSwarmConfig) -> None:
        if not isinstance(config, UAVSwarmConfig):
            raise TypeError(f"config must be a UAVSwarmConfig, got {type(config).__name__}")
        self.config = config
        n = config.num_uavs
        self.positions_m = np.zeros((n, 2))
        self.velocities_mps = np.zeros((n, 2))
        self.flying = np.ones(n, dtype=bool)
        self.steps = 0
        self._destination = np.asarray(config.destination_center_m, dtype=np.float64)
        self._sites = _lattice_sites(config.source_radius_m, config.initial_spacing_m)

    @property
    def time_s(self) -> float:
        """Time since the last reset."""
        return self.steps * self.config.time_step_s

    def reset(self, rng: np.random.Generator) -> None:
        """Put the UAVs at rest on random jittered lattice sites of the source disc.

        Args:
            rng: The generator every draw comes from.
        """
        cfg = self.config
        chosen = rng.choice(self._sites.shape[0], size=cfg.num_uavs, replace=False)
        jitter = rng.uniform(-0.25, 0.25, size=(cfg.num_uavs, 2)) * cfg.initial_spacing_m
        self.positions_m = self._sites[chosen] + jitter + np.asarray(cfg.source_center_m)
        self.velocities_mps = np.zeros((cfg.num_uavs, 2))
        self.flying = np.ones(cfg.num_uavs, dtype=bool)
        self.steps = 0

    def distance_to_destination_m(self, index: np.ndarray | None = None) -> np.ndarray:
        """Distance from the UAVs (all, or ``index``) to the destination centre."""
        pos = self.positions_m if index is None else self.positions_m[index]
        diff = pos - self._destination
        return np.sqrt(diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1])

    def step(self, accel_mps2: np.ndarray, rng: np.random.Generator) -> SwarmStep:
        """Advance every flying UAV by one time step.

        Args:
            accel_mps2: ``(N, 2)`` accelerations (rows of arrived UAVs are ignored); each axis is
                clipped to ``[-max_accel_mps2, max_accel_mps2]``.
            rng: The generator the wind is drawn from (nothing is drawn when it is zero).

        Returns:
            The step's report over the UAVs flying at its start.
        """
        cfg = self.config
        dt = cfg.time_step_s
        idx = np.flatnonzero(self.flying)
        accel = np.asarray(accel_mps2, dtype=np.float64)
        if accel.shape != (cfg.num_uavs, 2):
            raise ValueError(
                f"accel_mps2 must have shape (num_uavs, 2) = ({cfg.num_uavs}, 2), got {accel.shape}"
            )
        u = np.clip(accel[idx], -cfg.max_accel_mps2, cfg.max_accel_mps2)
        x = self.positions_m[idx]
        v = self.velocities_mps[idx]
        x_new = x + v * dt + (0.5 * dt * dt) * u
        v_new = v + u * dt
        if cfg.wind_std_mps_per_sqrt_s > 0:
            # Exact joint law of (W(dt), int_0^dt W ds) for a standard Brownian motion.
            xi = rng.standard_normal((2, idx.size, 2))
            sigma = cfg.wind_std_mps_per_sqrt_s
            v_new += (sigma * math.sqrt(dt)) * xi[0]
            x_new += (sigma * dt**1.5) * (0.5 * xi[0] + (0.5 / math.sqrt(3.0)) * xi[1])
        speed2 = v_new[:, 0] * v_new[:, 0] + v_new[:, 1] * v_new[:, 1]
        too_fast = speed2 > cfg.max_speed_mps**2
        if too_fast.any():
            v_new[too_fast] *= (cfg.max_speed_mps / np.sqrt(speed2[too_fast]))[:, None]

        before = self.distance_to_destination_m(idx)
        step_vec = x_new - x
        self.positions_m[idx] = x_new
        self.velocities_mps[idx] = v_new
        after = self.distance_to_destination_m(idx)

        pairs = collision_pairs(x_new, cfg.collision_distance_m)
        collisions = np.bincount(pairs.ravel(), minlength=idx.size)
        counts, mean_vel, others = self._window_stats(idx)
        misfit = v_new - mean_vel
        flock = np.where(
            others > 0, (misfit[:, 0] * misfit[:, 0] + misfit[:, 1] * misfit[:, 1]) * dt, 0.0
        )
        arrived = after <= cfg.destination_radius_m
        self.flying[idx[arrived]] = False
        self.velocities_mps[idx[arrived]] = 0.0
        self.steps += 1
        return SwarmStep(
            flying=idx,
            energy_m2_s3=(u[:, 0] * u[:, 0] + u[:, 1] * u[:, 1]) * dt,
            distance_m=np.sqrt(step_vec[:, 0] ** 2 + step_vec[:, 1] ** 2),
            progress_m=before - after,
            collisions=collisions,
            flocking_m2_s=flock,
            density=counts,
            arrived=arrived,
            num_collision_pairs=int(pairs.shape[0]),
        )

    # -- the mean field ------------------------------------------------------------------------

    def _window_stats(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Counts of other UAVs per window cell, their mean velocity and their total number.

        Args:
            idx: Indices of the UAVs that make up the field (and whose windows are returned).

        Returns:
            ``(n, W)`` counts of other UAVs per window cell (row-major, x major), ``(n, 2)`` mean
            velocity of the other UAVs in the window (zero where there are none), ``(n,)`` number
            of other UAVs in the window.
        """
        cfg = self.config
        n = idx.size
        w = cfg.density_window_cells
        if n == 0:
            return np.zeros((0, w * w)), np.zeros((0, 2)), np.zeros(0)
        cells = np.floor(self.positions_m[idx] / cfg.density_cell_m).astype(np.int64)
        # Keys leave room for the window's offsets on both sides of every occupied cell.
        low = cells.min(axis=0) - w
        span_x = int(cells[:, 0].max() - low[0]) + w + 1
        span_y = int(cells[:, 1].max() - low[1]) + w + 1
        key = (cells[:, 0] - low[0]) * span_y + (cells[:, 1] - low[1])
        vel = self.velocities_mps[idx]
        half = w // 2
        offsets = [
            ox * span_y + oy for ox in range(-half, half + 1) for oy in range(-half, half + 1)
        ]
        counts = np.empty((n, w * w))
        win_vx = np.zeros(n)
        win_vy = np.zeros(n)
        if span_x * span_y <= _DENSE_GRID_CELLS_PER_UAV * n + _DENSE_GRID_MIN_CELLS:
            # Compact swarm: a dense grid over its bounding box, read by direct indexing.
            size = span_x * span_y
            count = np.bincount(key, minlength=size).astype(np.float64)
            vsum_x = np.bincount(key, weights=vel[:, 0], minlength=size)
            vsum_y = np.bincount(key, weights=vel[:, 1], minlength=size)
            for col, offset in enumerate(offsets):
                probe = key + offset
                counts[:, col] = count[probe]
                win_vx += vsum_x[probe]
                win_vy += vsum_y[probe]
        else:
            # Spread-out swarm (a straggler far away): hash the occupied cells only.
            uniq, inverse = np.unique(key, return_inverse=True)
            count = np.bincount(inverse, minlength=uniq.size).astype(np.float64)
            vsum_x = np.bincount(inverse, weights=vel[:, 0], minlength=uniq.size)
            vsum_y = np.bincount(inverse, weights=vel[:, 1], minlength=uniq.size)
            for col, offset in enumerate(offsets):
                probe = key + offset
                pos = np.minimum(np.searchsorted(uniq, probe), uniq.size - 1)
                hit = uniq[pos] == probe
                counts[:, col] = np.where(hit, count[pos], 0.0)
                win_vx += np.where(hit, vsum_x[pos], 0.0)
                win_vy += np.where(hit, vsum_y[pos], 0.0)
        counts[:, (w * w) // 2] -= 1.0  # the UAV itself
        others = counts.sum(axis=1)
        safe = np.maximum(others, 1.0)
        mean_vel = np.stack([(win_vx - vel[:, 0]) / safe, (win_vy - vel[:, 1]) / safe], axis=1)
        mean_vel[others == 0] = 0.0
        return counts, mean_vel, others

    def local_density(self) -> np.ndarray:
        """Counts of other flying UAVs in each cell of every flying UAV's window.

        Returns:
            ``(n_flying, density_window_cells ** 2)`` counts, row-major with the x offset major,
            in the order of ``np.flatnonzero(flying)``.
        """
        return self._window_stats(np.flatnonzero(self.flying))[0]
