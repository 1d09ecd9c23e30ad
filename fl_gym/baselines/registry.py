"""Every heuristic policy of every family by name: :data:`POLICIES`, :func:`make_policy`,
:func:`baselines_for`.

One naming style (kebab-case) for all three families: the wireless FL baselines
(:data:`BASELINES`: ``round-robin``, ``max-power``, ...), the vehicular policies
(``vehicular-lyapunov``, ``vehicular-max-power``, ...) and the UAV controllers
(``straight-line``, ``hjb-full-info``, ``mfgfl-hf``, ...). Former names (``mfgfl_hf``,
``straight_line``) are aliases of the same entries and warn that they are deprecated. Every
policy built here has Stable-Baselines3's ``predict`` (:class:`fl_gym.envs.rollout.Policy`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from fl_gym.baselines.adaptive_frequency import AdaptiveFrequency
from fl_gym.baselines.base import BaselinePolicy, applies_to_uplink
from fl_gym.baselines.byzantine import BYZANTINE_BASELINES
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
from fl_gym.baselines.uav import (
    CONTROLLER_ALIASES,
    CONTROLLERS,
    controller_options,
    make_controller,
)
from fl_gym.baselines.vehicular import VEHICULAR_BASELINES
from fl_gym.envs.rollout import Policy, env_family

__all__ = [
    "BASELINES",
    "POLICIES",
    "POLICY_ALIASES",
    "PolicyEntry",
    "baseline_options",
    "baselines_for",
    "canonical_policy_name",
    "make_baseline",
    "make_policy",
]

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
        *BYZANTINE_BASELINES,
    )
}
"""Every baseline policy class by registry name: selection, then power, compression, frequency,
over-the-air selection, then the Byzantine defences."""


@dataclass(frozen=True)
class PolicyEntry:
    """One heuristic policy of the registry.

    Attributes:
        name: Registry name (kebab-case).
        family: The environment family it plays (``"wireless-fl"``, ``"vehicular"``, ``"uav"``).
        build: ``build(env, **options)`` makes the policy for an environment of that family.
        options: The keyword options and their defaults.
    """

    name: str
    family: str
    build: Callable[..., Policy]
    options: dict[str, Any]


def _keyword_options(function: Callable[..., Any], skip: int) -> dict[str, Any]:
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _uav_builder(name: str) -> Callable[..., Policy]:
    def build(env: Any, **options: Any) -> Policy:
        return make_controller(name, env.config, **options)

    return build


POLICIES: dict[str, PolicyEntry] = {
    **{
        name: PolicyEntry(name, "wireless-fl", cls, _keyword_options(cls.__init__, 2))
        for name, cls in BASELINES.items()
    },
    **{
        name: PolicyEntry(name, "vehicular", cls, _keyword_options(cls.__init__, 2))
        for name, cls in VEHICULAR_BASELINES.items()
    },
    **{
        name: PolicyEntry(name, "uav", _uav_builder(name), controller_options(name))
        for name in CONTROLLERS
    },
}
"""Every heuristic policy of every family by name: wireless FL, then vehicular, then UAV."""

POLICY_ALIASES: dict[str, str] = dict(CONTROLLER_ALIASES)
"""Former names -> registry names (accepted with a ``DeprecationWarning``)."""


def canonical_policy_name(name: str) -> str:
    """The registry name of ``name`` (a name in :data:`POLICIES` or a former alias).

    Raises:
        ValueError: If the name is neither.
    """
    if isinstance(name, str) and name in POLICY_ALIASES:
        warnings.warn(
            f"policy name {name!r} is deprecated; use {POLICY_ALIASES[name]!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        return POLICY_ALIASES[name]
    if not isinstance(name, str) or name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; allowed: {list(POLICIES)}")
    return name


def make_policy(name: str, env: Any, **options: Any) -> Policy:
    """Build the heuristic policy ``name`` for ``env``, of any family.

    Args:
        name: A name in :data:`POLICIES` (or a former alias).
        env: The environment the policy will play (Gymnasium, wrapped or not, or PettingZoo);
            its family must be the policy's.
        **options: The policy's options (``PolicyEntry.options``).

    Returns:
        An object with SB3's ``predict``.

    Raises:
        ValueError: If the name is unknown or the policy is of another family.
        TypeError: If an option is unknown.
    """
    entry = POLICIES[canonical_policy_name(name)]
    family = env_family(env)
    if entry.family != family:
        raise ValueError(
            f"policy {entry.name!r} plays the {entry.family} envs, not {family} ones; allowed "
            f"here: {baselines_for(env)}"
        )
    if entry.family == "wireless-fl":
        return make_baseline(entry.name, env, **options)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise TypeError(
            f"policy {entry.name!r} has no option(s) {unknown}; allowed: "
            f"{sorted(entry.options) or 'none'}"
        )
    return entry.build(env, **options)


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


def baselines_for(env: Any) -> list[str]:
    """The names of the heuristic policies that play ``env`` (any family).

    For a wireless FL environment, the baselines that decide at least one knob it controls and
    fit its uplink; for the vehicular and UAV environments, every policy of the family.

    Args:
        env: An fl_gym environment, Gymnasium (wrapped or not) or PettingZoo.

    Returns:
        Names in the order of :data:`POLICIES`.
    """
    family = env_family(env)
    if family != "wireless-fl":
        return [name for name, entry in POLICIES.items() if entry.family == family]
    unwrapped = env.unwrapped
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
