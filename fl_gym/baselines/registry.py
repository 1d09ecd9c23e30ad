"""The baselines by name: :data:`BASELINES`, :func:`make_baseline` and :func:`baselines_for`."""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym

from fl_gym.baselines.adaptive_frequency import AdaptiveFrequency
from fl_gym.baselines.base import BaselinePolicy, applies_to_uplink
from fl_gym.baselines.fixed import FixedCompression, FixedLocalSteps
from fl_gym.baselines.over_the_air import OTAAllDevices, OTAGreedyChannel, OTASparseSelection
from fl_gym.baselines.power import ChannelInversionPower, MaxPower, MinPower
from fl_gym.baselines.selection import (
    AgeBasedSelection,
    BestChannelSelection,
    EnergyAwareSelection,
    FullParticipation,
    ProportionalFairSelection,
    RandomSelection,
    RoundRobinSelection,
)
from fl_gym.envs.wireless_fl.env import WirelessFLEnv

__all__ = ["BASELINES", "baseline_options", "baselines_for", "make_baseline"]

BASELINES: dict[str, type[BaselinePolicy]] = {
    cls.name: cls
    for cls in (
        RandomSelection,
        RoundRobinSelection,
        FullParticipation,
        BestChannelSelection,
        ProportionalFairSelection,
        AgeBasedSelection,
        EnergyAwareSelection,
        MaxPower,
        MinPower,
        ChannelInversionPower,
        FixedCompression,
        FixedLocalSteps,
        AdaptiveFrequency,
        OTAAllDevices,
        OTAGreedyChannel,
        OTASparseSelection,
    )
}
"""Every baseline policy class by registry name: selection, then power, compression, frequency."""


def baseline_options(name: str) -> dict[str, Any]:
    """The keyword options of a baseline and their defaults.

    Args:
        name: A name in :data:`BASELINES`.

    Returns:
        ``{option: default}``, e.g. ``{"seed": 0}`` for ``"random"``.
    """
    cls = _lookup(name)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, env
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def make_baseline(name: str, env: gym.Env, **kwargs: Any) -> BaselinePolicy:
    """Build the baseline ``name`` for ``env``.

    Args:
        name: A name in :data:`BASELINES`.
        env: A wireless FL environment (wrapped or not) that controls at least one of the
            baseline's knobs.
        **kwargs: The baseline's options (see :func:`baseline_options`).

    Returns:
        The policy.
    """
    options = baseline_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(
            f"baseline {name!r} has no option(s) {unknown}; allowed: {sorted(options) or 'none'}"
        )
    return BASELINES[name](env, **kwargs)


def baselines_for(env: gym.Env) -> list[str]:
    """The names of the baselines that decide at least one knob ``env`` controls.

    Args:
        env: A wireless FL environment, wrapped or not.

    Returns:
        Names in the order of :data:`BASELINES`.
    """
    unwrapped = getattr(env, "unwrapped", None)
    if not isinstance(unwrapped, WirelessFLEnv):
        raise TypeError(f"env must be a wireless FL environment (WirelessFLEnv), got {env!r}")
    controls = set(unwrapped.controls)
    return [
        name
        for name, cls in BASELINES.items()
        if cls.knobs & controls and applies_to_uplink(cls, unwrapped)
    ]


def _lookup(name: str) -> type[BaselinePolicy]:
    if not isinstance(name, str) or name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; allowed: {list(BASELINES)}")
    return BASELINES[name]
