"""Massive-UAV path control as a PettingZoo parallel environment (``uav_swarm_v0``).

``from fl_gym.envs import uav_swarm_v0; env = uav_swarm_v0.parallel_env()``. The module exposes
``parallel_env`` (the native parallel environment), ``env`` (the same turned into an AEC
environment, PettingZoo's convention) and ``raw_env`` (the class,
:class:`fl_gym.envs.uav.env.UAVSwarmEnv`); the version in its name is the environment's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pettingzoo import AECEnv
from pettingzoo.utils.conversions import parallel_to_aec

from fl_gym.envs.uav.env import (
    OBS_BOUND,
    REWARD_TERMS,
    UAVSwarmEnv,
    UAVSwarmEnvConfig,
    observation_features,
)
from fl_gym.sim.threads import DEFAULT_NUM_THREADS
from fl_gym.sim.uav.swarm import UAVSwarmConfig

__all__ = [
    "OBS_BOUND",
    "REWARD_TERMS",
    "UAVSwarmEnv",
    "UAVSwarmEnvConfig",
    "env",
    "observation_features",
    "parallel_env",
    "raw_env",
]


raw_env = UAVSwarmEnv
"""The environment class (PettingZoo's name for it)."""


def parallel_env(
    config: UAVSwarmEnvConfig | UAVSwarmConfig | Mapping[str, Any] | None = None,
    preset: str | None = None,
    render_mode: str | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    **unexpected: Any,
) -> UAVSwarmEnv:
    """Build the parallel environment; see :class:`UAVSwarmEnv` for the arguments."""
    return UAVSwarmEnv(
        config=config, preset=preset, render_mode=render_mode, num_threads=num_threads, **unexpected
    )


def env(
    config: UAVSwarmEnvConfig | UAVSwarmConfig | Mapping[str, Any] | None = None,
    preset: str | None = None,
    render_mode: str | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    **unexpected: Any,
) -> AECEnv:
    """The same environment turned into an AEC one (agents act in turn), PettingZoo's convention
    for ``env``; prefer :func:`parallel_env`, the native form."""
    return parallel_to_aec(
        parallel_env(
            config=config,
            preset=preset,
            render_mode=render_mode,
            num_threads=num_threads,
            **unexpected,
        )
    )
