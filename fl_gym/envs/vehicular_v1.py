"""PettingZoo environment ``vehicular_v1``: each V2V transmitter allocates for itself.

``parallel_env()`` is the native form; ``env()`` the AEC conversion; ``raw_env`` the class
(:class:`fl_gym.envs.vehicular.parallel.VehicularEnv`); the version in its name is the
environment's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pettingzoo import AECEnv
from pettingzoo.utils.conversions import parallel_to_aec

from fl_gym.envs.vehicular.env import VehicularURLLCConfig
from fl_gym.envs.vehicular.parallel import VehicularEnv
from fl_gym.sim.threads import DEFAULT_NUM_THREADS

__all__ = ["VehicularEnv", "env", "parallel_env", "raw_env"]


raw_env = VehicularEnv
"""The environment class (PettingZoo's name for it)."""


def parallel_env(
    config: VehicularURLLCConfig | Mapping[str, Any] | None = None,
    preset: str | None = None,
    render_mode: str | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    **unexpected: Any,
) -> VehicularEnv:
    """Build the parallel environment; see :class:`VehicularEnv` for the arguments."""
    return VehicularEnv(
        config=config, preset=preset, render_mode=render_mode, num_threads=num_threads, **unexpected
    )


def env(
    config: VehicularURLLCConfig | Mapping[str, Any] | None = None,
    preset: str | None = None,
    render_mode: str | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    **unexpected: Any,
) -> AECEnv:
    """The same environment turned into an AEC one (agents act in turn); prefer
    :func:`parallel_env`, the native form."""
    return parallel_to_aec(
        parallel_env(
            config=config,
            preset=preset,
            render_mode=render_mode,
            num_threads=num_threads,
            **unexpected,
        )
    )
